"""What a run keeps on disk while it trains: ``best.pt`` on each new best validation score, ``history.csv`` after
every epoch, Lightning's ``last.ckpt`` for ``--resume``; and early stopping. The module computes, these persist."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from celltune.checkpoint import BEST, ModelCard, save_checkpoint
from celltune.config import OptimConfig
from celltune.module import CellClassifier
from celltune.report import write_history

log = logging.getLogger(__name__)

LAST = "last.ckpt"  # Lightning's full training state (optimizer, scheduler, loops), for --resume


class RunRecorder(L.Callback):
    """After each validation pass: ``best.pt`` when the score (ACA, or macro-F1 for multi-label) beat every earlier
    epoch's, with ``extra`` (plain data about the run) beside the card; the epoch's row appended to ``history.csv``.
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
        if result.score > self.best_score:  # the same decision on every rank: all saw the same gathered metrics
            self.best_score = result.score
            if trainer.is_global_zero:
                save_checkpoint(self.run_dir / BEST, model=module.model, card=self.card,
                                extra={"epoch": trainer.current_epoch, "val_metrics": result.to_dict(), **self.extra})
        self.history.append(module.epoch_row)
        if trainer.is_global_zero:
            write_history(self.run_dir / "history.csv", self.history)
            log.info("epoch %d: %s", module.epoch_row["epoch"], {k: round(v, 4) for k, v in module.epoch_row.items()})

    # The run's own state travels in Lightning's checkpoint, so --resume continues the history and the best score.
    def on_save_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint["celltune"] = {"history": self.history, "best_score": self.best_score}

    def on_load_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("celltune", {})
        self.history = list(state.get("history", []))
        self.best_score = float(state.get("best_score", -1.0))


def training_callbacks(run_dir: Path, *, card: ModelCard, optim: OptimConfig,
                       extra: dict[str, Any]) -> list[L.Callback]:
    """The recorder, ``last.ckpt`` at every epoch's end and, with ``patience``, early stopping."""
    callbacks: list[L.Callback] = [
        RunRecorder(run_dir, card=card, extra=extra),
        ModelCheckpoint(dirpath=run_dir, filename=Path(LAST).stem, enable_version_counter=False,
                        save_on_train_epoch_end=True),
    ]
    if optim.patience is not None:
        callbacks.append(EarlyStopping(monitor=optim.early_stop_monitor, patience=optim.patience,
                                       mode="min" if optim.early_stop_monitor == "val_loss" else "max"))
    return callbacks
