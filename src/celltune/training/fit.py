"""``fit``: from a config to a finished run directory, as an outline of the rooms that do the work; ``prepare`` is
its first half, everything built before training starts."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
from torch import nn

from celltune.audit.findings import Audit
from celltune.audit.leaks import twins_in_training
from celltune.config import DEFAULT_EPOCHS, TrainConfig
from celltune.config.durations import parse_duration
from celltune.config.recipes import save_config
from celltune.data.discovery import split_record, summarize
from celltune.data.images import dataset_mean_std, load_input, set_max_image_pixels
from celltune.data.samples import LabelledSplits
from celltune.errors import MissingError
from celltune.evaluation.evaluate import finish_run
from celltune.models.checkpoint import BEST, ModelCard
from celltune.models.factory import create_model
from celltune.models.weights import Preprocessing
from celltune.reports.run_files import read_history, write_json
from celltune.training import tracking
from celltune.training.budget import (
    MAX_EPOCHS,
    PLAN,
    BudgetKeeper,
    Plan,
    planned_epochs,
    workload,
)
from celltune.training.callbacks import LAST, RunRecorder, training_callbacks
from celltune.training.datamodule import CellDataModule
from celltune.training.defaults import batch_at_size, with_data_defaults
from celltune.training.module import CellClassifier
from celltune.training.preflight import check, check_data, check_labels, check_validation, find_data
from celltune.training.probe import probe_and_plan, replan
from celltune.training.runtime import (
    global_rank,
    make_trainer,
    open_run_dir,
    resolve_hardware,
    shared_run_dir,
)

log = logging.getLogger(__name__)


def model_card(config: TrainConfig, found: LabelledSplits, prep: Preprocessing, *, in_chans: int) -> ModelCard:
    """How the model sees images: the weights' statistics, or with ``intensity: dataset`` the training set's own
    per-channel mean/std (from a seeded sample of up to 256 images)."""
    mean, std = list(prep.mean), list(prep.std)
    if config.data.intensity == "dataset":
        train = found.splits["train"]
        picked = np.random.default_rng(config.data.seed).permutation(len(train))[:256]
        mean, std = dataset_mean_std([load_input(train[i].path, channels=config.data.channels) for i in picked])
    return ModelCard(model_name=config.model.name, class_names=found.class_names, mean=mean, std=std,
                     image_size=config.data.image_size or prep.input_size, interpolation=prep.interpolation,
                     in_chans=in_chans, channels=config.data.channels, intensity=config.data.intensity,
                     multilabel=found.multilabel)


def budget_seconds(config: TrainConfig) -> float:
    assert config.optim.time_budget is not None
    return parse_duration(config.optim.time_budget, flag="--time-budget").total_seconds()


@dataclass
class PreparedRun:
    """Everything ``fit`` builds before it trains: what it then runs (and what tests inspect)."""

    config: TrainConfig
    run_dir: Path
    found: LabelledSplits
    card: ModelCard
    model: nn.Module
    module: CellClassifier
    datamodule: CellDataModule
    trainer: L.Trainer
    recorder: RunRecorder
    keeper: BudgetKeeper | None = None
    started: float = 0.0
    twinned: dict[str, list[bool]] | None = None  # per scored split: has an exact copy in training (audit.leaks)


def prepare(config: TrainConfig, *, resume: str | Path | None = None, found: LabelledSplits | None = None,
            checks: Audit | None = None, started: float | None = None) -> PreparedRun:
    """Check the config, find the data, build the model, open the run directory (config.yaml, dataset.json) and
    assemble module, data module and trainer. ``found``: splits made elsewhere (cross-validation folds) instead of
    the data folder's; ``checks``: their data checks, already run; ``started``: ``time.monotonic()`` when the run
    began, from which a time budget counts (default: now)."""
    started = time.monotonic() if started is None else started
    config = check(config, resume)
    given_size, given_epochs, given_batch = config.data.image_size, config.optim.epochs, config.optim.batch_size
    data = config.data
    set_max_image_pixels(data.max_image_pixels)
    L.seed_everything(data.seed, workers=True, verbose=False)
    if found is None:
        found = find_data(data)
    check_labels(config, multilabel=found.multilabel)
    validate = check_validation(config, found)
    skipped: list[Path] = []
    if checks is None:
        found, checks, skipped = check_data(found, data)
    summary = summarize(found, checks.facts)
    in_chans = len(data.channels) if data.channels else 3
    model, prep = create_model(config.model.name, num_classes=len(found.class_names), in_chans=in_chans,
                               pretrained=config.model.pretrained, freeze=config.model.freeze_backbone,
                               freeze_stride=config.model.freeze_stride,
                               weights=config.model.weights)
    hardware = resolve_hardware(config.hardware)
    config = with_data_defaults(config, found, checks, native_size=prep.input_size,
                                accelerator=hardware.accelerator)
    batch_size, image_size = int(config.optim.batch_size or 0), int(config.data.image_size or 0)  # both chosen now
    plan: Plan | None = None
    work = workload(config, found)
    if config.optim.time_budget and resume is None:
        batch_at = None if given_batch else partial(batch_at_size, accelerator=hardware.accelerator,
                                                    train_images=len(found.splits["train"]))
        plan = probe_and_plan(model, budget=budget_seconds(config), started=started, work=work,
                              batch_size=batch_size, image_size=image_size,
                              size_fixed=given_size is not None, native_size=prep.input_size, in_chans=in_chans,
                              accelerator=hardware.accelerator, precision=hardware.precision,
                              channels_last=hardware.channels_last, max_epochs=given_epochs, batch_at=batch_at)
        batch_size = plan.batch_size
        config = config.updated(image_size=plan.image_size, epochs=plan.epochs, batch_size=batch_size)
        work = workload(config, found)  # the batch may have changed, and with --max-steps-per-epoch the images too
    elif resume is not None and (Path(resume) / PLAN).is_file():  # where its time budget had moved the end
        config = config.updated(epochs=planned_epochs(Path(resume) / PLAN))
    elif config.optim.epochs is None:
        config = config.updated(epochs=DEFAULT_EPOCHS)
    card = model_card(config, found, prep, in_chans=in_chans)
    config = config.updated(image_size=card.image_size)
    data = config.data

    run_dir = open_run_dir(config.output, model_name=config.model.name, resume=resume)
    with discarded_on_failure(run_dir, fresh=resume is None):
        datamodule = CellDataModule(found, data=data, augment=config.augment, card=card,
                                    batch_size=batch_size, num_workers=config.hardware.num_workers,
                                    accelerator=hardware.accelerator, channels_last=hardware.channels_last)
        if plan is not None:
            datamodule.prepare_data()  # the image cache, built now so that the plan counts its time
            plan = replan(plan, started=started, speed=plan.speed(), work=work, max_epochs=given_epochs)
            config = config.updated(epochs=plan.epochs)
            log.info("%s", plan.summary())
        if global_rank() == 0:
            save_config(config, run_dir / "config.yaml")
            write_json(run_dir / "dataset.json", summary)
            write_json(run_dir / "data_checks.json", checks.to_dict())
            if plan is not None:
                write_json(run_dir / PLAN, plan.to_dict())
            if skipped:
                (run_dir / "skipped_files.txt").write_text("".join(f"{p}\n" for p in skipped))
            log.info("run directory %s", run_dir)

        module = CellClassifier(model, card=card, optim=config.optim, augment=config.augment, seed=data.seed,
                                freeze_backbone=config.model.freeze_backbone, channels_last=hardware.channels_last,
                                loss_weights=datamodule.class_weights() if data.balance == "loss" else None,
                                compile_model=config.hardware.compile, ema=config.optim.ema)
        callbacks = training_callbacks(run_dir, card=card, optim=config.optim, extra=split_record(data),
                                       checkpoint_every=config.output.checkpoint_every)
        keeper = None
        if plan is not None:
            keeper = BudgetKeeper(plan, deadline=started + plan.budget_seconds,
                                  max_epochs=min(given_epochs or MAX_EPOCHS, MAX_EPOCHS), path=run_dir / PLAN)
            callbacks.append(keeper)
        loggers = tracking.make_loggers(config.output, run_dir)
        with tracking.failed_on_error(loggers):
            if global_rank() == 0:
                tracking.start(loggers, config, run_dir, resumed=resume is not None)
            trainer = make_trainer(config, hardware, run_dir=run_dir, callbacks=callbacks,
                                   deadline=keeper.deadline if keeper else None, validate=validate, loggers=loggers)
        log.info("hardware: %s, strategy %s, %s device(s) x %d node(s)", hardware, config.hardware.strategy,
                 config.hardware.devices, config.hardware.num_nodes)
    recorder = next(c for c in callbacks if isinstance(c, RunRecorder))
    return PreparedRun(config, run_dir, found, card, model, module, datamodule, trainer, recorder, keeper, started,
                       twins_in_training(found, checks.facts))


BEFORE_TRAINING = ("config.yaml", "dataset.json", "data_checks.json", "skipped_files.txt", PLAN,  # what prepare writes
                   tracking.TRACKING)


@contextmanager
def discarded_on_failure(run_dir: Path, *, fresh: bool, started: Callable[[], bool] = lambda: False) -> Iterator[None]:
    """A new run that fails before training starts (the cache cannot be written, the trainer cannot start) takes
    what it wrote with it, and its directory if that is then empty: nothing there to resume or read, and the error
    says why. Files of anyone else in a directory named with --name stay."""
    try:
        yield
    except Exception:
        if fresh and global_rank() == 0 and not started():
            for name in BEFORE_TRAINING:
                (run_dir / name).unlink(missing_ok=True)
            for folder in tracking.FOLDERS:
                shutil.rmtree(run_dir / folder, ignore_errors=True)
            with suppress(OSError):
                run_dir.rmdir()  # only if empty
        raise


def fit(config: TrainConfig, *, resume: str | Path | None = None, found: LabelledSplits | None = None,
        checks: Audit | None = None, started: float | None = None) -> Path:
    """Train as ``config`` says; returns the run directory holding checkpoint, history, metrics and report.

    ``resume``: a run directory whose ``last.ckpt`` continues (epochs, optimizer and scheduler state) in place.
    ``found``, ``checks`` and ``started``: see ``prepare``.
    """
    return run_prepared(prepare(config, resume=resume, found=found, checks=checks, started=started), resume=resume)


def run_prepared(run: PreparedRun, *, resume: str | Path | None = None) -> Path:
    """Train what ``prepare`` built, then (rank 0) score the best checkpoint and write the report."""
    with shared_run_dir(run.run_dir), discarded_on_failure(run.run_dir, fresh=resume is None,
                                                           started=lambda: run.trainer.global_step > 0):
        run.trainer.fit(run.module, datamodule=run.datamodule,
                        ckpt_path=Path(resume) / LAST if resume is not None else None)
    if not run.trainer.is_global_zero or global_rank() != 0:
        return run.run_dir  # the final report is rank 0's
    with tracking.failed_on_error(run.trainer.loggers):
        if not (run.run_dir / BEST).is_file():
            raise MissingError(f"{run.run_dir}: training stopped before a validation pass; no checkpoint was written")
        # With ddp_spawn the epochs ran in child processes; rank 0 wrote the history to disk.
        history = run.recorder.history or read_history(run.run_dir / "history.csv")
        scored = finish_run(run.run_dir, model=run.model, card=run.card, found=run.found,
                            masks=run.datamodule.masks, history=history, batch_size=run.datamodule.batch_size * 2,
                            tta=run.config.eval.tta, bootstrap=run.config.eval.bootstrap, seed=run.config.data.seed,
                            twinned=run.twinned, calibrate=run.config.eval.calibrate,
                            heatmaps=run.config.eval.heatmaps)
        tracking.finish(run.trainer.loggers, run.run_dir, scored)
    if run.keeper is not None:  # the plan as kept, and how the run ended against it
        plan, elapsed = run.keeper.plan, time.monotonic() - run.started
        write_json(run.run_dir / PLAN, {**plan.to_dict(), "epochs_run": len(history),
                                        "finished_seconds": round(elapsed, 1),
                                        "within_budget": elapsed <= plan.budget_seconds})
        log.info("time budget %.0f s: finished in %.0f s after %d epochs (planned %d, %d changes on the way)",
                 plan.budget_seconds, elapsed, len(history), plan.epochs, len(plan.adjustments))
    return run.run_dir
