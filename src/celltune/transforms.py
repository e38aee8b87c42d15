"""Train and eval presets on (3, H, W) float tensors, after torchvision's ``references/classification/presets.py``.

Cells have no orientation, so the training preset flips and rotates freely; the eval preset is resize + centre crop +
normalise with the statistics the pretrained weights were trained with. Test-time augmentation views act on batches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torchvision.transforms import InterpolationMode, v2


@dataclass(frozen=True)
class Augment:
    hflip: bool = True
    vflip: bool = True
    rot90: bool = False  # one of the four right-angle turns, lossless
    rotation: float = 180.0  # degrees either way, any angle; 180 covers every orientation, 0 turns it off
    crop_scale: float = 0.8  # smallest area fraction for RandomResizedCrop; 1.0 turns the crop off
    affine_degrees: float = 0.0  # RandomAffine (the classic AlexNet recipe): rotation range, 0 with the rest off
    affine_translate: float = 0.0  # fraction of the size either way
    affine_scale: float = 0.0  # zoom range 1 +- this
    color_jitter: float = 0.0  # brightness and contrast strength, e.g. 0.3
    randaugment_ops: int = 0  # RandAugment operations per image; 0 turns it off
    randaugment_magnitude: int = 9
    random_erasing: float = 0.0  # probability of erasing one rectangle
    mixup: float = 0.0  # Mixup alpha (batch-level, in the training step); 0 turns it off
    cutmix: float = 0.0  # CutMix alpha


def eval_transform(
    *, image_size: int, mean: tuple[float, ...], std: tuple[float, ...], interpolation: str = "bilinear"
) -> v2.Compose:
    return v2.Compose([
        v2.Resize(image_size, interpolation=InterpolationMode(interpolation), antialias=True),
        v2.CenterCrop(image_size),
        v2.Normalize(mean, std),
    ])


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
    ``NormalizeBatch`` turns whole batches into normalised floats at once (cheaper than image by image)."""
    mode = InterpolationMode(interpolation)
    steps: list = []
    if augment.crop_scale < 1.0:
        steps.append(v2.RandomResizedCrop(image_size, scale=(augment.crop_scale, 1.0), interpolation=mode,
                                          antialias=True))
    else:
        steps += [v2.Resize(image_size, interpolation=mode, antialias=True), v2.CenterCrop(image_size)]
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
        steps.append(v2.RandomErasing(p=augment.random_erasing, value=0))
    return v2.Compose(steps)


class NormalizeBatch:
    """DataLoader collate for uint8 images: stack, then (x / 255 - mean) / std on the whole (B, C, H, W) batch."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.mean = torch.tensor(mean).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std).view(1, -1, 1, 1) * 255

    def __call__(self, batch: list) -> list:
        images, *rest = torch.utils.data.default_collate(batch)
        return [images.float().sub_(self.mean).div_(self.std), *rest]


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
