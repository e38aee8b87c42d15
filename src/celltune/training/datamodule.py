"""The data side of training as a LightningDataModule: datasets, loaders, the cache decision and the batch transforms.

Datasets that fit on the cache's disk come from the decoded uint8 cache (``celltune.data.cache``) as uint8 batches;
after the transfer to the device ``on_after_batch_transfer`` augments training batches whole (``BatchAugment``; image by
image in the workers with RandAugment, which has no batch form) and normalises validation ones (``NormalizeBatch``).
Others are read from their files and transformed image by image. The training order and every random draw come from
counters (``celltune.data.sampling``), so a resumed run repeats the uninterrupted one exactly; the data module shards
the images between DDP processes itself.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch

from celltune.config import Augment, DataConfig
from celltune.data.cache import (
    SPARE_BYTES,
    ImageCache,
    build_cache,
    bytes_needed,
    fits,
    space_error,
)
from celltune.data.cache_folder import default_cache_dir, held
from celltune.data.dataset import CachedDataset, CellDataset, WithIndex
from celltune.data.discovery import mask_paths
from celltune.data.samples import LabelledSplits
from celltune.data.sampling import BATCH, EpochSampler, Keyed, Progress, ResumableLoader, derive_seed
from celltune.data.transforms import BatchAugment, NormalizeBatch, eval_transform, train_transform
from celltune.models.checkpoint import ModelCard
from celltune.training.runtime import default_num_workers

log = logging.getLogger(__name__)


def class_weights(labels: list[int], num_classes: int) -> torch.Tensor:
    """N / (C * count) per class: 1.0 everywhere for balanced data; a class absent from ``labels`` gets 0."""
    counts = torch.bincount(torch.as_tensor(labels), minlength=num_classes).float()
    weights = len(labels) / (num_classes * counts)
    return torch.where(counts > 0, weights, torch.zeros_like(weights))


def use_cache(data: DataConfig, found: LabelledSplits, *, image_size: int, in_chans: int) -> bool:
    """``cache: on`` (refused when the disk lacks the space), or ``auto`` where the training and validation images
    at ``image_size`` fit on the cache's disk with space to spare."""
    if data.cache == "off":
        return False
    needed = bytes_needed(len(found.splits["train"]) + len(found.splits["val"]), in_chans=in_chans, size=image_size)
    directory = Path(data.cache_dir) if data.cache_dir else default_cache_dir()
    if fits(needed, directory):  # a cache already built counts again: simpler than finding it, and rarely matters
        return True
    if data.cache == "on":
        raise space_error(needed, directory)
    log.warning("image cache off: it needs %.2f GB on %s, more than the disk has free with %.1f GB to spare%s; "
                "every epoch decodes the files (--cache-dir on a larger disk caches them)", needed / 1e9, directory,
                SPARE_BYTES / 1e9, held(directory))
    return False


