"""Finding labelled images on disk, reading them, and describing what was found.

Three layouts are recognised, in this order:

1. ICPR 2014 HEp-2: a CSV with ``Image ID,Image class`` rows (ids unpadded) beside ``training/``, ``validation/`` and
   ``test/`` folders of ``00001.png``-style files.
2. Class-per-folder trees under ``train/`` (or ``training/``), ``val/`` (``valid/``, ``validation/``) and ``test/``.
3. One class-per-folder tree, split into train/val/test by a seeded stratified split.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
SPLITS = ("train", "val", "test")
_SPLIT_DIRS = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}
_ICPR_HEADER = ("image id", "image class")


class DataError(ValueError):
    """Bad input data; the message names the file and what to do about it."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int


@dataclass
class LabelledSplits:
    """Samples per split (``train``/``val``/``test``) with the class names their labels index."""

    class_names: list[str]
    splits: dict[str, list[Sample]] = field(default_factory=dict)
    layout: str = ""

    def counts(self) -> dict[str, dict[str, int]]:
        """{split: {class name: count}} with every class present, zeros included."""
        out = {}
        for split, samples in self.splits.items():
            per_label = Counter(s.label for s in samples)
            out[split] = {name: per_label[i] for i, name in enumerate(self.class_names)}
        return out


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _split_dir(root: Path, split: str) -> Path | None:
    return next((root / d for d in _SPLIT_DIRS[split] if (root / d).is_dir()), None)


def _find_icpr_csv(root: Path) -> Path | None:
    for path in sorted(root.glob("*.csv")):
        with path.open(newline="") as f:
            header = next(csv.reader(f), [])
        if tuple(h.strip().lower() for h in header[:2]) == _ICPR_HEADER:
            return path
    return None


def _read_icpr(root: Path, csv_path: Path) -> LabelledSplits:
    labels: dict[int, str] = {}
    with csv_path.open(newline="") as f:
        rows = csv.reader(f)
        next(rows)
        for line, row in enumerate(rows, start=2):
            if not row:
                continue
            try:
                labels[int(row[0])] = row[1].strip()
            except (ValueError, IndexError) as err:
                raise DataError(f"{csv_path}:{line}: expected 'Image ID,Image class', got {row!r}") from err
    class_names = sorted(set(labels.values()))
    index = {c: i for i, c in enumerate(class_names)}
    out = LabelledSplits(class_names, layout=f"ICPR 2014 HEp-2 ({csv_path.name})")
    for split in SPLITS:
        folder = _split_dir(root, split)
        if folder is None:
            continue
        samples = []
        for path in _images_in(folder):
            try:
                image_id = int(path.stem)
            except ValueError as err:
                raise DataError(f"{path}: file name is not a numeric image id like 00001.png") from err
            if image_id not in labels:
                raise DataError(f"{path}: image id {image_id} has no row in {csv_path}; add it or remove the file")
            samples.append(Sample(path, index[labels[image_id]]))
        out.splits[split] = samples
    return out


def _class_folders(tree: Path) -> list[Path]:
    return sorted(d for d in tree.iterdir() if d.is_dir() and not d.name.startswith("."))


def _read_split_trees(root: Path) -> LabelledSplits:
    trees = {s: d for s in SPLITS if (d := _split_dir(root, s)) is not None}
    class_names = [d.name for d in _class_folders(trees["train"])]
    index = {c: i for i, c in enumerate(class_names)}
    out = LabelledSplits(class_names, layout="class folders per split")
    for split, tree in trees.items():
        samples = []
        for folder in _class_folders(tree):
            if folder.name not in index:
                raise DataError(
                    f"{folder}: class {folder.name!r} is not among the training classes {class_names}; "
                    f"add {trees['train'] / folder.name} or remove the folder"
                )
            samples += [Sample(p, index[folder.name]) for p in _images_in(folder)]
        out.splits[split] = samples
    return out


