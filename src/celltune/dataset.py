"""The torch Dataset: a sample's file(s) -> (C, H, W) float tensor, mask, intensity step, transform; label -> target."""

from __future__ import annotations

from pathlib import Path

import torch

from celltune.channels import percentile_stretch, read_channels
from celltune.data import DataError, Sample, read_image


def load_input(path: Path, *, channels: list[str] | None = None, intensity: str = "scale",
               mask: Path | None = None) -> torch.Tensor:
    """(C, H, W) float32: RGB (grayscale repeated) when ``channels`` is None, else the named channels."""
    image = read_image(path) if channels is None else read_channels(path, channels)
    if intensity == "percentile":
        image = percentile_stretch(image)
    if mask is not None:
        image = apply_mask(image, mask)
    return image


def encode_target(label: int | tuple[int, ...], num_classes: int) -> int | torch.Tensor:
    """A class index stays as it is; a tuple of label ids becomes a (num_classes,) multi-hot float vector."""
    if isinstance(label, int):
        return label
    target = torch.zeros(num_classes)
    target[list(label)] = 1.0
    return target


def mask_paths(samples: list[Sample], *, data_root: str | Path, mask_dir: str | Path) -> list[Path]:
    """The mask of each sample: same relative path (or, failing that, same file name) under ``mask_dir``."""
    data_root, mask_dir = Path(data_root), Path(mask_dir)
    out = []
    for s in samples:
        candidates = [mask_dir / s.path.relative_to(data_root), mask_dir / s.path.name]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise DataError(f"{s.path}: no mask at {candidates[0]} or {candidates[1]}; add one or drop --mask-dir")
        out.append(found)
    return out


def apply_mask(image: torch.Tensor, mask_path: Path) -> torch.Tensor:
    """Zero the pixels where the mask is black; white keeps the image. (3, H, W) -> (3, H, W)."""
    mask = read_image(mask_path)[0] > 0.5  # (H, W); broadcasts over the channels
    if mask.shape != image.shape[1:]:
        raise DataError(f"{mask_path}: mask is {tuple(mask.shape)} but its image is {tuple(image.shape[1:])}")
    return image * mask


class CellDataset(torch.utils.data.Dataset):
    """(image, target) pairs. Masks (if any) black out background before ``transform`` maps the (C, H, W) float
    image to the model's input; multi-label targets are multi-hot vectors of ``num_classes``."""

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




class WithIndex(torch.utils.data.Dataset):
    """(image, target, index): lets distributed validation drop the images its sampler repeated as padding."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        image, target = self.dataset[i]
        return image, target, i
