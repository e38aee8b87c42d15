"""Pixels: reading image files into float tensors, channels, bit depth, intensity and masks.

Every image reaches the model through ``load_input``: one file read as RGB (grayscale repeated), or the named
channels of one grayscale file per channel (``{stem}_red.png``) or of a multi-page / multi-channel TIFF. Values stay
in float32 at their full bit depth (a 16-bit count c becomes c / 65535, exact in float32) until the intensity step:
that plain scaling, a per-image per-channel percentile stretch, or the plain scaling followed by the dataset's own
per-channel mean/std in place of the pretrained weights' statistics (see ``dataset_mean_std``).
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps

from celltune._moved import forward
from celltune.data.imagefiles import IMAGE_SUFFIXES, is_image_file
from celltune.errors import DataError

PERCENTILES = (1.0, 99.8)


def names_channel_files(channels: list[str] | None) -> bool:
    """What ``channels`` means: True for names of per-channel files (``red`` of ``{stem}_red.png``); False for plane
    numbers of one file (``0,1,2``) or, with None, RGB from one file."""
    return channels is not None and not all(c.isdigit() for c in channels)


def set_max_image_pixels(limit: int | None) -> None:
    """The largest image (width x height) any reader opens; larger ones are refused before their pixels are decoded,
    which guards against decompression bombs (a small file that decodes to gigabytes). PIL's own global setting, so
    forked loader and audit workers inherit it; None or 0 lifts the limit."""
    Image.MAX_IMAGE_PIXELS = limit or None


def _too_large(width: int, height: int) -> str | None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        return (f"{width}x{height} = {width * height:,} pixels, above the limit of {limit:,} that guards against "
                "decompression bombs; if you trust the file, raise --max-image-pixels")
    return None


def _opened(path: Path) -> Image.Image:
    """``path`` opened by its content (whatever its extension says), its header read and its size checked against
    the pixel limit; no pixel decoded yet. Fed damaged or hostile bytes, PIL raises many exception types beyond
    ``OSError``: every one is a ``DataError`` naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as err:  # PIL's own check, at twice the limit: "Image size (N pixels) ..."
        pixels = re.search(r"\((\d+) pixels\)", str(err))
        size = f"{int(pixels[1]):,} pixels" if pixels else "too many pixels"
        raise DataError(f"{path}: {size}, above the limit of {Image.MAX_IMAGE_PIXELS:,} that guards against "
                        "decompression bombs; if you trust the file, raise --max-image-pixels") from None
    except Exception as err:
        empty = path.is_file() and path.stat().st_size == 0
        why = "empty file, 0 bytes" if empty else failure_reason(err)
        raise DataError(f"{path}: cannot read image ({why}); replace or remove the file") from err
    if (reason := _too_large(img.width, img.height)) is not None:
        img.close()
        raise DataError(f"{path}: {reason}")
    return img


def image_header(path: Path) -> tuple[tuple[int, int], str]:
    """((width, height), mode) from the header alone."""
    with _opened(path) as img:
        return img.size, img.mode


@contextlib.contextmanager
def decoded(path: Path) -> Iterator[tuple[Image.Image, int, str]]:
    """``path`` decoded (see ``_opened``) and turned as its EXIF orientation says, as a viewer shows it. Yields (the
    first frame, the number of frames, the format found in the content)."""
    with _opened(path) as img:
        try:
            frames, fmt = getattr(img, "n_frames", 1), img.format or ""
            img.load()
            turned = ImageOps.exif_transpose(img) if img.getexif().get(ExifTags.Base.Orientation, 1) != 1 else img
        except Exception as err:
            raise DataError(f"{path}: cannot read image ({failure_reason(err)}); replace or remove the file") from err
        yield turned, frames, fmt


def failure_reason(err: BaseException) -> str:
    return str(err) or type(err).__name__


_ALPHA = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


def _rgb(img: Image.Image) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] from any 8-bit mode: CMYK and YCbCr converted, palettes looked up, and
    transparent pixels (alpha, or a palette's transparency) composited onto black, the background a mask gives."""
    if img.mode in _ALPHA or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        return rgba[..., :3] * rgba[..., 3:]
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def read_image(path: str | Path) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1]. 16-bit images keep their precision; grayscale is repeated to RGB. A file of
    several frames (multi-page TIFF, animated GIF or PNG) is refused: which frame is the image is not for celltune
    to guess."""
    path = Path(path)
    with decoded(path) as (img, frames, fmt):
        if frames > 1:
            how = ("pass --channels 0,1,... to read its pages as channels" if fmt == "TIFF" else
                   "celltune classifies still images: save the frame to classify as a file of its own")
            raise DataError(f"{path}: {frames} {'pages' if fmt == 'TIFF' else 'frames'} in one file; {how}")
        if img.mode.startswith("I"):  # 16-bit (or 32-bit integer) grayscale
            array = np.asarray(img, dtype=np.float32)
            array /= 65535.0 if img.mode != "I" or array.max() > 255 else 255.0
        else:
            array = _rgb(img)
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    # (H, W) grayscale is repeated to 3 channels; (H, W, 3) becomes (3, H, W).
    tensor = tensor.unsqueeze(0).expand(3, -1, -1) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    return tensor.contiguous()


def _dtype_scale(array: np.ndarray) -> float:
    if np.issubdtype(array.dtype, np.integer):
        return float(np.iinfo(array.dtype).max)
    return 1.0  # float images are taken as already in [0, 1]


def _is_tiff(path: Path) -> bool:
    """By the content's magic bytes (classic or BigTIFF, either byte order), not the extension."""
    with path.open("rb") as f:
        return f.read(4) in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")


