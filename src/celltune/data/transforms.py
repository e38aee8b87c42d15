"""Train and eval presets on (C, H, W) float tensors, after torchvision's ``references/classification/presets.py``.

Cells have no orientation, so the training preset flips and rotates freely; the eval preset is resize + centre crop +
normalise with the statistics the pretrained weights were trained with. ``BatchAugment`` is the training preset on
whole uint8 batches of cached images, on their device. Test-time augmentation views act on batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, get_args

import torch
from torch.nn import functional as F
from torchvision.transforms import InterpolationMode, v2

from celltune.config import Augment, TtaMode

if TYPE_CHECKING:
    from celltune.models.checkpoint import ModelCard


def eval_geometry(*, image_size: int, interpolation: str = "bilinear") -> v2.Compose:
    """The eval preset's geometry: the short side resized to ``image_size``, then the centre square. The image cache
    is made with it, so cached and file-read images reach the model alike."""
    return v2.Compose([v2.Resize(image_size, interpolation=InterpolationMode(interpolation), antialias=True),
                       v2.CenterCrop(image_size)])


def eval_transform(
    *, image_size: int, mean: tuple[float, ...], std: tuple[float, ...], interpolation: str = "bilinear"
) -> v2.Compose:
    return v2.Compose([eval_geometry(image_size=image_size, interpolation=interpolation), v2.Normalize(mean, std)])


def card_transform(card: ModelCard):
    """The eval preset a checkpoint or export's card describes: its size, statistics and interpolation."""
    return eval_transform(image_size=card.image_size, mean=tuple(card.mean), std=tuple(card.std),
                          interpolation=card.interpolation)


def train_transform(
    *,
    image_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    interpolation: str = "bilinear",
    augment: Augment = Augment(),
    normalize: bool = True,
) -> v2.Compose:
    """Augmentation, then normalisation. ``normalize=False``: uint8 in, uint8 out, for the cached pipeline, where
    ``NormalizeBatch`` (or ``BatchAugment`` for random erasing, which erases to the mean) turns whole batches into
    normalised floats at once, on their device."""
    mode = InterpolationMode(interpolation)
    steps: list = []
    if augment.crop_scale < 1.0:
        steps.append(v2.RandomResizedCrop(image_size, scale=(augment.crop_scale, 1.0), interpolation=mode,
                                          antialias=True))
    else:
        steps.append(eval_geometry(image_size=image_size, interpolation=interpolation))
    if augment.affine_degrees or augment.affine_translate or augment.affine_scale:
        t, s = augment.affine_translate, augment.affine_scale
        steps.append(v2.RandomAffine(augment.affine_degrees, translate=(t, t) if t else None,
                                     scale=(1 - s, 1 + s) if s else None))
    if augment.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if augment.vflip:
        steps.append(v2.RandomVerticalFlip())
    if augment.rot90:
        steps.append(v2.RandomChoice([v2.RandomRotation((k * 90, k * 90)) for k in range(4)]))
    if augment.rotation:
        steps.append(v2.RandomRotation(augment.rotation, interpolation=InterpolationMode.BILINEAR))
    if augment.color_jitter:
        steps.append(v2.ColorJitter(brightness=augment.color_jitter, contrast=augment.color_jitter))
    if augment.randaugment_ops:
        # RandAugment's posterize/solarize/equalize are defined on 8-bit images.
        randaugment = v2.RandAugment(num_ops=augment.randaugment_ops, magnitude=augment.randaugment_magnitude)
        steps += ([v2.ToDtype(torch.uint8, scale=True), randaugment, v2.ToDtype(torch.float32, scale=True)]
                  if normalize else [randaugment])
    if normalize:
        steps.append(v2.Normalize(mean, std))
        if augment.random_erasing:
            steps.append(v2.RandomErasing(p=augment.random_erasing, value=0))  # 0: the mean, after normalisation
    return v2.Compose(steps)