class CellDataModule(L.LightningDataModule):
    """Train and val loaders for ``found``, preprocessed as ``card`` says (size, statistics, channels, intensity)."""

    def __init__(self, found: LabelledSplits, *, data: DataConfig, augment: Augment, card: ModelCard,
                 batch_size: int, num_workers: int | None = None, accelerator: str = "cpu",
                 channels_last: bool = False) -> None:
        super().__init__()
        self.found, self.data, self.augment, self.card = found, data, augment, card
        self.batch_size, self.channels_last = batch_size, channels_last
        self.progress = Progress()  # images of the epoch trained on: the training loader's resumable state
        self._resume_at: dict[str, int] | None = None
        self.masks: dict[str, list[Path] | None] = {
            split: mask_paths(samples, data_root=data.root, mask_dir=data.mask_dir) if data.mask_dir else None
            for split, samples in found.splits.items()}
        self.cached = use_cache(data, found, image_size=card.image_size, in_chans=card.in_chans)
        self.per_image = not self.cached or bool(augment.randaugment_ops)  # RandAugment has no batch form
        # Set when batches arrive as uint8, to become normalised floats on the device: training batches augmented
        # whole, validation batches normalised.
        self.augment_batch: BatchAugment | None = None
        self.normalize_batch: NormalizeBatch | None = None
        mean, std = tuple(card.mean), tuple(card.std)
        if self.cached:
            # With RandAugment in the workers, only random erasing (to the mean) and normalisation are left for the
            # batch.
            on_batch = (Augment(hflip=False, vflip=False, rotation=0, crop_scale=1.0,
                                random_erasing=augment.random_erasing) if self.per_image else augment)
            self.augment_batch, self.normalize_batch = BatchAugment(on_batch, mean=mean, std=std), NormalizeBatch(
                mean, std)
        self.workers = {per_image: default_num_workers(num_workers, per_image=per_image, accelerator=accelerator)
                        for per_image in (False, True)}
        self.datasets: dict[str, torch.utils.data.Dataset] = {}

    def class_weights(self) -> torch.Tensor:
        return class_weights(self.found.class_indices("train"), len(self.found.class_names))

    def _cache(self, split: str) -> ImageCache:
        return build_cache(self.found.splits[split], size=self.card.image_size, channels=self.data.channels,
                           intensity=self.data.intensity, masks=self.masks[split],
                           interpolation=self.card.interpolation,
                           cache_dir=Path(self.data.cache_dir) if self.data.cache_dir else None)

    def prepare_data(self) -> None:
        # Lightning calls this once per node before setup: one process decodes, the others find the cache built.
        if self.cached:
            for split in ("train", "val"):
                if self.found.splits[split]:  # an empty validation split: a run without validation
                    self._cache(split)

    def setup(self, stage: str | None = None) -> None:
        card, num_classes = self.card, len(self.found.class_names)
        mean, std = tuple(card.mean), tuple(card.std)
        transforms = {
            "train": train_transform(image_size=card.image_size, mean=mean, std=std, interpolation=card.interpolation,
                                     augment=self.augment, normalize=not self.cached) if self.per_image else None,
            "val": None if self.cached else eval_transform(image_size=card.image_size, mean=mean, std=std,
                                                           interpolation=card.interpolation),
        }
        for split, transform in transforms.items():
            samples = self.found.splits[split]
            cached = self.cached and bool(samples)
            self.datasets[split] = (
                CachedDataset(self._cache(split), samples, transform, num_classes=num_classes) if cached
                else CellDataset(samples, transform, self.masks[split], channels=self.data.channels,
                                 intensity=self.data.intensity, num_classes=num_classes))

    def _loader_args(self, per_image: bool) -> dict[str, Any]:
        workers = self.workers[per_image]
        return {"batch_size": self.batch_size, "num_workers": workers, "persistent_workers": workers > 0,
                "pin_memory": torch.cuda.is_available()}

    def loader_state(self) -> dict[str, int]:
        return {"epoch": self.progress.epoch, "images": self.progress.images}

    def resume_loader(self, state: dict[str, int]) -> None:
        """Start the training loader where ``state`` (a checkpoint's) left it. Kept here and applied when the loader is
        made: Lightning may make it before it restores the loops (to count the steps a schedule needs) and then not
        load the loader's state itself."""
        self._resume_at = state

    def _ranks(self) -> tuple[int, int]:
        """(processes, this one's rank)."""
        return (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        train = self.found.splits["train"]
        weights = None
        if self.data.balance == "sampler":
            # Each image drawn with probability 1 / (its class count): every class equally often per epoch on average.
            weights = self.class_weights()[self.found.class_indices("train")]
        replicas, rank = self._ranks()
        sampler = EpochSampler(len(train), seed=self.data.seed, weights=weights, replicas=replicas, rank=rank)
        dataset = Keyed(self.datasets["train"], seed=self.data.seed, rank=rank, random_items=self.per_image)
        # drop_last keeps BatchNorm away from a final batch of one image.
        loader = ResumableLoader(dataset, sampler=sampler, progress=self.progress,
                                 drop_last=len(train) > self.batch_size, **self._loader_args(self.per_image))
        if self._resume_at is not None:
            loader.load_state_dict(self._resume_at)
            self._resume_at = None
        return loader

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        dataset = WithIndex(self.datasets["val"])
        replicas, rank = self._ranks()
        # Each process scores its share; the module gathers them and drops the repeats that pad the shares.
        sampler: torch.utils.data.Sampler | None = (
            torch.utils.data.DistributedSampler(dataset, num_replicas=replicas, rank=rank, shuffle=False)
            if replicas > 1 else None)
        return torch.utils.data.DataLoader(dataset, sampler=sampler, **self._loader_args(not self.cached))

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Every batch takes the model's memory format here, on the device. Cached batches arrive as uint8 (B, C, S, S):
        # the format change is cheap on them, then they are augmented (training) or normalised, keeping the format.
        images, targets, keys = batch
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.trainer is None or not self.trainer.training:
            return [images if self.normalize_batch is None else self.normalize_batch(images), targets, keys]
        epoch, position = (int(v) for v in keys[0])  # keys: (B, 2) epoch and position of each image
        # Trained on once this batch is through; a batch fetched ahead is not counted, so a resume fetches it again.
        self.progress.epoch, self.progress.images = epoch, int(keys[-1, 1]) + 1
        if self.augment_batch is not None:
            generator = torch.Generator(images.device).manual_seed(
                derive_seed(self.data.seed, BATCH, self._ranks()[1], epoch, position))
            images = self.augment_batch(images, generator=generator)
        return [images, targets, keys]
