"""Decode once: small images brought to the training size by the eval preset's geometry and kept as one uint8
memory-mapped array on disk (read through ``dataset.CachedDataset``).

The file name is a hash of every input file's path, size and modification time plus the preprocessing (size,
channels, intensity step, masks), so changing a file, a mask or an option builds a new cache instead of reusing a stale
one. Augmentation then runs on whole batches straight from the array. Values are stored with 8 bits per channel after
the intensity step (use ``percentile`` intensity for dim 16-bit data).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from contextlib import suppress
from pathlib import Path

import numpy as np
import torch

from celltune.errors import WriteError
from celltune.images import ChannelFiles, load_input
from celltune.progress import bar
from celltune.samples import Sample
from celltune.transforms import eval_geometry

log = logging.getLogger(__name__)

FORMAT = 1
AUTO_LIMIT_BYTES = 2 * 1024**3  # "auto" caches datasets up to this size at the training resolution


def default_cache_dir() -> Path:
    if env := os.environ.get("CELLTUNE_CACHE_DIR"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "celltune"


def cache_key(samples: list[Sample], masks: list[Path] | None, preprocessing: dict) -> str:
    h = hashlib.sha256(json.dumps({"format": FORMAT, **preprocessing}, sort_keys=True).encode())
    channel_files = ChannelFiles()
    for i, s in enumerate(samples):
        for f in channel_files.of(s.path) + ([masks[i]] if masks else []):
            st = f.stat()
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def build_cache(samples: list[Sample], *, size: int, channels: list[str] | None, intensity: str,
                masks: list[Path] | None = None, interpolation: str = "bilinear",
                cache_dir: Path | None = None) -> Path:
    """The path of a (N, C, size, size) uint8 ``.npy`` for ``samples``, built unless an up-to-date one exists."""
    preprocessing = {"size": size, "channels": channels, "intensity": intensity, "interpolation": interpolation}
    directory = cache_dir or default_cache_dir()
    path = directory / f"{cache_key(samples, masks, preprocessing)}.npy"
    if path.is_file():
        log.info("image cache hit: %s", path)
        return path
    first = load_input(samples[0].path, channels=channels, intensity=intensity, mask=masks[0] if masks else None)
    geometry = eval_geometry(image_size=size, interpolation=interpolation)  # resize the short side, centre-crop
    tmp = path.with_suffix(f".{os.getpid()}.partial")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                          shape=(len(samples), len(first), size, size))
        with bar(len(samples), "caching") as progress:
            for i, s in enumerate(samples):
                image = first if i == 0 else load_input(s.path, channels=channels, intensity=intensity,
                                                         mask=masks[i] if masks else None)
                array[i] = (geometry(image).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
                progress.update()
        array.flush()
        del array
        tmp.replace(path)  # atomic: a reader never sees a half-written cache
    except OSError as err:  # a full disk, a read-only folder, a file where the folder should be
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise WriteError(f"{directory}: cannot write the image cache ({err}); free some space, choose another "
                         "--cache-dir, or train with --cache off") from err
    log.info("image cache built: %s (%d images, %.1f MB)", path, len(samples), path.stat().st_size / 1e6)
    return path
