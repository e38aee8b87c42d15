"""Train and eval presets on (3, H, W) float tensors, after torchvision's ``references/classification/presets.py``.

Cells have no orientation, so the training preset flips and rotates freely; the eval preset is resize + centre crop +
normalise with the statistics the pretrained weights were trained with.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchvision.transforms import InterpolationMode, v2


@dataclass(frozen=True)
class Augment:
    hflip: bool = True
    vflip: bool = True
    rotation: float = 180.0  # degrees either way; 180 covers every orientation
    crop_scale: float = 0.8  # smallest area fraction for RandomResizedCrop; 1.0 turns the crop off


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
) -> v2.Compose:
    mode = InterpolationMode(interpolation)
    steps: list = []
    if augment.crop_scale < 1.0:
        steps.append(v2.RandomResizedCrop(image_size, scale=(augment.crop_scale, 1.0), interpolation=mode,
                                          antialias=True))
    else:
        steps += [v2.Resize(image_size, interpolation=mode, antialias=True), v2.CenterCrop(image_size)]
    if augment.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if augment.vflip:
        steps.append(v2.RandomVerticalFlip())
    if augment.rotation:
        steps.append(v2.RandomRotation(augment.rotation, interpolation=InterpolationMode.BILINEAR))
    steps.append(v2.Normalize(mean, std))
    return v2.Compose(steps)
