"""Fine-tuning on PyTorch Lightning: the module, the run directory, and ``fit`` from config to finished report."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from celltune.checkpoint import BEST, ModelCard, save_checkpoint
from celltune.config import TrainConfig, save_config
from celltune.data import CellDataset, discover, summarize
from celltune.evaluate import score, write_scored
from celltune.metrics import classification_metrics
from celltune.models import create_model, resolve_name
from celltune.report import plot_curves, write_history, write_json
from celltune.transforms import eval_transform, train_transform

log = logging.getLogger(__name__)


def new_run_dir(out_dir: str | Path, name: str) -> Path:
    """A fresh directory; an existing one is never reused, so earlier runs are never overwritten."""
    base = Path(out_dir) / name
    for i in range(1000):
        candidate = base if i == 0 else base.with_name(f"{base.name}-{i}")
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run directory under {out_dir}")


def _optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    optimizers = {
        "sgd": lambda: torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                       weight_decay=config.weight_decay),
        "adamw": lambda: torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay),
    }
    if config.optimizer not in optimizers:
        raise ValueError(f"unknown optimizer {config.optimizer!r}; choose from {sorted(optimizers)}")
    return optimizers[config.optimizer]()


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier: linear warm-up from ~0 to 1, then cosine decay to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class CellClassifier(L.LightningModule):
    """Cross-entropy fine-tuning; keeps the epoch history and writes ``best.pt`` on each new best validation ACA."""

    def __init__(self, model: nn.Module, *, card: ModelCard, config: TrainConfig, run_dir: Path) -> None:
        super().__init__()
        self.model = model
        self.card = card
        self.config = config
        self.run_dir = run_dir
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.history: list[dict] = []
        self.best_aca = -1.0
        self.best_epoch = -1
        self.images_seen = 0
        self._train_sums = torch.zeros(3)  # loss * n, correct, n
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._epoch_start = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()
        self._train_sums.zero_()
        if self.config.freeze_backbone:
            # Frozen BatchNorm layers keep their ImageNet running statistics.
            for m in self.model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
                    m.eval()

    def training_step(self, batch, batch_idx):
        images, labels = batch
        logits = self(images)  # (B, C)
        loss = self.criterion(logits, labels)
        n = labels.numel()
        self._train_sums += torch.tensor([loss.item() * n, (logits.argmax(1) == labels).sum().item(), n])
        self.log("loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        images, labels = batch
        logits = self(images)
        self._val_outputs.append((logits.detach().float().cpu(), labels.cpu(), nn.functional.cross_entropy(
            logits.float(), labels, reduction="sum").detach().cpu()))

    def on_validation_epoch_end(self) -> None:
        if not self._val_outputs:
            return
        logits = torch.cat([o[0] for o in self._val_outputs])
        labels = torch.cat([o[1] for o in self._val_outputs])
        loss = float(sum(o[2] for o in self._val_outputs)) / len(labels)
        self._val_outputs.clear()
        m = classification_metrics(labels.numpy(), logits.argmax(1).numpy(), self.card.class_names)
        self.log_dict({"val_loss": loss, "val_acc": m["accuracy"], "val_aca": m["mean_class_accuracy"]}, prog_bar=True)
        self._last_val = {"val_loss": loss, "val_acc": m["accuracy"], "val_aca": m["mean_class_accuracy"],
                          "val_macro_f1": m["macro_f1"]}
        if not self.trainer.sanity_checking and m["mean_class_accuracy"] > self.best_aca:
            self.best_aca, self.best_epoch = m["mean_class_accuracy"], self.current_epoch
            save_checkpoint(self.run_dir / BEST, model=self.model, card=self.card,
                            extra={"epoch": self.current_epoch, "val_metrics": m, "split_seed": self.config.seed})

    def on_train_epoch_end(self) -> None:
        loss_sum, correct, n = self._train_sums.tolist()
        self.images_seen += int(n)
        row = {"epoch": self.current_epoch + 1, "train_loss": loss_sum / max(n, 1), "train_acc": correct / max(n, 1),
               **getattr(self, "_last_val", {}), "lr": self.trainer.optimizers[0].param_groups[0]["lr"],
               "seconds": time.perf_counter() - self._epoch_start}
        self.history.append(row)
        write_history(self.run_dir / "history.csv", self.history)
        log.info("epoch %d: %s", row["epoch"], {k: round(v, 4) for k, v in row.items()})

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = _optimizer(params, self.config)
        if self.config.scheduler == "plateau":
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=self.config.plateau_factor, patience=self.config.plateau_patience)
            return {"optimizer": optimizer,
                    "lr_scheduler": {"scheduler": plateau, "monitor": "val_loss", "interval": "epoch"}}
        if self.config.scheduler == "cosine":
            total = int(self.trainer.estimated_stepping_batches)
            steps_per_epoch = max(1, total // max(1, self.config.epochs))
            warmup = min(total, max(1, round(self.config.warmup_epochs * steps_per_epoch)))
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: warmup_cosine(step, warmup_steps=warmup, total_steps=total))
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        return optimizer


def _num_workers(config: TrainConfig) -> int:
    if config.num_workers is not None:
        return config.num_workers
    return max(0, min(8, (os.cpu_count() or 1) // 2))


def fit(config: TrainConfig) -> Path:
    """Train as ``config`` says; returns the run directory holding checkpoint, history, metrics and plots."""
    resolve_name(config.model)  # a misspelt model fails before the dataset is scanned
    L.seed_everything(config.seed, workers=True, verbose=False)
    found = discover(config.data, val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                     seed=config.seed)
    summary = summarize(found)
    model, prep = create_model(config.model, num_classes=len(found.class_names), pretrained=config.pretrained,
                               freeze=config.freeze_backbone, weights=config.weights)
    config = replace(config, image_size=config.image_size or prep.input_size)
    assert config.image_size is not None
    card = ModelCard(model_name=config.model, class_names=found.class_names, mean=list(prep.mean), std=list(prep.std),
                     image_size=config.image_size, interpolation=prep.interpolation)

    run_dir = new_run_dir(config.out_dir, config.name or f"{config.model.replace(':', '_')}-"
                          f"{datetime.now():%Y%m%d-%H%M%S}")
    save_config(config, run_dir / "config.yaml")
    write_json(run_dir / "dataset.json", summary)
    log.info("run directory %s", run_dir)

    workers = _num_workers(config)
    loader_args: dict[str, Any] = {"batch_size": config.batch_size, "num_workers": workers,
                                   "persistent_workers": workers > 0, "pin_memory": torch.cuda.is_available()}
    train_tf = train_transform(image_size=config.image_size, mean=prep.mean, std=prep.std,
                               interpolation=prep.interpolation, augment=config.augment)
    eval_tf = eval_transform(image_size=config.image_size, mean=prep.mean, std=prep.std,
                             interpolation=prep.interpolation)
    # drop_last keeps BatchNorm away from a final batch of one image.
    train_loader = torch.utils.data.DataLoader(CellDataset(found.splits["train"], train_tf), shuffle=True,
                                               drop_last=len(found.splits["train"]) > config.batch_size, **loader_args)
    val_loader = torch.utils.data.DataLoader(CellDataset(found.splits["val"], eval_tf), **loader_args)

    module = CellClassifier(model, card=card, config=config, run_dir=run_dir)
    trainer = L.Trainer(
        max_epochs=config.epochs, accelerator=config.accelerator, devices=config.devices, logger=False,
        enable_checkpointing=False, num_sanity_val_steps=0, deterministic=False,
        limit_train_batches=config.max_steps_per_epoch or 1.0, log_every_n_steps=10, default_root_dir=run_dir,
    )
    start = time.perf_counter()
    trainer.fit(module, train_loader, val_loader)
    train_seconds = time.perf_counter() - start
    write_history(run_dir / "history.csv", module.history)
    plot_curves(module.history, run_dir)

    # Report on the best checkpoint, on test when there is one.
    best = torch.load(run_dir / BEST, map_location="cpu", weights_only=True)
    model.load_state_dict(best["state_dict"])
    split = "test" if found.splits.get("test") else "val"
    metrics, probs = score(model, card, found.splits[split], batch_size=config.batch_size * 2)
    write_scored(run_dir, split=split, metrics=metrics, probs=probs, samples=found.splits[split],
                 class_names=card.class_names)
    write_json(run_dir / "metrics.json", {
        "split": split, **metrics,
        "best_epoch": int(best["epoch"]) + 1, "best_val": {k: best["val_metrics"][k] for k in
                                                         ("accuracy", "mean_class_accuracy", "macro_f1")},
        "epochs_run": len(module.history), "train_seconds": train_seconds,
        # Training images per wall-clock second of the whole fit, validation passes included.
        "fit_images_per_second": module.images_seen / train_seconds if train_seconds else float(np.nan),
    })
    log.info("%s accuracy %.4f, ACA %.4f", split, metrics["accuracy"], metrics["mean_class_accuracy"])
    return run_dir