def stratified_split(
    labels: list[int], *, fractions: tuple[float, ...], seed: int
) -> list[list[int]]:
    """Indices per part, each class divided in the given fractions (the first part takes the remainder)."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    for members in by_class.values():
        order = rng.permutation(members).tolist()
        sizes = [round(f * len(order)) for f in fractions[1:]]
        start = len(order) - sum(sizes)
        parts[0] += order[:start]
        for part, size in zip(parts[1:], sizes, strict=True):
            part += order[start : start + size]
            start += size
    return [sorted(p) for p in parts]


def _read_single_tree(root: Path, *, val_fraction: float, test_fraction: float, seed: int) -> LabelledSplits:
    folders = _class_folders(root)
    class_names = [d.name for d in folders]
    samples = [Sample(p, i) for i, d in enumerate(folders) for p in _images_in(d)]
    parts = stratified_split(
        [s.label for s in samples], fractions=(1 - val_fraction - test_fraction, val_fraction, test_fraction), seed=seed
    )
    out = LabelledSplits(class_names, layout=f"one class-folder tree, stratified split (seed {seed})")
    for split, idx in zip(SPLITS, parts, strict=True):
        if idx:
            out.splits[split] = [samples[i] for i in idx]
    return out


def discover(
    root: str | Path, *, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0
) -> LabelledSplits:
    """Find the labelled images under ``root`` in any of the supported layouts."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder")
    if (csv_path := _find_icpr_csv(root)) is not None:
        found = _read_icpr(root, csv_path)
    elif _split_dir(root, "train") is not None:
        found = _read_split_trees(root)
    else:
        found = _read_single_tree(root, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    if len(found.class_names) < 2:
        raise DataError(
            f"{root}: found {len(found.class_names)} class(es); put each class's images in its own subfolder "
            "(root/CLASS/*.png or root/train/CLASS/*.png) or give an ICPR-style CSV"
        )
    for split in ("train", "val"):
        if not found.splits.get(split):
            raise DataError(f"{root}: the {split} split has no images ({found.layout})")
    log.info("%s: %s, %d classes, %s", root, found.layout, len(found.class_names),
             {s: len(v) for s, v in found.splits.items()})
    return found


# --- reading images ----------------------------------------------------------------------------------------------


def read_image(path: str | Path) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1]. 16-bit images keep their precision; grayscale is repeated to RGB."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode.startswith("I"):  # 16-bit (or 32-bit integer) grayscale
                array = np.asarray(img, dtype=np.float32)
                array /= 65535.0 if img.mode != "I" or array.max() > 255 else 255.0
            else:
                array = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: cannot read image ({err}); replace or remove the file") from err
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    # (H, W) grayscale is repeated to 3 channels; (H, W, 3) becomes (3, H, W).
    tensor = tensor.unsqueeze(0).expand(3, -1, -1) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    return tensor.contiguous()


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
    mask = read_image(mask_path)[0] > 0.5  # (H, W)
    if mask.shape != image.shape[1:]:
        raise DataError(f"{mask_path}: mask is {tuple(mask.shape)} but its image is {tuple(image.shape[1:])}")
    return image * mask


class CellDataset(torch.utils.data.Dataset):
    """(image, label) pairs; masks (if any) black out background before ``transform`` maps the (3, H, W) float
    image to the model's input."""

    def __init__(self, samples: list[Sample], transform=None, masks: list[Path] | None = None) -> None:
        self.samples = samples
        self.transform = transform
        self.masks = masks

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[i]
        image = read_image(sample.path)
        if self.masks is not None:
            image = apply_mask(image, self.masks[i])
        if self.transform is not None:
            image = self.transform(image)
        return image, sample.label


def summarize(found: LabelledSplits) -> dict:
    """Counts per class and split and image sizes; opens every file's header, so a corrupt file fails here."""
    sizes: Counter[tuple[int, int]] = Counter()
    modes: Counter[str] = Counter()
    for samples in found.splits.values():
        for s in samples:
            try:
                with Image.open(s.path) as img:
                    sizes[img.size] += 1
                    modes[img.mode] += 1
            except (OSError, UnidentifiedImageError) as err:
                raise DataError(f"{s.path}: cannot read image ({err}); replace or remove the file") from err
    widths = [w for (w, _), n in sizes.items() for _ in range(n)]
    heights = [h for (_, h), n in sizes.items() for _ in range(n)]
    return {
        "layout": found.layout,
        "classes": found.class_names,
        "counts": found.counts(),
        "totals": {split: len(samples) for split, samples in found.splits.items()},
        "image_sizes": {
            "most_common": [f"{w}x{h}" for (w, h), _ in sizes.most_common(3)],
            "min": [min(widths), min(heights)],
            "max": [max(widths), max(heights)],
        },
        "modes": dict(modes),
    }
