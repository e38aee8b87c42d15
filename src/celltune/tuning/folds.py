"""Choosing on cross-validation where the data is small (``celltune tune --folds``).

A validation split of a few hundred images, or of a few groups, scores a recipe with an error of several points:
more than the differences a search is after. With ``--folds K`` (and by default where validation holds fewer than
``SMALL_VALIDATION`` images) every trial trains K runs (``trial-NNNN/fold-k``), one per stratified fold of the
training and validation images together, groups whole; each run is validated on its held-out fold, and the trial's
score is the mean of its folds' best validation scores. It is reported after each fold, so successive halving
compares trials after the same number of folds. The test split stays out of every fold. No fold run trained on the
whole training split, so the winner's recipe is trained once more on the ordinary split (as ``celltune train``
makes it, ``winner-trial-NNNN``), for as long as one trial (``retraining_seconds``), and that run is scored on test.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from celltune.errors import ConfigError, DataError
from celltune.reports.run_files import write_json

if TYPE_CHECKING:  # the CLI reads this module's numbers for its help: its imports stay light
    from optuna.trial import FrozenTrial, Trial

    from celltune.config import TrainConfig
    from celltune.data.samples import LabelledSplits

log = logging.getLogger(__name__)

FOLDS = "folds.json"
SMALL_VALIDATION = 500  # fewer validation images than this: --folds auto chooses on AUTO_FOLDS folds
AUTO_FOLDS = 5


def resolve_folds(folds: int | str, found: LabelledSplits) -> int:
    """``--folds``: a number (1: the validation split), or ``auto``."""
    if folds == "auto":
        val = len(found.splits.get("val", []))
        groups = {s.group for split in ("train", "val") for s in found.splits.get(split, [])}
        k = AUTO_FOLDS if None in groups else min(AUTO_FOLDS, len(groups))  # groups whole: at most one fold each
        if val >= SMALL_VALIDATION or k < 2:
            return 1
        log.info("--folds auto: %d validation images (fewer than %d), so trials are chosen on %d-fold "
                 "cross-validation of the training and validation images (--folds 1 chooses on validation alone)",
                 val, SMALL_VALIDATION, k)
        return k
    try:
        k = int(folds)
    except ValueError:
        raise ConfigError(f"--folds {folds}: give a number (1: choose on the validation split) or auto") from None
    if k < 1:
        raise ConfigError(f"--folds {folds}: give 1 (choose on the validation split) or more folds")
    return k


def plan_search_folds(found: LabelledSplits, *, folds: int, seed: int) -> list[list[str]]:
    """The held-out image paths of each fold: the training and validation images together, stratified, groups
    whole; every one is held out once. Test images are in none."""
    from celltune.data.splits import sample_folds

    pool = [*found.splits.get("train", []), *found.splits.get("val", [])]
    return [[str(pool[i].path) for i in held]
            for held in sample_folds(pool, found.class_names, folds=folds, seed=seed)]


def write_plan(tune_dir: Path, plan: list[list[str]]) -> None:
    write_json(tune_dir / FOLDS, {"folds": len(plan), "held_out": plan})


def read_plan(tune_dir: Path) -> list[list[str]]:
    return json.loads((tune_dir / FOLDS).read_text())["held_out"]


def fold_splits(found: LabelledSplits, held_out: list[str], k: int) -> LabelledSplits:
    """Fold ``k`` as splits: train on the other folds, validate on its own."""
    pool = [*found.splits.get("train", []), *found.splits.get("val", [])]
    held = set(held_out)
    missing = held - {str(s.path) for s in pool}
    if missing:
        raise DataError(f"{sorted(missing)[0]}: in this search's folds ({FOLDS}) but no longer among the training "
                        f"and validation images ({len(missing)} images); start a new search")
    return replace(found, splits={"train": [s for s in pool if str(s.path) not in held],
                                  "val": [s for s in pool if str(s.path) in held]},
                   layout=f"{found.layout}, search fold {k}", celltune_split=True)


def cross_validated(trial: Trial, config: TrainConfig, *, run_dir: Path, found: LabelledSplits, checks: Any,
                    plan: list[list[str]], seconds: float | None) -> float:
    """Train ``config`` on every fold of ``plan`` (``run_dir/fold-k``, ``seconds`` shared equally); the mean of the
    folds' best validation scores, reported after each fold. Raises ``TrialPruned`` when the pruner finds the trial
    behind after a fold that is not the last."""
    import optuna

    from celltune.training.crossval import sized_like_first_fold
    from celltune.training.fit import prepare, run_prepared

    scores: list[float] = []
    epochs: list[int] = []
    for k, held in enumerate(plan, start=1):
        fold = config.updated(out_dir=str(run_dir), name=f"fold-{k}",
                              time_budget=f"{seconds / len(plan):.1f}s" if seconds else None)
        fold = sized_like_first_fold(fold, run_dir, len(plan), k=k)  # where the space leaves image_size out
        run = prepare(fold, found=fold_splits(found, held, k), checks=checks)
        run_prepared(run)
        scores.append(float(run.recorder.best_score))
        epochs.append(len(run.recorder.history))
        trial.set_user_attr("fold_scores", scores)
        trial.set_user_attr("epochs", round(float(np.mean(epochs))))
        trial.report(float(np.mean(scores)), step=k)
        if k < len(plan) and trial.should_prune():
            trial.set_user_attr("pruned_after", k)
            log.info("trial %d pruned after fold %d of %d: behind the trials that reached it", trial.number, k,
                     len(plan))
            raise optuna.TrialPruned()
    return float(np.mean(scores))


def mean_headline(trial_dir: Path) -> dict[str, float]:
    """Each headline number averaged over the trial's folds (their best checkpoints on their held-out folds)."""
    from celltune.metrics.results import RunMetrics

    headlines = [RunMetrics.from_dict(json.loads(p.read_text())).result.headline()
                 for p in sorted(trial_dir.glob("fold-*/metrics.json"))]
    return {name: float(np.mean([h[name] for h in headlines])) for name in headlines[0]}


