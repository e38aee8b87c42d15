"""What the audit and the dataset summary know of each file, read once: size, mode, bit depth, format, frames, a
hash of the decoded pixels, and the grey thumbnail and perceptual hash that near-duplicate search compares."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from celltune.data.images import decoded, failure_reason
from celltune.errors import DataError

THUMB = 32  # side of the grey thumbnail that near-duplicate search compares
_BITS = {"1": 1, "I": 32, "F": 32}


@dataclass(frozen=True)
class ImageFacts:
    """One file as decoded once: what it is, or why it cannot be read."""

    path: Path
    error: str | None = None  # why the file cannot be read; the rest is then unset
    width: int = 0
    height: int = 0
    mode: str = ""
    bits: int = 0  # per channel
    format: str = ""
    frames: int = 1
    sha1: str = ""  # of the decoded pixels, shape and mode: equal for the same image saved in another file or format
    thumb: np.ndarray | None = None  # (THUMB, THUMB) uint8 grey, LANCZOS-resized as imagehash's phash does
    phash: int | None = None  # imagehash's 64-bit perceptual hash of the thumbnail, when asked for


def decoding_workers() -> int:
    """How many processes decode files at once by default (the audit's reads, the cache's build)."""
    return min(4, os.cpu_count() or 1)


def inspect_image(path: Path, *, phash: bool = True) -> ImageFacts:
    """Decode ``path`` fully (a truncated file fails here, not in the middle of training) and describe it; ``phash``:
    with the perceptual hash near-duplicate search compares (a DCT per image that training's checks do not need)."""
    import imagehash

    try:
        if path.stat().st_size == 0:
            return ImageFacts(path, error="empty file (0 bytes)")
        with decoded(path) as (img, frames, fmt):
            array = np.asarray(img)
            bits = 16 if img.mode.startswith("I;16") else _BITS.get(img.mode, 8)
            grey = array if array.ndim == 2 else array[..., :3].mean(axis=-1)
            scale = float(np.iinfo(array.dtype).max) if np.issubdtype(array.dtype, np.integer) else 1.0
            thumb = Image.fromarray((grey.astype(np.float64) / scale * 255).round().clip(0, 255).astype(np.uint8))
            thumb = thumb.resize((THUMB, THUMB), Image.Resampling.LANCZOS)
            return ImageFacts(path, width=img.width, height=img.height, mode=img.mode, bits=bits,
                              format=fmt or path.suffix.lstrip(".").upper(), frames=frames,
                              sha1=hashlib.sha1(array.tobytes() + f"{array.shape}{img.mode}".encode()).hexdigest(),
                              thumb=np.asarray(thumb),
                              phash=int(str(imagehash.phash(thumb)), 16) if phash else None)
    except DataError as err:
        return ImageFacts(path, error=str(err).removeprefix(f"{path}: "))
    except OSError as err:  # stat of a file that went away
        return ImageFacts(path, error=failure_reason(err))
