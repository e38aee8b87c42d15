"""Fine-tuning on PyTorch Lightning: the module, the run directory, and ``fit`` from config to finished report."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_only
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from celltune.cache import AUTO_LIMIT_BYTES, CachedDataset, build_cache
from celltune.channels import dataset_mean_std
from celltune.checkpoint import BEST, ModelCard, save_checkpoint
from celltune.config import TrainConfig, save_config
from celltune.data import LabelledSplits, discover, summarize
from celltune.dataset import CellDataset, WithIndex, load_input, mask_paths
from celltune.evaluate import score, write_scored
from celltune.metrics import classification_metrics, multi_hot, multilabel_metrics, tune_thresholds
from celltune.models import create_model, resolve_name
from celltune.report import plot_curves, read_history, write_history, write_json
from celltune.report_html import write_report
from celltune.transforms import Augment, BatchAugment, NormalizeBatch, eval_transform, train_transform

log = logging.getLogger(__name__)

LAST = "last.ckpt"  # Lightning's full training state (optimizer, scheduler, loops), for --resume


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


def class_weights(labels: list[int], num_classes: int) -> torch.Tensor:
    """N / (C * count) per class: 1.0 everywhere for balanced data; a class absent from ``labels`` gets 0."""
    counts = torch.bincount(torch.as_tensor(labels), minlength=num_classes).float()
    weights = len(labels) / (num_classes * counts)
    return torch.where(counts > 0, weights, torch.zeros_like(weights))


class FocalLoss(nn.Module):
    """Sigmoid focal loss (Lin et al. 2017) for multi-label targets, torchvision's implementation, mean-reduced."""

    def __init__(self, gamma: float = 2.0) -> None:
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return sigmoid_focal_loss(logits, targets, alpha=-1, gamma=self.gamma, reduction="mean")


