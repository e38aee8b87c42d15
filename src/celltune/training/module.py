"""The LightningModule: loss, optimizer and learning-rate schedule, training and validation steps.

It computes and logs; ``callbacks.RunRecorder`` persists what it computed (``best.pt``, ``history.csv``), and the
data side (loaders, cache, batch augmentation) is ``datamodule.CellDataModule``'s.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.utils import ModelEmaV3
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from celltune.config import Augment, OptimConfig
from celltune.data.sampling import STEP, derive_seed, seed_everything_from
from celltune.metrics.classification import classification_metrics
from celltune.metrics.multilabel import multilabel_metrics
from celltune.metrics.results import Result
from celltune.models.checkpoint import ModelCard

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": lambda params, o: torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay),
    "adamw": lambda params, o: torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay),
}


class SpawnableEma(ModelEmaV3):
    """timm's moving average, sendable to ddp_spawn's processes: its ``torch.Generator`` (the stream for bfloat16
    stochastic rounding) fails to rebuild in a spawned process ("unable to resize file"), so it travels as its device
    and state bytes and is made again there."""

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        generator = state.pop("_sr_generator", None)
        if generator is not None:
            state["_sr_generator"] = (str(generator.device), generator.get_state().numpy().tobytes())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        sent = state.pop("_sr_generator", None)
        super().__setstate__(state)
        if sent is not None:
            device, raw = sent
            self._sr_generator = torch.Generator(device=device)
            self._sr_generator.set_state(torch.frombuffer(bytearray(raw), dtype=torch.uint8))


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier: linear warm-up from ~0 to 1, then cosine decay to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class WarmupCosine:
    """``warmup_cosine`` as LambdaLR's multiplier, whose end can move: ``relay(step, total)`` decays from the
    multiplier at ``step`` to 0 at ``total`` along a new cosine, so a run cut (or grown) by its time budget still ends
    its schedule at its last step. A callable object, so LambdaLR's state_dict (and --resume) keeps its fields."""

    def __init__(self, *, warmup_steps: int, total_steps: int) -> None:
        self.warmup_steps, self.total_steps = warmup_steps, total_steps
        self.laid_out = total_steps  # the first layout, which the steps before a relay followed
        self.from_step, self.from_value = 0, 1.0
        self.relaid = False

    def __call__(self, step: int) -> float:
        if not self.relaid or step < self.from_step:
            return warmup_cosine(step, warmup_steps=self.warmup_steps, total_steps=self.laid_out)
        progress = (step - self.from_step) / max(1, self.total_steps - self.from_step)
        return self.from_value * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    def relay(self, step: int, total_steps: int) -> None:
        if step < self.warmup_steps:  # still warming up: the cosine after it simply ends elsewhere
            self.total_steps = self.laid_out = total_steps
            return
        self.from_value, self.from_step = self(step), step
        self.total_steps, self.relaid = total_steps, True


class FocalLoss(nn.Module):
    """Sigmoid focal loss (Lin et al. 2017) for multi-label targets, torchvision's implementation, mean-reduced."""

    def __init__(self, gamma: float = 2.0) -> None:
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return sigmoid_focal_loss(logits, targets, alpha=-1, gamma=self.gamma, reduction="mean")


