"""``celltune tune``: search for the best recipe for this dataset within a time budget, with Optuna.

Each trial is an ordinary run directory (``TUNE_DIR/trials/trial-NNNN``) trained on the training split and chosen on
validation; the test split is never seen by a trial. After every epoch a trial reports its best validation score so
far and successive halving (Optuna's ASHA pruner) stops it when it is behind the trials that reached the same epoch.
Where the data is small, trials are chosen on cross-validation instead (``celltune.tuning.folds``, ``--folds``).
The study lives in SQLite in the tune directory (or any RDB given with ``--storage``), so a killed search resumes
(``--resume TUNE_DIR``) losing at most the trial in flight, and several processes or machines can work on one study.
At the end the winner is scored once on test; ``winner.json``, ``best.yaml`` (``celltune train --recipe`` reruns it),
``tune.json`` and ``tune.html`` (``celltune.tuning.report``) are written.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
import optuna
import yaml
from optuna.trial import FrozenTrial, Trial, TrialState

from celltune.config import TrainConfig, config_from_dict
from celltune.config.durations import parse_duration
from celltune.data.samples import LabelledSplits
from celltune.errors import ConfigError, ExistsError, MissingError, TooShortError
from celltune.training.callbacks import RunRecorder
from celltune.training.defaults import image_size_for
from celltune.tuning import folds as cv
from celltune.tuning.space import Space, compatible, read_space, resolve_sizes, space_from_dict
from celltune.tuning.study import fail_orphans, open_study, spent_seconds

log = logging.getLogger(__name__)

SETTINGS = "tune.yaml"
TRIALS = "trials"
MIN_TRIAL_SECONDS = 60.0  # a trial needs at least a probe, an epoch and its scoring
FINISH_SECONDS = 60.0  # the winner's test scoring, best.yaml and tune.html, after the last trial
MIN_BUDGET_SECONDS = 3 * 60.0  # a trial's minute and the finish's, with a minute for reading and checking the data
FAILURES_IN_A_ROW = 3  # then the search stops: the recipe, the space or the machine is wrong, not one trial
# Trials whose budget holds no epoch of their recipe are pruned (the space's smaller sizes may fit); this many in a
# row and the search stops: its trials are too short for this data.
TOO_SHORT_IN_A_ROW = 3


@dataclass(frozen=True)
class Settings:
    """What a tune directory keeps in ``tune.yaml``: the base recipe, the resolved space and the limits."""

    config: TrainConfig
    space: Space
    budget_seconds: float | None
    trial_seconds: float | None
    max_trials: int | None
    storage: str
    study: str  # its name in the storage: one per tune directory, so searches sharing a database stay apart
    folds: int = 1  # 1: trials chosen on the validation split; more: on that many folds (celltune.tuning.folds)

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "space": self.space.to_dict(), "budget_seconds": self.budget_seconds,
                "trial_seconds": self.trial_seconds, "max_trials": self.max_trials, "storage": self.storage,
                "study": self.study, "folds": self.folds}


def read_settings(tune_dir: Path) -> Settings:
    path = tune_dir / SETTINGS
    if not path.is_file():
        raise MissingError(f"{path}: nothing to resume; not a celltune tune directory")
    data = yaml.safe_load(path.read_text())
    return Settings(config_from_dict(data["config"], source=str(path)), space_from_dict(data["space"], str(path)),
                    data["budget_seconds"], data["trial_seconds"], data["max_trials"], data["storage"], data["study"],
                    data.get("folds", 1))


class TrialPruning(L.Callback):
    """After each validation pass: report the trial's best validation score so far (``RunRecorder.best_score``:
    ACA, or macro-F1 for multi-label) at step = epochs done; when the pruner says it is behind, stop after this
    epoch (the run still finishes as a run: its best checkpoint scored on validation, its report written). After
    the last planned epoch there is nothing left to save: it is not stopped."""

    def __init__(self, trial: Trial, recorder: RunRecorder) -> None:
        self.trial, self.recorder = trial, recorder
        self.pruned_after: int | None = None

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.recorder.history:
            return
        epoch = len(self.recorder.history)
        self.trial.report(self.recorder.best_score, step=epoch)
        behind = self.trial.should_prune()  # asked at the last epoch too: the pruner records the value at its rung
        if behind and self.pruned_after is None and epoch < (trainer.fit_loop.max_epochs or 0):
            self.pruned_after = epoch
            trainer.should_stop = True


def new_tune(config: TrainConfig, *, space: str | Path | None = None, trial_budget: str | None = None,
             max_trials: int | None = None, storage: str | None = None, folds: int | str = "auto") -> Path:
    """Create a tune directory for ``config`` (its ``time_budget`` is the whole search's): the space resolved
    against the data, ``tune.yaml``, the folds where trials are cross-validated (``--folds``) and the study with the
    space's first recipes queued. Returns the directory."""
    if not config.data.root:
        raise ConfigError("give --data DIR (or data: in the recipe)")
    given, budget = config.optim.time_budget, _seconds(config.optim.time_budget, "--time-budget")
    if budget is None and max_trials is None:
        raise ConfigError("give --time-budget (how long to search, e.g. 2h) or --trials N, or both")
    if budget is not None and budget < MIN_BUDGET_SECONDS:
        raise ConfigError(f"--time-budget {config.optim.time_budget} leaves no time for a trial: a search needs at "
                          f"least {MIN_BUDGET_SECONDS / 60:.0f}m (a trial of {MIN_TRIAL_SECONDS:.0f} s or more, then "
                          f"{FINISH_SECONDS:.0f} s to score the winner and write the report); give more, or train "
                          "once with `celltune train --time-budget`")
    trial_seconds = _seconds(trial_budget, "--trial-budget")
    if trial_seconds is None and budget is not None:
        trial_seconds = budget / 4  # a few complete trials; pruned ones cost a fraction of this
    name = config.output.name or f"tune-{datetime.now():%Y%m%d-%H%M%S}"
    tune_dir = (Path(config.output.out_dir) / name).resolve()
    if tune_dir.exists():
        raise ExistsError(f"{tune_dir} exists; choose another --name, or --resume it")
    config = config.updated(data=str(Path(config.data.root).resolve()), time_budget=None)
    found, checks = _data(config)
    if not found.splits.get("val"):
        raise ConfigError(f"{config.data.root}: no validation images (no group could be spared for them), and a "
                          "search chooses on validation; give finer groups (slides or fields rather than patients), "
                          "or train once with `celltune train`, which runs without validation")
    native = 224  # the default space's models' native size; only caps sizes of large images
    size = image_size_for(((f.width, f.height) for f in checks.facts.values() if f.error is None), native)
    resolved = resolve_sizes(read_space(space), config.data.image_size or size.value)
    resolved = compatible(resolved, config, multilabel=found.multilabel)
    first = resolved.first_trials(config)  # fails here on a start_with recipe outside the space
    k = cv.resolve_folds(folds, found)
    if budget is not None and budget < MIN_BUDGET_SECONDS + MIN_TRIAL_SECONDS * (k - 1):
        raise ConfigError(f"--time-budget {given} leaves no time for a trial on {k} folds (a run "
                          f"of {MIN_TRIAL_SECONDS:.0f} s or more each): give at least "
                          f"{(MIN_BUDGET_SECONDS + MIN_TRIAL_SECONDS * (k - 1)) / 60:.0f}m, or --folds 1 to choose "
                          "on the validation split")
    plan = cv.plan_search_folds(found, folds=k, seed=config.data.seed) if k > 1 else None  # too few groups: here
    tune_dir.mkdir(parents=True)
    if plan is not None:
        cv.write_plan(tune_dir, plan)
    url = storage or f"sqlite:///{(tune_dir / 'study.db').resolve()}"
    settings = Settings(config, resolved, budget, trial_seconds, max_trials, url, f"{name}-{uuid.uuid4().hex[:8]}",
                        k)
    (tune_dir / SETTINGS).write_text(yaml.safe_dump(settings.to_dict(), sort_keys=False))
    study = open_study(url, settings.study, seed=config.data.seed, startup=len(first))
    for values in first:
        study.enqueue_trial(values)
    log.info("tune directory %s: %d recipes queued first, then %s", tune_dir, len(first), resolved.source)
    return tune_dir


def run_tune(tune_dir: str | Path, *, budget: str | None = None) -> Path:
    """Work on the study of ``tune_dir`` until its time budget (or ``budget``, for this process) is spent or it has
    its number of trials, then score the winner on test and write the reports. Any number of processes may run
    this on one directory at once."""
    began = time.monotonic()
    tune_dir = Path(tune_dir).resolve()
    settings = read_settings(tune_dir)
    found, checks = _data(settings.config)
    trial_found = replace(found, splits={k: v for k, v in found.splits.items() if k != "test"})
    study = open_study(settings.storage, settings.study, seed=settings.config.data.seed,
                       startup=len(settings.space.start_with))
    fail_orphans(study)
    # The search's budget counts its trials' time: a resumed search gets what is left; --time-budget given with
    # --resume is this process's own.
    seconds = _seconds(budget, "--time-budget") if budget else (
        None if settings.budget_seconds is None else settings.budget_seconds - spent_seconds(study))
    plan = cv.read_plan(tune_dir) if settings.folds > 1 else None
    # Cross-validated, the winner trains once more at the end, for as long as a trial ran: kept free from the start
    retrain = None if plan is None else cv.retraining_seconds(settings.trial_seconds, folds=settings.folds,
                                                              budget=seconds, finish=FINISH_SECONDS,
                                                              min_trial=MIN_TRIAL_SECONDS)
    failures = too_short = 0
    needs = 0.0  # the longest a trial turned out to need for one epoch of this data: later trials get that much
    while True:
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                             TrialState.FAIL, TrialState.RUNNING)))
        if settings.max_trials is not None and done >= settings.max_trials:
            break
        left = None if seconds is None else began + seconds - FINISH_SECONDS - (retrain or 0) - time.monotonic()
        if left is not None and left < max(MIN_TRIAL_SECONDS * settings.folds, needs):
            break  # what is left holds no trial (a minute a run, or what one turned out to need): finish
        trial_seconds = settings.trial_seconds and max(settings.trial_seconds, needs)
        trial_seconds = trial_seconds if left is None else min(trial_seconds or left, left)
        objective = _objective(settings, tune_dir, trial_found, checks, trial_seconds, plan)
        ended: list[FrozenTrial] = []
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[_recorder(ended)])
        last = ended[-1]
        failures = failures + 1 if last.state == TrialState.FAIL else 0
        too_short = too_short + 1 if "too_short" in last.user_attrs else 0
        if (last.user_attrs.get("needs_seconds") or 0) > needs:
            needs = last.user_attrs["needs_seconds"]
            log.info("a trial needs at least %.0f s for one epoch of this data: later trials get that much", needs)
        if too_short >= TOO_SHORT_IN_A_ROW:
            raise ConfigError(f"{tune_dir}: {too_short} trials in a row had no time for one epoch in their "
                              f"{trial_seconds:.0f} s, the last: {last.user_attrs['too_short']}; give a longer "
                              "--trial-budget (a trial gets a quarter of --time-budget unless given) or a space "
                              f"of smaller images, then `celltune tune --resume {tune_dir}`")
        if failures >= FAILURES_IN_A_ROW:
            raise ConfigError(f"{tune_dir}: {failures} trials in a row failed, the last with: "
                              f"{last.user_attrs.get('error', 'an unknown error')}; see the log above, fix the "
                              f"recipe or the search space, then `celltune tune --resume {tune_dir}`")
    from celltune.tuning.report import finish_tune

    if retrain is not None and seconds is not None and settings.trial_seconds:
        # what the last trials left unspent goes to the retraining too, up to a trial's time
        retrain = min(settings.trial_seconds, max(retrain, began + seconds - FINISH_SECONDS - time.monotonic()))
    retrained = None if plan is None else (
        lambda winner: cv.retrain_winner(tune_dir, winner, found=trial_found, checks=checks, seconds=retrain,
                                         heatmaps=settings.config.eval.heatmaps))
    finish_tune(tune_dir, study, settings.config, has_test=bool(found.splits.get("test")), retrain=retrained,
                folds=settings.folds)
    return tune_dir


