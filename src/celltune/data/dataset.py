"""torch Datasets of samples: read from their files (``CellDataset``) or from the decoded cache (``CachedDataset``),
with labels encoded as the loss wants them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from celltune.data.cache import ImageCache
from celltune.data.images import load_input
from celltune.data.samples import Sample, multi_hot
from celltune.errors import DataError


def encode_target(label: int | tuple[int, ...], num_classes: int) -> int | torch.Tensor:
    """A class index stays as it is; a tuple of label ids becomes a (num_classes,) multi-hot float vector."""
    if isinstance(label, int):
        return label
    return torch.from_numpy(multi_hot([label], num_classes)[0]).float()


class CellDataset(torch.utils.data.Dataset):
    """(image, target) pairs read from the files. Masks (if any) black out background before ``transform`` maps the
    (C, H, W) float image to the model's input; multi-label targets are multi-hot vectors of ``num_classes``."""

    def __init__(self, samples: list[Sample], transform=None, masks: list[Path] | None = None, *,
                 channels: list[str] | None = None, intensity: str = "scale", num_classes: int = 0) -> None:
        self.samples = samples
        self.transform = transform
        self.masks = masks
        self.channels = channels
        self.intensity = intensity
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int | torch.Tensor]:
        sample = self.samples[i]
        image = load_input(sample.path, channels=self.channels, intensity=self.intensity,
                           mask=self.masks[i] if self.masks is not None else None)
        if self.transform is not None:
            image = self.transform(image)
        return image, encode_target(sample.label, self.num_classes)


class CachedDataset(torch.utils.data.Dataset):
    """(image, target) from the cache (``celltune.data.cache``): the uint8 (C, size, size) image, through ``transform``
    if any (per-image uint8 augmentation, with RandAugment). Batches are then augmented and normalised whole, on the
    device, by ``transforms.BatchAugment`` or ``transforms.NormalizeBatch``.

    Each image is one positioned read from its shard (the page cache keeps what is read often; nothing is mapped into
    the process), and the shards are opened lazily in each process, so the dataset pickles small (DataLoader workers,
    ddp_spawn).
    """

    def __init__(self, cache: ImageCache, samples: list[Sample], transform=None, *, num_classes: int = 0) -> None:
        self.cache = cache
        self.labels = [s.label for s in samples]
        self.transform = transform
        self.num_classes = num_classes
        self._files: list[tuple[int, int]] | None = None  # (file descriptor, header bytes) per shard

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_files": None}

    def __del__(self) -> None:
        for fd, _ in self._files or []:
            os.close(fd)

    def _open(self) -> list[tuple[int, int]]:
        files = []
        for shard in self.cache.shards:
            with shard.open("rb") as f:
                np.lib.format.read_magic(f)
                np.lib.format.read_array_header_1_0(f)
                header = f.tell()
            files.append((os.open(shard, os.O_RDONLY), header))
        return files

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int | torch.Tensor]:
        if self._files is None:
            self._files = self._open()
        fd, header = self._files[i // self.cache.per_shard]
        size = self.cache.image_bytes
        buffer = bytearray(size)
        if os.preadv(fd, [buffer], header + (i % self.cache.per_shard) * size) != size:
            raise DataError(f"{self.cache.directory}: a shard of the image cache is shorter than its index says; "
                            "delete the folder to build it again")
        image = torch.frombuffer(buffer, dtype=torch.uint8).view(self.cache.shape)  # (C, size, size)
        if self.transform is not None:
            image = self.transform(image)
        return image, encode_target(self.labels[i], self.num_classes)


class WithIndex(torch.utils.data.Dataset):
    """(image, target, index): lets distributed validation drop the images its sampler repeated as padding."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        image, target = self.dataset[i]
        return image, target, i
