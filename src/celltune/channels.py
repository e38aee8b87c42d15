"""Multi-channel microscopy: one grayscale file per channel (``{id}_red.png``) or multi-page / multi-channel TIFF.

Pixel values stay in float32 at their full bit depth (a 16-bit count c becomes c / 65535, exact in float32) until the
intensity step, which is either that plain scaling, a per-image per-channel percentile stretch, or the plain scaling
followed by the dataset's own per-channel mean/std in place of the pretrained weights' statistics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from celltune.data import IMAGE_SUFFIXES, DataError, read_image

PERCENTILES = (1.0, 99.8)


def _dtype_scale(array: np.ndarray) -> float:
    if np.issubdtype(array.dtype, np.integer):
        return float(np.iinfo(array.dtype).max)
    return 1.0  # float images are taken as already in [0, 1]


def read_tiff(path: Path) -> torch.Tensor:
    """(C, H, W) float32 from a multi-page or multi-channel TIFF; (H, W, C) with C <= 8 is moved channel-first."""
    import tifffile

    try:
        array = tifffile.imread(path)
    except Exception as err:
        raise DataError(f"{path}: cannot read TIFF ({err}); replace or remove the file") from err
    array = np.squeeze(array)
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 3 and array.shape[-1] <= 8 and array.shape[0] > 8:
        array = np.moveaxis(array, -1, 0)
    elif array.ndim != 3:
        raise DataError(f"{path}: TIFF of shape {array.shape}; expected (C, H, W), (H, W, C) or (H, W)")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32) / _dtype_scale(array))


def _channel_file(stem: Path, channel: str) -> Path:
    for suffix in sorted(IMAGE_SUFFIXES):
        candidate = stem.with_name(f"{stem.name}_{channel}{suffix}")
        if candidate.is_file():
            return candidate
    raise DataError(f"{stem.with_name(f'{stem.name}_{channel}.png')}: channel file missing for image {stem.name}; "
                    "add it or choose other --channels")


def read_channels(path: Path, channels: list[str]) -> torch.Tensor:
    """(len(channels), H, W) float32.

    ``path`` is either a TIFF file (``channels`` are plane indices, e.g. ``0,1,2,3``) or the common stem of one
    grayscale file per channel (``channels`` are the name suffixes, e.g. ``red,green,blue,yellow``).
    """
    if path.is_file():
        planes = read_tiff(path) if path.suffix.lower() in (".tif", ".tiff") else read_image(path)
        try:
            index = [int(c) for c in channels]
        except ValueError as err:
            raise DataError(f"{path}: is one file, so --channels must be plane numbers like 0,1,2 (got {channels})") \
                from err
        if max(index) >= len(planes):
            raise DataError(f"{path}: has {len(planes)} channels; --channels asks for plane {max(index)}")
        return planes[index]
    layers = [read_image(_channel_file(path, c))[0] for c in channels]  # each (H, W); grayscale repeated -> take one
    shapes = {tuple(x.shape) for x in layers}
    if len(shapes) > 1:
        raise DataError(f"{path}: channel files differ in size {sorted(shapes)}")
    return torch.stack(layers)


def percentile_stretch(image: torch.Tensor, low: float = PERCENTILES[0], high: float = PERCENTILES[1]) -> torch.Tensor:
    """Per channel, map the ``low``..``high`` percentile range onto 0..1 (clipped). (C, H, W) -> (C, H, W)."""
    flat = image.flatten(1)
    q = torch.quantile(flat, torch.tensor([low / 100, high / 100]), dim=1)  # (2, C)
    lo, hi = q[0][:, None, None], q[1][:, None, None]
    return ((image - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)


def dataset_mean_std(images: list[torch.Tensor]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std over (C, H, W) images, every pixel weighted equally."""
    stacked = torch.cat([x.flatten(1) for x in images], dim=1)  # (C, total pixels)
    return stacked.mean(dim=1).tolist(), stacked.std(dim=1).clamp_min(1e-6).tolist()