class NormalizeBatch:
    """(x - 255 mean) / (255 std) on a whole (B, C, H, W) batch of 0-255 values (uint8 from the cache, or floats on
    that scale), on the batch's own device and in its memory format: cached batches cross to the device as uint8, a
    quarter of the bytes of float32, and become normalised floats there."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.mean = torch.tensor(mean).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std).view(1, -1, 1, 1) * 255

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        x = images.float()
        # uint8 became a new tensor to work in place on; a float input is left as it was.
        return (x.sub_(mean) if x is not images else x - mean).div_(std)


def _uniform(n: int, low: float, high: float, device: torch.device,
             generator: torch.Generator | None = None) -> torch.Tensor:
    return torch.empty(n, device=device).uniform_(low, high, generator=generator)


def _rotation(angle: torch.Tensor) -> torch.Tensor:
    """(B,) angles in radians -> (B, 3, 3) rotations of normalised image coordinates (square images)."""
    cos, sin, zero, one = angle.cos(), angle.sin(), torch.zeros_like(angle), torch.ones_like(angle)
    return torch.stack([cos, -sin, zero, sin, cos, zero, zero, zero, one], 1).view(-1, 3, 3)


def _affine(scale_x: torch.Tensor, scale_y: torch.Tensor, shift_x: torch.Tensor | None = None,
            shift_y: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) scales and shifts (none: 0) -> (B, 3, 3) axis-aligned affine maps of normalised image coordinates."""
    zero, one = torch.zeros_like(scale_x), torch.ones_like(scale_x)
    shift_x = zero if shift_x is None else shift_x
    shift_y = zero if shift_y is None else shift_y
    return torch.stack([scale_x, zero, shift_x, zero, scale_y, shift_y, zero, zero, one], 1).view(-1, 3, 3)