def _recorder(ended: list[FrozenTrial]) -> Any:
    """An Optuna callback that keeps the trials this process ended."""
    return lambda _, trial: ended.append(trial)


def _objective(settings: Settings, tune_dir: Path, found: LabelledSplits, checks: Any,
               trial_seconds: float | None, plan: list[list[str]] | None) -> Any:
    def objective(trial: Trial) -> float:
        from celltune.training.fit import prepare, run_prepared

        run_dir = tune_dir / TRIALS / f"trial-{trial.number:04d}"
        for key, value in {"host": socket.gethostname(), "pid": os.getpid(), "run_dir": str(run_dir)}.items():
            trial.set_user_attr(key, value)
        try:
            options = settings.space.suggest(trial)
            log.info("trial %d: %s", trial.number, options)
            # A trial's report leaves out Grad-CAM: seconds a trial, for pictures of a recipe that is mostly dropped
            config = settings.config.updated(**options, out_dir=str(run_dir.parent), name=run_dir.name,
                                             time_budget=f"{trial_seconds:.1f}s" if trial_seconds else None,
                                             heatmaps=False)
            try:
                if plan is not None:
                    return cv.cross_validated(trial, config, run_dir=run_dir, found=found, checks=checks, plan=plan,
                                              seconds=trial_seconds)
                run = prepare(config, found=found, checks=checks)
            except TooShortError as err:  # the trial's budget, not its recipe: no result, not a crash
                trial.set_user_attr("too_short", str(err))
                trial.set_user_attr("needs_seconds", err.needed_seconds and err.needed_seconds * settings.folds)
                log.info("trial %d pruned before training: %s", trial.number, err)
                raise optuna.TrialPruned() from None
            pruning = TrialPruning(trial, run.recorder)
            run.trainer.callbacks.append(pruning)  # type: ignore[attr-defined]  # set by Lightning at init
            run_prepared(run)
        except optuna.TrialPruned:
            raise
        except Exception as err:
            trial.set_user_attr("error", f"{type(err).__name__}: {err}")
            raise
        trial.set_user_attr("epochs", len(run.recorder.history))
        if pruning.pruned_after is not None:
            trial.set_user_attr("pruned_after", pruning.pruned_after)
            log.info("trial %d pruned after epoch %d: behind the trials that reached it", trial.number,
                     pruning.pruned_after)
            raise optuna.TrialPruned()
        return run.recorder.best_score

    return objective


def _seconds(text: str | None, flag: str) -> float | None:
    return parse_duration(text, flag=flag).total_seconds() if text else None


def _data(config: TrainConfig) -> tuple[LabelledSplits, Any]:
    """The data's splits (as ``celltune train`` makes them) and its quick checks, once per process."""
    from celltune.training.preflight import check_data, find_data

    found, checks, _ = check_data(find_data(config.data), config.data)
    return found, checks

