"""Decode once: images brought to the training size by the eval preset's geometry and kept on disk as uint8, in
shards of plain ``.npy`` files (read through ``dataset.CachedDataset``, one image per positioned read, so a process's
resident memory does not grow with the cache).

The directory name is a hash of every input file's path, size and modification time plus the preprocessing (size,
channels, intensity step, masks), so changing a file, a mask or an option builds a new cache instead of reusing a stale
one. Worker processes decode (a DataLoader), the main process appends their batches to the shards in order, and the
finished directory is renamed into place, so a reader never sees half a cache. Augmentation then runs on whole batches
straight from the shards. Values are stored with 8 bits per channel after the intensity step (use ``percentile``
intensity for dim 16-bit data).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from celltune.data.cache_folder import FORMAT, INDEX, default_cache_dir, held, touch
from celltune.data.image_facts import decoding_workers
from celltune.data.images import ChannelFiles, load_input
from celltune.data.samples import Sample
from celltune.data.transforms import eval_geometry
from celltune.errors import ConfigError, WriteError
from celltune.progress import bar

log = logging.getLogger(__name__)

SHARD_BYTES = 512 * 1024**2  # images per shard file: as many as fit in this
SPARE_BYTES = 1024**3  # left free on the cache's disk after building it


def cache_key(samples: list[Sample], masks: list[Path] | None, preprocessing: dict) -> str:
    h = hashlib.sha256(json.dumps({"format": FORMAT, **preprocessing}, sort_keys=True).encode())
    channel_files = ChannelFiles()
    for i, s in enumerate(samples):
        for f in channel_files.of(s.path) + ([masks[i]] if masks else []):
            st = f.stat()
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


@dataclass(frozen=True)
class ImageCache:
    """A built cache: ``count`` images of ``shape`` (C, S, S) uint8, ``per_shard`` in each ``shard-NNNNN.npy`` of
    ``directory`` (the last one holds the rest). Plain data, so it pickles small into loader workers."""

    directory: Path
    count: int
    shape: tuple[int, int, int]
    per_shard: int

    @property
    def image_bytes(self) -> int:
        return int(np.prod(self.shape))

    @property
    def shards(self) -> list[Path]:
        return [self.directory / f"shard-{k:05d}.npy" for k in range(-(-self.count // self.per_shard))]

    @classmethod
    def open(cls, directory: Path) -> ImageCache:
        index = json.loads((directory / INDEX).read_text())
        return cls(directory, index["count"], tuple(index["shape"]), index["per_shard"])

    def array(self) -> np.ndarray:
        """(N, C, S, S): every image, memory-mapped shard by shard and joined (a copy: for small caches and tests)."""
        return np.concatenate([np.load(s, mmap_mode="r") for s in self.shards])


def bytes_needed(images: int, *, in_chans: int, size: int) -> int:
    return images * in_chans * size * size


def free_bytes(directory: Path) -> int:
    """Free space on the disk that holds ``directory`` (or would: its nearest existing parent)."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return shutil.disk_usage(existing).free


def fits(needed: int, directory: Path) -> bool:
    return needed + SPARE_BYTES <= free_bytes(directory)


def space_error(needed: int, directory: Path) -> ConfigError:
    return ConfigError(f"{directory}: the image cache needs {needed / 1e9:.2f} GB and {SPARE_BYTES / 1e9:.1f} GB "
                       f"to spare, but the disk has {free_bytes(directory) / 1e9:.2f} GB free{held(directory)}; free "
                       "some space, give --cache-dir on a larger disk, or train with --cache off (every epoch then "
                       "decodes the files)")


class _Decoded(torch.utils.data.Dataset):
    """Each sample as the cache stores it: (C, size, size) uint8 after the intensity step, mask and eval geometry."""

    def __init__(self, samples: list[Sample], *, size: int, channels: list[str] | None, intensity: str,
                 masks: list[Path] | None, interpolation: str) -> None:
        self.samples, self.channels, self.intensity, self.masks = samples, channels, intensity, masks
        self.geometry = eval_geometry(image_size=size, interpolation=interpolation)  # short side, centre-crop

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = load_input(self.samples[i].path, channels=self.channels, intensity=self.intensity,
                           mask=self.masks[i] if self.masks else None)
        return (self.geometry(image).clamp(0, 1) * 255).round().to(torch.uint8)