def _random_sign(n: int, on: bool, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n,) -1 or +1 with equal odds (a flip of that axis), or all +1 when ``on`` is False."""
    if not on:
        return torch.ones(n, device=device)
    return torch.where(torch.rand(n, device=device, generator=generator) < 0.5, -1.0, 1.0)


class BatchAugment:
    """``train_transform``'s augmentation and normalisation on a whole uint8 batch (B, C, S, S) of square images, on
    the batch's own device (the GPU when training on one): a worker no longer augments image by image.

    Crop, affine, flips, right-angle turns and rotation compose into one matrix per image, so each image is resampled
    once (bilinear, black outside the image, as torchvision fills uint8 images). RandomResizedCrop never shrinks here,
    as the cache holds images at the training size, so no antialiasing is lost. Then brightness/contrast (contrast
    around each image's mean over all channels), normalisation, random erasing (to 0 after normalisation, as
    torchvision's). RandAugment has no batch form: with it, augmentation stays per image (``train_transform`` with
    ``normalize=False``) and only erasing is left for the batch.
    """

    def __init__(self, augment: Augment, *, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        if augment.randaugment_ops:
            raise ValueError("RandAugment works image by image; use train_transform")
        self.augment = augment
        self.normalize = NormalizeBatch(mean, std)

    def _warp(self, n: int, device: torch.device, g: torch.Generator | None) -> torch.Tensor | None:
        """(n, 3, 3): output -> input coordinates in [-1, 1] (``F.affine_grid``'s convention), or None for identity."""
        a, matrices = self.augment, []
        if a.crop_scale < 1.0:
            # torchvision's RandomResizedCrop: area fraction uniform, aspect ratio log-uniform in [3/4, 4/3].
            area = _uniform(n, a.crop_scale, 1.0, device, g)
            ratio = torch.exp(_uniform(n, math.log(3 / 4), math.log(4 / 3), device, g))
            w, h = (area * ratio).sqrt().clamp(max=1.0), (area / ratio).sqrt().clamp(max=1.0)
            shift_x, shift_y = (1 - w) * _uniform(n, -1, 1, device, g), (1 - h) * _uniform(n, -1, 1, device, g)
            matrices.append(_affine(w, h, shift_x, shift_y))
        if a.affine_degrees or a.affine_translate or a.affine_scale:
            # RandomAffine moves the image by T R S; sampling needs the inverse, S^-1 R^-1 T^-1.
            t = 2 * a.affine_translate  # a fraction of the size is twice that in [-1, 1] coordinates
            zoom = _uniform(n, 1 - a.affine_scale, 1 + a.affine_scale, device, g)
            angle = torch.deg2rad(_uniform(n, -a.affine_degrees, a.affine_degrees, device, g))
            one = torch.ones_like(zoom)
            matrices += [_affine(1 / zoom, 1 / zoom), _rotation(-angle),
                         _affine(one, one, _uniform(n, -t, t, device, g), _uniform(n, -t, t, device, g))]
        if a.hflip or a.vflip:
            matrices.append(_affine(_random_sign(n, a.hflip, device, g), _random_sign(n, a.vflip, device, g)))
        if a.rot90:
            matrices.append(_rotation(torch.randint(0, 4, (n,), device=device, generator=g) * (math.pi / 2)))
        if a.rotation:
            matrices.append(_rotation(torch.deg2rad(_uniform(n, -a.rotation, a.rotation, device, g))))
        if not matrices:
            return None
        warp = matrices[0]
        for m in matrices[1:]:
            warp = warp @ m
        return warp

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, C, S, S) uint8 -> (B, C, S, S) float32, augmented and normalised, in the memory format of ``images``.
        Random draws come from ``generator`` (on the images' device), else the global generator."""
        a, n, device, g = self.augment, len(images), images.device, generator
        x = images.float()  # 0-255
        warp = self._warp(n, device, g)
        if warp is not None:
            grid = F.affine_grid(warp[:, :2], list(x.shape), align_corners=False)  # (B, S, S, 2)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            if images.is_contiguous(memory_format=torch.channels_last):
                x = x.contiguous(memory_format=torch.channels_last)
        if a.color_jitter:
            brightness = _uniform(n, 1 - a.color_jitter, 1 + a.color_jitter, device, g).view(-1, 1, 1, 1)
            contrast = _uniform(n, 1 - a.color_jitter, 1 + a.color_jitter, device, g).view(-1, 1, 1, 1)
            x = (x * brightness).clamp_(0, 255)
            mean = x.mean((1, 2, 3), keepdim=True)
            x = ((x - mean) * contrast + mean).clamp_(0, 255)
        x = self.normalize(x)
        if a.random_erasing:
            x.masked_fill_(self._erased(n, x.shape[-1], device, g)[:, None], 0.0)  # x is our own: in place
        return x

    def _erased(self, n: int, size: int, device: torch.device, g: torch.Generator | None) -> torch.Tensor:
        """(n, S, S) bool: with probability ``random_erasing`` one rectangle per image, torchvision's default shapes
        (area 2-33% of the image, aspect ratio 0.3-3.3)."""
        area = _uniform(n, 0.02, 0.33, device, g) * size * size
        ratio = torch.exp(_uniform(n, math.log(0.3), math.log(3.3), device, g))
        h = (area * ratio).sqrt().round().clamp(1, size)
        w = (area / ratio).sqrt().round().clamp(1, size)
        top = (torch.rand(n, device=device, generator=g) * (size - h + 1)).floor()
        left = (torch.rand(n, device=device, generator=g) * (size - w + 1)).floor()
        pos = torch.arange(size, device=device).view(1, -1)
        rows = (pos >= top[:, None]) & (pos < (top + h)[:, None])  # (n, S)
        cols = (pos >= left[:, None]) & (pos < (left + w)[:, None])
        chosen = torch.rand(n, device=device, generator=g) < self.augment.random_erasing
        return rows[:, :, None] & cols[:, None, :] & chosen[:, None, None]


def _flips(x: torch.Tensor) -> list[torch.Tensor]:
    return [x, x.flip(-1), x.flip(-2), x.flip(-2, -1)]


def _dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    return [torch.rot90(v, k, dims=(-2, -1)) for v in (x, x.flip(-1)) for k in range(4)]


# Test-time augmentation: each maps a (B, C, H, W) batch to the views whose predictions are averaged.
TTA_VIEWS: dict[str, Callable[[torch.Tensor], list[torch.Tensor]]] = {
    "none": lambda x: [x],
    "flips": _flips,  # identity, horizontal, vertical, both: 4 views
    "dihedral": _dihedral,  # the 8 symmetries of the square: 4 right-angle turns, each also mirrored
}
assert set(TTA_VIEWS) == set(get_args(TtaMode)), "the config's TTA choices and the views defined here differ"
