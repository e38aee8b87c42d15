"""What a run keeps on disk while it trains: ``best.pt`` on each new best validation score, ``history.csv`` after
every epoch, Lightning's ``last.ckpt`` for ``--resume`` (at every epoch's end and, with ``--checkpoint-every``, inside
long epochs), each process's random state with it; and early stopping. The module computes, these persist."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from celltune.config import OptimConfig
from celltune.config.durations import parse_duration
from celltune.data.sampling import gather_objects, rng_states, set_rng_states
from celltune.models.checkpoint import BEST, ModelCard, save_checkpoint
from celltune.reports.run_files import write_history
from celltune.training import tracking
from celltune.training.datamodule import CellDataModule
from celltune.training.module import CellClassifier

log = logging.getLogger(__name__)

LAST = "last.ckpt"  # Lightning's full training state (optimizer, scheduler, loops), for --resume


class RunRecorder(L.Callback):
    """After each validation pass: ``best.pt`` when the score (ACA, or macro-F1 for multi-label) beat every earlier
    epoch's, with ``extra`` (plain data about the run) beside the card; with --ema, of whichever weights (raw or
    averaged) scored better, named in its ``weights`` field; the epoch's row appended to ``history.csv``.
    Runs before Lightning writes ``last.ckpt`` at the end of the epoch, so a resumed run continues the history and the
    best score from there."""

    def __init__(self, run_dir: Path, *, card: ModelCard, extra: dict[str, Any]) -> None:
        self.run_dir, self.card, self.extra = run_dir, card, extra
        self.history: list[dict[str, float]] = []
        self.best_score = -1.0

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        assert isinstance(module, CellClassifier)
        result = module.val_result
        if trainer.sanity_checking or result is None:
            return
        weights, model = "raw", module.model
        averaged = module.ema_val_result
        if module.ema is not None and averaged is not None and averaged.score > result.score:
            weights, model, result = "ema", module.ema.module, averaged
        if result.score > self.best_score:  # the same decision on every rank: all saw the same gathered metrics
            self.best_score = result.score
            if trainer.is_global_zero:
                save_checkpoint(self.run_dir / BEST, model=model, card=self.card,
                                extra={"epoch": trainer.current_epoch, "val_metrics": result.to_dict(),
                                       "weights": weights, **self.extra})
        self._record(trainer, module.epoch_row)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        """Without validation (no group could be spared for it), every epoch's weights are the run's: the averaged
        ones with --ema, as nothing can compare them with the raw ones."""
        assert isinstance(module, CellClassifier)
        if trainer.limit_val_batches != 0:
            return
        weights, model = ("ema", module.ema.module) if module.ema is not None else ("raw", module.model)
        row = module.train_row()
        if trainer.is_global_zero:
            save_checkpoint(self.run_dir / BEST, model=model, card=self.card,
                            extra={"epoch": trainer.current_epoch, "val_metrics": None, "weights": weights,
                                   **self.extra})
        self._record(trainer, row)

    def _record(self, trainer: L.Trainer, row: dict[str, float]) -> None:
        self.history.append(row)
        if trainer.is_global_zero:
            write_history(self.run_dir / "history.csv", self.history)
            tracking.log_epoch(trainer.loggers, row)
            log.info("epoch %d: %s", row["epoch"], {k: round(v, 4) for k, v in row.items()})

    # The run's own state travels in Lightning's checkpoint, so --resume continues the history and the best score;
    # with it every process's random state and running training sums (every process takes part in saving).
    def on_save_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        assert isinstance(module, CellClassifier)
        data = getattr(trainer, "datamodule", None)
        loader = data.loader_state() if isinstance(data, CellDataModule) else None
        checkpoint["celltune"] = {"history": self.history, "best_score": self.best_score, "processes": gather_objects(
            {"rng": rng_states(), "loader": loader, **module.running_state()})}

    def on_load_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        assert isinstance(module, CellClassifier)
        state = checkpoint.get("celltune", {})
        self.history = list(state.get("history", []))
        self.best_score = float(state.get("best_score", -1.0))
        processes = state.get("processes", [])
        if len(processes) == trainer.world_size:  # else saved by a run of another size: start its epoch afresh
            own = processes[trainer.global_rank]
            set_rng_states(own["rng"])
            module.load_running_state(own)
            data = getattr(trainer, "datamodule", None)
            if own.get("loader") and isinstance(data, CellDataModule):
                data.resume_loader(own["loader"])


class RunCheckpoint(ModelCheckpoint):
    """``last.ckpt`` in the run directory. That directory already holds celltune's own files (config.yaml,
    dataset.json, a cv fold's as well), so Lightning's warning that it "exists and is not empty" says nothing wrong
    and is not shown."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
            super().setup(trainer, pl_module, stage)


class IntervalCheckpoint(RunCheckpoint):
    """``last.ckpt`` every ``train_time_interval`` inside epochs, except on an epoch's last batch: resumed from there,
    Lightning would go on with the next epoch and skip this one's validation (the end-of-epoch checkpoint follows
    a moment later anyway)."""

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if batch_idx + 1 < trainer.num_training_batches:
            super().on_train_batch_end(trainer, module, outputs, batch, batch_idx)


def training_callbacks(run_dir: Path, *, card: ModelCard, optim: OptimConfig, extra: dict[str, Any],
                       checkpoint_every: str | None = None) -> list[L.Callback]:
    """The recorder, ``last.ckpt`` at every epoch's end (and every ``checkpoint_every`` inside epochs) and, with
    ``patience``, early stopping."""
    callbacks: list[L.Callback] = [
        RunRecorder(run_dir, card=card, extra=extra),
        RunCheckpoint(dirpath=run_dir, filename=Path(LAST).stem, enable_version_counter=False,
                      save_on_train_epoch_end=True),
    ]
    if checkpoint_every:
        every = parse_duration(checkpoint_every, flag="--checkpoint-every")
        callbacks.append(IntervalCheckpoint(dirpath=run_dir, filename=Path(LAST).stem, enable_version_counter=False,
                                            train_time_interval=every))
    if optim.patience is not None:
        callbacks.append(EarlyStopping(monitor=optim.early_stop_monitor, patience=optim.patience,
                                       mode="min" if optim.early_stop_monitor == "val_loss" else "max"))
    return callbacks