class CellClassifier(L.LightningModule):
    """Fine-tuning (cross-entropy, or BCE/focal for multi-label); keeps the epoch history and writes ``best.pt`` on
    each new best validation score (ACA, or macro-F1 for multi-label)."""

    def __init__(self, model: nn.Module, *, card: ModelCard, config: TrainConfig, run_dir: Path,
                 loss_weights: torch.Tensor | None = None, channels_last: bool = False,
                 compile_model: bool = False, augment_batch: BatchAugment | None = None,
                 normalize_batch: NormalizeBatch | None = None) -> None:
        super().__init__()
        self.model = model
        self.card = card
        self.config = config
        self.run_dir = run_dir
        self.multilabel = card.multilabel
        self.channels_last = channels_last
        self.augment_batch = augment_batch
        self.normalize_batch = normalize_batch
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        # torch.compile wraps the model; checkpoints keep saving the plain one (state_dict keys unchanged).
        # Kept outside the module registry (no second copy of the parameters in state_dict).
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = None
        if compile_model:
            object.__setattr__(self, "_compiled", torch.compile(self.model))
        self.criterion: nn.Module = nn.CrossEntropyLoss(weight=loss_weights, label_smoothing=config.label_smoothing)
        if self.multilabel:
            self.criterion = FocalLoss(config.focal_gamma) if config.focal_gamma else nn.BCEWithLogitsLoss()
        aug = config.augment
        self.mixup = None
        if aug.mixup or aug.cutmix:
            # Mixup/CutMix make soft targets; label smoothing moves into them.
            self.mixup = Mixup(mixup_alpha=aug.mixup, cutmix_alpha=aug.cutmix, label_smoothing=config.label_smoothing,
                               num_classes=len(card.class_names))
            self.soft_criterion = SoftTargetCrossEntropy()
        self.history: list[dict] = []
        self.best_score = -1.0  # validation ACA (single-label) or macro-F1 at 0.5 (multi-label)
        # loss * n, correct, n. Python floats, not a tensor: ddp_spawn would put a tensor in memory shared by all ranks.
        self._train_sums = [0.0, 0.0, 0.0]
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._last_val: dict[str, float] = {}
        self._epoch_start = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._compiled(x) if self._compiled is not None else self.model(x)

    def _to_memory_format(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    # The run's own state travels in Lightning's checkpoint, so --resume continues the history and the best score.
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["celltune"] = {"history": self.history, "best_score": self.best_score}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("celltune", {})
        self.history = list(state.get("history", []))
        self.best_score = float(state.get("best_score", -1.0))

    def on_fit_start(self) -> None:
        # Every process started from the same seed (the same initial weights, the same split); from here each draws its
        # own augmentation, Mixup and dropout, or all ranks would transform their images alike (timm: seed + rank).
        if self.trainer.world_size > 1:
            L.seed_everything(self.config.seed + self.global_rank, workers=True, verbose=False)

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()
        self._train_sums = [0.0, 0.0, 0.0]
        if self.config.freeze_backbone:
            # Frozen BatchNorm layers keep their ImageNet running statistics.
            for m in self.model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
                    m.eval()

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        # Every batch takes the model's memory format here, on the device. Cached batches arrive as uint8 (B, C, S, S):
        # the format change is cheap on them, then they are augmented (training) and normalised, keeping the format.
        images, *rest = batch
        images = self._to_memory_format(images)
        transform = self.augment_batch if self.trainer.training else self.normalize_batch
        return [images if transform is None else transform(images), *rest]

    def training_step(self, batch, batch_idx):
        images, labels = batch
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
        self.log("loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        images, labels, index = batch
        self._val_outputs.append((self(images).detach().float(), labels, index))

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
        logits = self._gather(torch.cat([o[0] for o in self._val_outputs])).cpu()
        labels = self._gather(torch.cat([o[1] for o in self._val_outputs])).cpu()
        index = self._gather(torch.cat([o[2] for o in self._val_outputs])).cpu()
        self._val_outputs.clear()
        # The distributed sampler pads ranks to equal length by repeating images: keep each image once, in order.
        _, first = np.unique(index.numpy(), return_index=True)
        logits, labels = logits[first], labels[first]
        loss = float(nn.functional.binary_cross_entropy_with_logits(logits, labels) if self.multilabel
                     else nn.functional.cross_entropy(logits, labels))
        if self.multilabel:
            m = multilabel_metrics(labels.numpy(), torch.sigmoid(logits).numpy(), self.card.class_names)
            self._last_val = {"val_loss": loss, "val_macro_f1": m["macro_f1"], "val_micro_f1": m["micro_f1"]}
            score = m["macro_f1"]
        else:
            m = classification_metrics(labels.numpy(), logits.argmax(1).numpy(), self.card.class_names)
            self._last_val = {"val_loss": loss, "val_acc": m["accuracy"], "val_aca": m["mean_class_accuracy"],
                              "val_macro_f1": m["macro_f1"]}
            score = m["mean_class_accuracy"]
        self.log_dict({k: v for k, v in self._last_val.items() if k != "val_macro_f1" or self.multilabel},
                      prog_bar=True)
        if self.trainer.sanity_checking:
            return
        if score > self.best_score:  # the same decision on every rank: all saw the same gathered metrics
            self.best_score = score
            if self.trainer.is_global_zero:
                save_checkpoint(self.run_dir / BEST, model=self.model, card=self.card,
                                extra={"epoch": self.current_epoch, "val_metrics": m, "split_seed": self.config.seed,
                                       "val_fraction": self.config.val_fraction,
                                       "test_fraction": self.config.test_fraction})
        # The epoch's row is complete here, before Lightning writes last.ckpt at the end of validation.
        sums = torch.tensor(self._train_sums, dtype=torch.float64, device=self.device)[None]  # (1, 3)
        loss_sum, correct, n = self._gather(sums).sum(0).tolist()
        row = {"epoch": self.current_epoch + 1, "train_loss": loss_sum / max(n, 1), "train_acc": correct / max(n, 1),
               **self._last_val, "lr": self.trainer.optimizers[0].param_groups[0]["lr"],
               "seconds": time.perf_counter() - self._epoch_start, "train_images": n}
        self.history.append(row)
        if self.trainer.is_global_zero:
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


def _num_workers(config: TrainConfig, *, per_image: bool) -> int:
    """DataLoader worker processes: as configured, else half the cores (at most 8) for image-by-image work. Batches
    only sliced from the cache (under a millisecond for 64 images) get none when training on the CPU, where a worker
    process only takes cores from the model's threads; on a GPU it still overlaps the fetching with the device."""
    if config.num_workers is not None:
        return config.num_workers
    if not per_image and resolve_hardware(config)["accelerator"] == "cpu":
        return 0
    return max(0, min(8, (os.cpu_count() or 1) // 2))


def _use_cache(config: TrainConfig, found: LabelledSplits) -> bool:
    assert config.image_size is not None
    channels = len(config.channels) if config.channels else 3
    images = len(found.splits["train"]) + len(found.splits["val"])
    return config.cache == "on" or (config.cache == "auto" and images * channels * config.image_size**2
                                    <= AUTO_LIMIT_BYTES)


class Loaders(NamedTuple):
    train: torch.utils.data.DataLoader
    val: torch.utils.data.DataLoader
    masks: dict[str, list[Path] | None]
    # Set when batches arrive as uint8, to be made normalised floats on the device (CellClassifier does it): training
    # batches augmented whole, validation batches normalised.
    augment_batch: BatchAugment | None
    normalize_batch: NormalizeBatch | None


def build_loaders(config: TrainConfig, found: LabelledSplits, card: ModelCard) -> Loaders:
    """Train and val DataLoaders. Small datasets come from the decoded uint8 cache (see celltune.cache) as uint8
    batches: training ones are augmented whole on the training device by ``Loaders.augment_batch`` (image by image in
    the workers with RandAugment, which has no batch form), validation ones normalised there by
    ``Loaders.normalize_batch``. Others are read from their files and transformed image by image."""
    assert config.image_size is not None
    masks = {split: mask_paths(found.splits[split], data_root=config.data, mask_dir=config.mask_dir)
             if config.mask_dir else None for split in found.splits}
    cached = _use_cache(config, found)
    mean, std = tuple(card.mean), tuple(card.std)
    per_image = not cached or bool(config.augment.randaugment_ops)  # RandAugment has no batch form
    augment_batch, normalize_batch = None, None
    if cached:
        # With RandAugment in the workers, only random erasing (to the mean) and normalisation are left for the batch.
        on_batch = (Augment(hflip=False, vflip=False, rotation=0, crop_scale=1.0,
                            random_erasing=config.augment.random_erasing) if per_image else config.augment)
        augment_batch, normalize_batch = BatchAugment(on_batch, mean=mean, std=std), NormalizeBatch(mean, std)
    train_tf = train_transform(image_size=config.image_size, mean=mean, std=std, interpolation=card.interpolation,
                               augment=config.augment, normalize=not cached) if per_image else None
    eval_tf = None if cached else eval_transform(image_size=config.image_size, mean=mean, std=std,
                                                 interpolation=card.interpolation)
    datasets: dict[str, torch.utils.data.Dataset] = {}
    for split, tf in (("train", train_tf), ("val", eval_tf)):
        samples = found.splits[split]
        if cached:
            path = build_cache(samples, size=config.image_size, channels=config.channels, intensity=config.intensity,
                               masks=masks[split], interpolation=card.interpolation,
                               cache_dir=Path(config.cache_dir) if config.cache_dir else None)
            datasets[split] = CachedDataset(path, samples, tf, num_classes=len(found.class_names))
        else:
            datasets[split] = CellDataset(samples, tf, masks[split], channels=config.channels,
                                          intensity=config.intensity, num_classes=len(found.class_names))
    train = found.splits["train"]
    sampler = None
    if config.balance == "sampler":
        # Each image drawn with probability 1 / (its class count): every class equally often per epoch on average.
        labels = found.class_indices("train")
        weights = class_weights(labels, len(found.class_names))[labels]
        sampler = torch.utils.data.WeightedRandomSampler(weights.tolist(), num_samples=len(train), replacement=True)

    def args(per_image: bool) -> dict[str, Any]:
        workers = _num_workers(config, per_image=per_image)
        return {"batch_size": config.batch_size, "num_workers": workers, "persistent_workers": workers > 0,
                "pin_memory": torch.cuda.is_available()}

    # drop_last keeps BatchNorm away from a final batch of one image.
    train_loader = torch.utils.data.DataLoader(datasets["train"], shuffle=sampler is None, sampler=sampler,
                                               drop_last=len(train) > config.batch_size, **args(per_image))
    val_loader = torch.utils.data.DataLoader(WithIndex(datasets["val"]), **args(not cached))
    return Loaders(train_loader, val_loader, masks, augment_batch, normalize_batch)


_RUN_DIR_ENV = "CELLTUNE_RUN_DIR"


def global_rank() -> int:
    """This process's rank as the launcher's environment gives it (0 when not distributed)."""
    return int(getattr(rank_zero_only, "rank", 0))


def _launched_externally() -> bool:
    """Started as one of several processes by torchrun or SLURM (every rank runs the whole command)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or int(os.environ.get("SLURM_NTASKS", "1")) > 1


def _run_dir(config: TrainConfig, resume: str | Path | None) -> Path:
    """The run directory, the same one on every process of a distributed run."""
    if resume is not None:
        return Path(resume)
    if inherited := os.environ.get(_RUN_DIR_ENV):
        return Path(inherited)  # a DDP process that Lightning launched from the rank-0 one
    if _launched_externally():
        if not config.name:
            raise ValueError("a multi-process launch (torchrun, SLURM) needs --name, so that every process writes to "
                             "one run directory")
        path = Path(config.out_dir) / config.name
        if global_rank() == 0 and (path / "config.yaml").exists():
            raise FileExistsError(f"{path} holds an earlier run; choose another --name")
        path.mkdir(parents=True, exist_ok=True)
        return path
    return new_run_dir(config.out_dir, config.name or f"{config.model.replace(':', '_')}-"
                       f"{datetime.now():%Y%m%d-%H%M%S}")


def progress_bar() -> TQDMProgressBar:
    """Redrawn every 10 batches: each redraw reads the logged metrics, a cost on a 2-core CPU and lines in a log."""
    return TQDMProgressBar(refresh_rate=10)


def resolve_hardware(config: TrainConfig) -> dict[str, Any]:
    """Accelerator, precision and memory format, unless the config says otherwise: bf16 autocast on a GPU (fp16 where
    bf16 is missing), fp32 on CPU, where bf16 is slow without matrix units; channels_last everywhere, as oneDNN's CPU
    convolutions are faster in it too (1.06-1.44x training across mobilenet_v2, resnet18/50, densenet121,
    efficientnet-lite0, convnext_tiny, alexnet and vgg16 on 2 cores)."""
    gpu = torch.cuda.is_available() and config.accelerator in ("auto", "gpu", "cuda")
    auto_precision = "bf16-mixed" if gpu and torch.cuda.is_bf16_supported() else ("16-mixed" if gpu else "32-true")
    return {
        "accelerator": "gpu" if gpu else ("cpu" if config.accelerator == "auto" else config.accelerator),
        "precision": config.precision or auto_precision,
        "channels_last": True if config.channels_last is None else config.channels_last,
    }


def fit(config: TrainConfig, *, resume: str | Path | None = None) -> Path:
    """Train as ``config`` says; returns the run directory holding checkpoint, history, metrics and report.

    ``resume``: a run directory whose ``last.ckpt`` continues (epochs, optimizer and scheduler state) in place.
    """
    resolve_name(config.model)  # a misspelt model fails before the dataset is scanned
    mixing = bool(config.augment.mixup or config.augment.cutmix)
    if config.balance == "loss" and mixing:
        raise ValueError("balance: loss does not combine with Mixup/CutMix soft targets; use balance: sampler")
    if resume is not None and not (Path(resume) / LAST).is_file():
        raise FileNotFoundError(f"{Path(resume) / LAST}: nothing to resume; the run never finished an epoch")
    # Absolute paths, so the saved config.yaml (and --resume) work from any directory.
    config = replace(config, data=str(Path(config.data).resolve()),
                     mask_dir=str(Path(config.mask_dir).resolve()) if config.mask_dir else None)
    L.seed_everything(config.seed, workers=True, verbose=False)
    found = discover(config.data, val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                     seed=config.seed, label_names=config.label_names)
    if found.multilabel and (mixing or config.balance != "none"):
        raise ValueError("multi-label data: Mixup/CutMix and --balance are single-label only; turn them off")
    summary = summarize(found)
    in_chans = len(config.channels) if config.channels else 3
    model, prep = create_model(config.model, num_classes=len(found.class_names), in_chans=in_chans,
                               pretrained=config.pretrained, freeze=config.freeze_backbone, weights=config.weights)
    config = replace(config, image_size=config.image_size or prep.input_size)
    assert config.image_size is not None
    mean, std = list(prep.mean), list(prep.std)
    if config.intensity == "dataset":
        # The dataset's own per-channel statistics replace the pretrained ones (a sample of the training images).
        train = found.splits["train"]
        picked = np.random.default_rng(config.seed).permutation(len(train))[:256]
        mean, std = dataset_mean_std([load_input(train[i].path, channels=config.channels) for i in picked])
    card = ModelCard(model_name=config.model, class_names=found.class_names, mean=mean, std=std,
                     image_size=config.image_size, interpolation=prep.interpolation, in_chans=in_chans,
                     channels=config.channels, intensity=config.intensity, multilabel=found.multilabel)

    run_dir = _run_dir(config, resume)
    rank_zero = global_rank() == 0
    if rank_zero:
        save_config(config, run_dir / "config.yaml")
        write_json(run_dir / "dataset.json", summary)
        log.info("run directory %s", run_dir)

    loaders = build_loaders(config, found, card)
    masks = loaders.masks

    loss_weights = (class_weights(found.class_indices("train"), len(found.class_names))
                    if config.balance == "loss" else None)
    hardware = resolve_hardware(config)
    module = CellClassifier(model, card=card, config=config, run_dir=run_dir, loss_weights=loss_weights,
                            channels_last=hardware["channels_last"], compile_model=config.compile,
                            augment_batch=loaders.augment_batch, normalize_batch=loaders.normalize_batch)
    callbacks: list[L.Callback] = [ModelCheckpoint(dirpath=run_dir, filename=Path(LAST).stem,
                                                   enable_version_counter=False, save_on_train_epoch_end=True),
                                   progress_bar()]
    if config.patience is not None:
        callbacks.append(EarlyStopping(monitor=config.early_stop_monitor, patience=config.patience,
                                       mode="min" if config.early_stop_monitor == "val_loss" else "max"))
    trainer = L.Trainer(
        max_epochs=config.epochs, accelerator=hardware["accelerator"], devices=config.devices,
        num_nodes=config.num_nodes, strategy=config.strategy, precision=hardware["precision"], logger=False,
        callbacks=callbacks, num_sanity_val_steps=0, limit_train_batches=config.max_steps_per_epoch or 1.0,
        log_every_n_steps=10, default_root_dir=run_dir,
    )
    log.info("hardware: %s, strategy %s, %s device(s) x %d node(s)", hardware, config.strategy, config.devices,
             config.num_nodes)
    # Processes that Lightning launches for DDP run this function again; they find the run directory here.
    os.environ[_RUN_DIR_ENV] = str(run_dir)
    try:
        trainer.fit(module, loaders.train, loaders.val, ckpt_path=Path(resume) / LAST if resume is not None else None)
    finally:
        os.environ.pop(_RUN_DIR_ENV, None)
    if not trainer.is_global_zero or global_rank() != 0:
        return run_dir  # the final report is rank 0's
    if not (run_dir / BEST).is_file():
        raise RuntimeError(f"{run_dir}: training stopped before a validation pass; no checkpoint was written")
    # With ddp_spawn the epochs ran in child processes; rank 0 wrote the history to disk.
    history = module.history or read_history(run_dir / "history.csv")
    train_seconds = sum(row["seconds"] for row in history)  # all epochs, across resumes
    write_history(run_dir / "history.csv", history)
    plot_curves(history, run_dir)

    # Report on the best checkpoint, on test when there is one.
    best = torch.load(run_dir / BEST, map_location="cpu", weights_only=True)
    model.load_state_dict(best["state_dict"])
    score_args: dict[str, Any] = {"batch_size": config.batch_size * 2, "tta": config.tta}
    if card.multilabel:
        # Per-label decision thresholds, tuned on validation and kept in the checkpoint for evaluate and predict.
        _, val_probs = score(model, card, found.splits["val"], masks=masks["val"], **score_args)
        val_truth = multi_hot([s.label for s in found.splits["val"]], len(card.class_names))  # type: ignore[misc]
        card = replace(card, thresholds=tune_thresholds(val_truth, val_probs))
        save_checkpoint(run_dir / BEST, model=model, card=card,
                        extra={k: best[k] for k in ("epoch", "val_metrics", "split_seed", "val_fraction",
                                                    "test_fraction")})
    split = "test" if found.splits.get("test") else "val"
    metrics, probs = score(model, card, found.splits[split], masks=masks[split], **score_args)
    write_scored(run_dir, split=split, metrics=metrics, probs=probs, samples=found.splits[split],
                 class_names=card.class_names, thresholds=card.thresholds)
    headline = ("macro_f1", "micro_f1") if card.multilabel else ("accuracy", "mean_class_accuracy", "macro_f1")
    write_json(run_dir / "metrics.json", {
        "split": split, **metrics,
        "best_epoch": int(best["epoch"]) + 1, "best_val": {k: best["val_metrics"][k] for k in headline},
        "epochs_run": len(history), "train_seconds": train_seconds,
        # Training images per wall-clock second of the whole fit, validation passes included.
        "fit_images_per_second": sum(r["train_images"] for r in history) / train_seconds if train_seconds else 0.0,
    })
    write_report(run_dir, samples=found.splits[split], probs=probs)
    log.info("%s: %s", split, {k: round(metrics[k], 4) for k in headline})
    return run_dir