def _write_shards(tmp: Path, decoded: _Decoded, shape: tuple[int, int, int], per_shard: int, workers: int) -> None:
    """Append the decoded batches, in order, to shard files under ``tmp``: plain sequential writes, so neither the
    page cache of a memory map nor the whole array ever sits in this process."""
    loader = torch.utils.data.DataLoader(decoded, batch_size=64, num_workers=workers, shuffle=False)
    shard, left, k = None, 0, 0
    try:
        with bar(len(decoded), "caching") as progress:
            for batch in loader:  # (B, C, S, S) uint8
                rows = batch.numpy()
                while len(rows):
                    if left == 0:
                        if shard:
                            shard.close()
                        count = min(per_shard, len(decoded) - k * per_shard)
                        shard = (tmp / f"shard-{k:05d}.npy").open("wb")
                        np.lib.format.write_array_header_1_0(shard, {"descr": "|u1", "fortran_order": False,
                                                                     "shape": (count, *shape)})
                        left, k = count, k + 1
                    take = rows[:left]
                    shard.write(np.ascontiguousarray(take).tobytes())  # type: ignore[union-attr]
                    left, rows = left - len(take), rows[len(take):]
                    progress.update(len(take))
    finally:
        if shard:
            shard.close()


def build_cache(samples: list[Sample], *, size: int, channels: list[str] | None, intensity: str,
                masks: list[Path] | None = None, interpolation: str = "bilinear", cache_dir: Path | None = None,
                workers: int | None = None, shard_bytes: int = SHARD_BYTES) -> ImageCache:
    """The cache of ``samples``, built unless an up-to-date one exists; refused before building when the disk lacks
    the space. ``workers`` decoding processes (default: up to 4)."""
    preprocessing = {"size": size, "channels": channels, "intensity": intensity, "interpolation": interpolation}
    directory = cache_dir or default_cache_dir()
    path = directory / cache_key(samples, masks, preprocessing)
    if (path / INDEX).is_file():
        log.info("image cache hit: %s", path)
        touch(path)  # last used now: `celltune cache --clear --older-than` keeps it
        return ImageCache.open(path)
    decoded = _Decoded(samples, size=size, channels=channels, intensity=intensity, masks=masks,
                       interpolation=interpolation)
    first = decoded[0]
    shape = (first.shape[0], size, size)
    needed = bytes_needed(len(samples), in_chans=shape[0], size=size)
    if not fits(needed, directory):
        raise space_error(needed, directory)
    per_shard = max(1, shard_bytes // bytes_needed(1, in_chans=shape[0], size=size))
    workers = decoding_workers() if workers is None else workers
    tmp = directory / f"{path.name}.{os.getpid()}.partial"
    try:
        tmp.mkdir(parents=True)
        _write_shards(tmp, decoded, shape, per_shard, workers if len(samples) > 256 else 0)
        (tmp / INDEX).write_text(json.dumps({"format": FORMAT, "count": len(samples), "shape": list(shape),
                                             "per_shard": per_shard, **preprocessing}) + "\n")
        try:
            tmp.rename(path)  # atomic: a reader never sees a half-written cache
        except OSError:
            if not (path / INDEX).is_file():  # not another process that finished the same cache first
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as err:  # a full disk, a read-only folder, a file where the folder should be
        with suppress(OSError):
            shutil.rmtree(tmp, ignore_errors=True)
        raise WriteError(f"{directory}: cannot write the image cache ({err}); free some space, choose another "
                         "--cache-dir, or train with --cache off") from err
    cache = ImageCache.open(path)
    log.info("image cache built: %s (%d images in %d shards, %.1f MB)", path, len(samples), len(cache.shards),
             needed / 1e6)
    return cache