def read_tiff(path: Path) -> torch.Tensor:
    """(C, H, W) float32 from a multi-page or multi-channel TIFF; (H, W, C) with C <= 8 is moved channel-first."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            shape = tif.series[0].shape
            # (..., H, W) or (H, W, C<=8): the plane's size is checked before the pixels are read
            height, width = shape[-3:-1] if len(shape) >= 3 and shape[-1] <= 8 else shape[-2:]
            if (reason := _too_large(width, height)) is not None:
                raise DataError(f"{path}: {reason}")
            array = tif.series[0].asarray()
    except DataError:
        raise
    except Exception as err:  # tifffile raises many types for damaged files
        raise DataError(f"{path}: cannot read TIFF ({failure_reason(err)}); replace or remove the file") from err
    array = np.squeeze(array)
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 3 and array.shape[-1] <= 8 and array.shape[0] > 8:
        array = np.moveaxis(array, -1, 0)
    elif array.ndim != 3:
        raise DataError(f"{path}: TIFF of shape {array.shape}; expected (C, H, W), (H, W, C) or (H, W)")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32) / _dtype_scale(array))


class ChannelFiles:
    """The file(s) behind each sample: the image itself, or its per-channel files ``{stem}_{channel}.png``. Each
    folder is listed once, however many samples it holds (a glob per sample would list it once per sample)."""

    def __init__(self) -> None:
        self._folders: dict[Path, dict[str, list[Path]]] = {}

    def of(self, path: Path) -> list[Path]:
        """``[path]`` for an image file, else the sorted channel files of the stem ``path`` ([] if none)."""
        if path.is_file():
            return [path]
        if path.parent not in self._folders:
            stems: dict[str, list[Path]] = {}
            for f in sorted(path.parent.iterdir()):
                if "_" in f.stem and is_image_file(f):
                    stems.setdefault(f.stem.rsplit("_", 1)[0], []).append(f)
            self._folders[path.parent] = stems
        return self._folders[path.parent].get(path.name, [])


def _channel_file(stem: Path, channel: str) -> Path:
    for suffix in sorted(IMAGE_SUFFIXES):
        candidate = stem.with_name(f"{stem.name}_{channel}{suffix}")
        if candidate.is_file():
            return candidate
    raise DataError(f"{stem.with_name(f'{stem.name}_{channel}.png')}: channel file missing for image {stem.name}; "
                    "add it or choose other --channels")


def read_channels(path: Path, channels: list[str]) -> torch.Tensor:
    """(len(channels), H, W) float32.

    ``path`` is either one file (a TIFF's planes or an image's colour channels; ``channels`` are plane numbers such
    as ``0,1,2,3``) or the common stem of one grayscale file per channel (``channels`` are the name suffixes, such as
    ``red,green,blue,yellow``).
    """
    if path.is_file():
        if names_channel_files(channels):
            raise DataError(f"{path}: is one file, so --channels must be plane numbers like 0,1,2 (got {channels})")
        planes = read_tiff(path) if _is_tiff(path) else read_image(path)
        index = [int(c) for c in channels]
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


def apply_mask(image: torch.Tensor, mask_path: Path) -> torch.Tensor:
    """Zero the pixels where the mask is black; white keeps the image. (C, H, W) -> (C, H, W)."""
    mask = read_image(mask_path)[0] > 0.5  # (H, W); broadcasts over the channels
    if mask.shape != image.shape[1:]:
        raise DataError(f"{mask_path}: mask is {tuple(mask.shape)} but its image is {tuple(image.shape[1:])}")
    return image * mask


def load_input(path: Path, *, channels: list[str] | None = None, intensity: str = "scale",
               mask: Path | None = None) -> torch.Tensor:
    """(C, H, W) float32: RGB (grayscale repeated) when ``channels`` is None, else the named channels; then the
    intensity step and the mask."""
    image = read_image(path) if channels is None else read_channels(path, channels)
    if intensity == "percentile":
        image = percentile_stretch(image)
    if mask is not None:
        image = apply_mask(image, mask)
    return image


# celltune 0.1 read each file's facts here (now celltune.data.image_facts): those names, for one release
__getattr__ = forward(__name__, "celltune.data.image_facts")