class CellClassifier(L.LightningModule):
    """Fine-tunes ``model``: cross-entropy (class-weighted with ``loss_weights``; soft targets under Mixup/CutMix), or
    BCE / focal loss for multi-label cards. Training batches are (images, targets, keys) from the data module. After
    each validation pass ``val_result`` holds the typed result and ``epoch_row`` the epoch's history row; the tracked
    numbers are logged for the progress bar and early stopping. With ``ema`` (a decay per step) an exponential moving
    average of the weights follows training (timm's ModelEmaV3, decay warmed up over the first steps) and is
    validated beside the raw weights: ``ema_val_result``, and ``ema_val_*`` numbers in the epoch's row."""

    def __init__(self, model: nn.Module, *, card: ModelCard, optim: OptimConfig, augment: Augment = Augment(),
                 seed: int = 0, freeze_backbone: bool = False, loss_weights: torch.Tensor | None = None,
                 channels_last: bool = False, compile_model: bool = False, ema: float | None = None) -> None:
        super().__init__()
        self.model = model
        self.card = card
        self.optim = optim
        self.seed = seed
        self.freeze_backbone = freeze_backbone
        self.multilabel = card.multilabel
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        # torch.compile wraps the model; checkpoints keep saving the plain one (state_dict keys unchanged).
        # Kept outside the module registry (no second copy of the parameters in state_dict).
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = None
        if compile_model:
            object.__setattr__(self, "_compiled", torch.compile(self.model))
        self.criterion: nn.Module = nn.CrossEntropyLoss(weight=loss_weights, label_smoothing=optim.label_smoothing)
        if self.multilabel:
            self.criterion = FocalLoss(optim.focal_gamma) if optim.focal_gamma else nn.BCEWithLogitsLoss()
        self.mixup = None
        if augment.mixup or augment.cutmix:
            # Mixup/CutMix make soft targets; label smoothing moves into them.
            self.mixup = Mixup(mixup_alpha=augment.mixup, cutmix_alpha=augment.cutmix,
                               label_smoothing=optim.label_smoothing, num_classes=len(card.class_names))
            self.soft_criterion = SoftTargetCrossEntropy()
        # loss * n, correct, n. Python floats, not a tensor: ddp_spawn would put a tensor in memory shared by all ranks.
        self._train_sums = [0.0, 0.0, 0.0]
        # Registered as a submodule: Lightning moves it with the model and last.ckpt keeps it for --resume.
        # warmup_power 3/4: timm's choice for runs of thousands, not millions, of steps.
        self.ema = SpawnableEma(self.model, decay=ema, use_warmup=True, warmup_power=0.75) if ema else None
        if self.ema is not None:
            self.ema.train()  # in step with the module (Lightning switches modes for validation); it never trains
            self.ema.requires_grad_(False)  # not trainable: no optimizer, DDP or parameter count takes it for one
        self.schedule: WarmupCosine | None = None
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
        self._epoch_start = 0.0
        self.val_result: Result | None = None
        self.ema_val_result: Result | None = None
        self.epoch_row: dict[str, float] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._compiled(x) if self._compiled is not None else self.model(x)

    def running_state(self) -> dict[str, Any]:
        """What this process has summed of the epoch so far (a checkpoint inside an epoch keeps it)."""
        return {"epoch": self.current_epoch, "train_sums": list(self._train_sums),
                "epoch_seconds": time.perf_counter() - self._epoch_start}

    def load_running_state(self, state: dict[str, Any]) -> None:
        # Resumed inside an epoch, Lightning goes on without a new epoch start: the sums so far continue. (After an
        # end-of-epoch checkpoint the next epoch's start resets them as always.)
        self._train_sums = list(state["train_sums"])
        self._epoch_start = time.perf_counter() - state["epoch_seconds"]

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()
        self._train_sums = [0.0, 0.0, 0.0]
        if self.freeze_backbone:
            # Frozen BatchNorm layers keep their ImageNet running statistics.
            for m in self.model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
                    m.eval()

    def training_step(self, batch, batch_idx):
        images, labels, keys = batch  # keys: (B, 2) epoch and position of each image in the epoch's order
        # Mixup and dropout draw from generators seeded by the batch's place in training, on every process its own,
        # so a resumed run draws what the uninterrupted one did (celltune.data.sampling).
        epoch, position = (int(v) for v in keys[0])
        seed_everything_from(derive_seed(self.seed, STEP, self.global_rank, epoch, position))
        truth = labels
        if self.mixup is not None and len(labels) % 2 == 0:
            images, soft_targets = self.mixup(images, labels)
            logits = self(images)  # (B, C)
            loss = self.soft_criterion(logits, soft_targets)
            # A mixed image is right when it names its larger part (against the original label, a fair guess at an
            # even mix would count wrong half the time).
            truth = soft_targets.argmax(1)
        else:
            logits = self(images)
            loss = self.criterion(logits, labels)
        n = len(labels)
        # Single-label: images right; multi-label: the fraction of an image's label decisions right (at 0.5).
        correct = ((logits > 0) == (labels > 0.5)).float().mean(1).sum() if self.multilabel else (
            logits.argmax(1) == truth).sum()
        self._train_sums = [a + b for a, b in zip(self._train_sums, (loss.item() * n, correct.item(), n), strict=True)]
        self.log("loss", loss, prog_bar=True, logger=False)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)

    def validation_step(self, batch, batch_idx):
        images, labels, index = batch
        averaged = self.ema.module(images).detach().float() if self.ema is not None else None
        self._val_outputs.append((self(images).detach().float(), labels, index, averaged))

    def _gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate ``tensor`` (N, ...) from every process (itself alone when not distributed)."""
        if self.trainer.world_size == 1:
            return tensor
        gathered = self.all_gather(tensor)  # (world, N, ...): the distributed sampler gives every rank N samples
        assert isinstance(gathered, torch.Tensor)
        return gathered.flatten(0, 1)

    def on_validation_epoch_end(self) -> None:
        if not self._val_outputs:
            return
        outputs = self._val_outputs
        self._val_outputs = []
        index = self._gather(torch.cat([o[2] for o in outputs])).cpu()
        labels = self._gather(torch.cat([o[1] for o in outputs])).cpu()
        # The distributed sampler pads ranks to equal length by repeating images: keep each image once, in order.
        _, first = np.unique(index.numpy(), return_index=True)
        labels = labels[first]
        logits = self._gather(torch.cat([o[0] for o in outputs])).cpu()[first]
        loss, result = self._scored(logits, labels)
        tracked = {"val_loss": loss, **result.tracked("val")}
        self.log_dict(tracked, prog_bar=True, logger=False)  # trackers get the history rows
        self.val_result = result
        if self.ema is not None:
            ema_logits = self._gather(torch.cat([o[3] for o in outputs])).cpu()[first]  # type: ignore[misc]
            ema_loss, self.ema_val_result = self._scored(ema_logits, labels)
            ema_tracked = {"ema_val_loss": ema_loss, **self.ema_val_result.tracked("ema_val")}
            self.log_dict(ema_tracked, logger=False)
            tracked |= ema_tracked
        row = self.train_row()
        self.epoch_row = {**{k: row[k] for k in ("epoch", "train_loss", "train_acc")}, **tracked,
                          **{k: row[k] for k in ("lr", "seconds", "train_images")}}

    def train_row(self) -> dict[str, float]:
        """The epoch's history row from training alone (a run without validation has no other)."""
        # Every rank takes part in the gather; the sums are this epoch's training images, loss and right answers.
        sums = torch.tensor(self._train_sums, dtype=torch.float64, device=self.device)[None]  # (1, 3)
        loss_sum, correct, n = self._gather(sums).sum(0).tolist()
        return {"epoch": self.current_epoch + 1, "train_loss": loss_sum / max(n, 1), "train_acc": correct / max(n, 1),
                "lr": self.trainer.optimizers[0].param_groups[0]["lr"],
                "seconds": time.perf_counter() - self._epoch_start, "train_images": n}

    def _scored(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, Result]:
        """(loss, result) of validation logits (N, C) against their labels."""
        if self.multilabel:
            loss = float(nn.functional.binary_cross_entropy_with_logits(logits, labels))
            return loss, multilabel_metrics(labels.numpy(), torch.sigmoid(logits).numpy(), self.card.class_names)
        loss = float(nn.functional.cross_entropy(logits, labels))
        return loss, classification_metrics(labels.numpy(), logits.argmax(1).numpy(), self.card.class_names)

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = OPTIMIZERS[self.optim.optimizer](params, self.optim)
        if self.optim.scheduler == "plateau":
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=self.optim.plateau_factor, patience=self.optim.plateau_patience)
            return {"optimizer": optimizer,
                    "lr_scheduler": {"scheduler": plateau, "monitor": "val_loss", "interval": "epoch"}}
        if self.optim.scheduler == "cosine":
            total = int(self.trainer.estimated_stepping_batches)
            steps_per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
            warmup = min(total, max(1, round(self.optim.warmup_epochs * steps_per_epoch)))
            self.schedule = WarmupCosine(warmup_steps=warmup, total_steps=total)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.schedule)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        return optimizer

    def relay_schedule(self, epochs: int) -> None:
        """The time budget moved the run's end to ``epochs``: the cosine schedule now ends there."""
        if self.schedule is not None:
            steps_per_epoch = self.trainer.num_training_batches // self.trainer.accumulate_grad_batches
            self.schedule.relay(self.global_step, int(epochs * steps_per_epoch))