def retraining_seconds(trial_seconds: float | None, *, folds: int, budget: float | None, finish: float,
                       min_trial: float) -> float | None:
    """How long the winner's retraining is kept free at the end of a search on ``folds`` folds: one trial's time (its
    folds' together), as long as a winner chosen on validation trained, since that run is the model the user keeps.
    Where ``budget`` (this process's seconds) would then hold fewer than two of the shortest trials (``min_trial`` a
    fold) besides ``finish`` (the last scoring and reports), less, never less than one fold's time."""
    if trial_seconds is None:
        return None
    if budget is None:
        return trial_seconds
    # two shortest trials, not one: the first keeps its room after the data is read, and a search has a choice
    room = budget - finish - 2 * min_trial * folds
    return max(trial_seconds / folds, min(trial_seconds, room))


def retrain_winner(tune_dir: Path, winner: FrozenTrial, *, found: LabelledSplits, checks: Any,
                   seconds: float | None, heatmaps: bool = True) -> Path:
    """The winner's recipe trained on the ordinary training split, chosen on its validation split, the test split
    left out, its report with ``heatmaps`` as the search was asked (its trials had none); the run directory (kept: a
    search resumed after it does not train it again)."""
    from celltune.config.recipes import load_config
    from celltune.training.fit import prepare, run_prepared

    run_dir = tune_dir / f"winner-trial-{winner.number:04d}"
    if (run_dir / "metrics.json").is_file():
        return run_dir
    if run_dir.exists():
        log.warning("%s: a retraining that did not finish; training it again", run_dir)
        shutil.rmtree(run_dir)
    recipe = load_config(Path(winner.user_attrs["run_dir"]) / "fold-1" / "config.yaml")
    config = recipe.updated(out_dir=str(tune_dir), name=run_dir.name,
                            time_budget=f"{seconds:.1f}s" if seconds else None, heatmaps=heatmaps)
    log.info("the winner, trial %d, chosen on %d folds: trained once more on the training split", winner.number,
             len(winner.user_attrs["fold_scores"]))
    run_prepared(prepare(config, found=found, checks=checks))
    return run_dir
