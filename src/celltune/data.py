"""Finding labelled images on disk (layouts -> ``LabelledSplits``) and describing what was found.

Four layouts are recognised, in this order:

1. ICPR 2014 HEp-2: a CSV with ``Image ID,Image class`` rows (ids unpadded) beside ``training/``, ``validation/`` and
   ``test/`` folders of ``00001.png``-style files.
2. Multi-label (Human Protein Atlas): a CSV with ``Id,Target`` rows, Target holding space-separated label ids, beside
   a folder of the CSV's name (``train.csv`` -> ``train/``) holding ``{Id}.png`` / ``{Id}.tif`` or one file per channel
   ``{Id}_red.png``...; split by iterative stratification.
3. Class-per-folder trees under ``train/`` (or ``training/``), ``val/`` (``valid/``, ``validation/``) and ``test/``.
4. One class-per-folder tree, split into train/val/test by a seeded stratified split.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

import numpy as np
from PIL import Image, UnidentifiedImageError

from celltune.config import DataConfig, Split
from celltune.errors import DataError
from celltune.images import IMAGE_SUFFIXES, ChannelFiles
from celltune.splits import iterative_split, stratified_split

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = get_args(Split)
_SPLIT_DIRS = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}
_ICPR_HEADER = ("image id", "image class")
_MULTILABEL_HEADER = ("id", "target")


@dataclass(frozen=True)
class Sample:
    path: Path  # an image file, or for per-channel files their common stem ({Id} of {Id}_red.png)
    label: int | tuple[int, ...]  # a class index, or the label ids of a multi-label image


@dataclass
class LabelledSplits:
    """Samples per split (``train``/``val``/``test``) with the class names their labels index."""

    class_names: list[str]
    splits: dict[str, list[Sample]] = field(default_factory=dict)
    layout: str = ""

    def class_indices(self, split: str) -> list[int]:
        """Single-label: the class index of every image of ``split``."""
        return [s.label for s in self.splits[split] if isinstance(s.label, int)]

    @property
    def multilabel(self) -> bool:
        return any(isinstance(s.label, tuple) for samples in self.splits.values() for s in samples)

    def counts(self) -> dict[str, dict[str, int]]:
        """{split: {class name: images}} with every class present, zeros included (multi-label: images per label)."""
        out = {}
        for split, samples in self.splits.items():
            per_label = Counter(lab for s in samples for lab in (s.label if isinstance(s.label, tuple) else [s.label]))
            out[split] = {name: per_label[i] for i, name in enumerate(self.class_names)}
        return out


def multi_hot(labels: list[tuple[int, ...]], num_classes: int) -> np.ndarray:
    """(N, num_classes) 0/1 matrix from each image's label ids."""
    y = np.zeros((len(labels), num_classes), dtype=np.int64)
    for i, labs in enumerate(labels):
        y[i, list(labs)] = 1
    return y


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _split_dir(root: Path, split: str) -> Path | None:
    return next((root / d for d in _SPLIT_DIRS[split] if (root / d).is_dir()), None)


def _find_csv(root: Path, header: tuple[str, str]) -> Path | None:
    for path in sorted(root.glob("*.csv")):
        with path.open(newline="") as f:
            first = next(csv.reader(f), [])
        if tuple(h.strip().lower() for h in first[:2]) == header:
            return path
    return None


def read_label_names(path: str | Path) -> dict[int, str]:
    """``id,name`` rows (a header row is skipped) -> {id: name}."""
    path = Path(path)
    names: dict[int, str] = {}
    with path.open(newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if len(row) < 2 or (line == 1 and not row[0].strip().isdigit()):
                continue
            try:
                names[int(row[0])] = row[1].strip()
            except ValueError as err:
                raise DataError(f"{path}:{line}: expected 'id,name', got {row!r}") from err
    return names


def _read_multilabel(root: Path, csv_path: Path, *, label_names: str | Path | None, val_fraction: float,
                     test_fraction: float, seed: int) -> LabelledSplits:
    folder = root / csv_path.stem if (root / csv_path.stem).is_dir() else root
    files = {p.stem: p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    channel_stems = {stem.rsplit("_", 1)[0] for stem in files if "_" in stem}
    samples: list[Sample] = []
    label_sets: list[tuple[int, ...]] = []
    for line, row in _csv_rows(csv_path):
        try:
            image_id, labels = row[0].strip(), tuple(sorted({int(t) for t in row[1].split()}))
        except (ValueError, IndexError) as err:
            raise DataError(f"{csv_path}:{line}: expected 'Id,Target' with space-separated label ids, "
                            f"got {row!r}") from err
        label_sets.append(labels)
        if image_id in files:
            samples.append(Sample(files[image_id], labels))
        elif image_id in channel_stems:
            samples.append(Sample(folder / image_id, labels))
        else:
            raise DataError(f"{folder / image_id}.png: no image (or {image_id}_<channel>.png files) for "
                            f"{csv_path}:{line}; add it or remove the row")
    names = read_label_names(label_names) if label_names else {}
    num_classes = max([*names, *(lab for labels in label_sets for lab in labels)]) + 1
    class_names = [names.get(i, str(i)) for i in range(num_classes)]
    parts = iterative_split(multi_hot(label_sets, num_classes),
                            fractions=(1 - val_fraction - test_fraction, val_fraction, test_fraction), seed=seed)
    out = LabelledSplits(class_names, layout=f"multi-label CSV ({csv_path.name}), iterative stratification "
                         f"(seed {seed})")
    for split, idx in zip(SPLITS, parts, strict=True):
        if idx:
            out.splits[split] = [samples[i] for i in idx]
    return out


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, row) of a CSV after its header, blank lines skipped."""
    with path.open(newline="") as f:
        rows = csv.reader(f)
        next(rows, None)
        for line, row in enumerate(rows, start=2):
            if row:
                yield line, row


def _read_icpr(root: Path, csv_path: Path) -> LabelledSplits:
    labels: dict[int, str] = {}
    for line, row in _csv_rows(csv_path):
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


def _read_single_tree(root: Path, *, val_fraction: float, test_fraction: float, seed: int) -> LabelledSplits:
    folders = _class_folders(root)
    class_names = [d.name for d in folders]
    pairs = [(p, i) for i, d in enumerate(folders) for p in _images_in(d)]
    samples = [Sample(p, i) for p, i in pairs]
    labels = [i for _, i in pairs]
    parts = stratified_split(
        labels, fractions=(1 - val_fraction - test_fraction, val_fraction, test_fraction), seed=seed
    )
    out = LabelledSplits(class_names, layout=f"one class-folder tree, stratified split (seed {seed})")
    for split, idx in zip(SPLITS, parts, strict=True):
        if idx:
            out.splits[split] = [samples[i] for i in idx]
    return out


def discover(
    root: str | Path, *, val_fraction: float = DataConfig.val_fraction,
    test_fraction: float = DataConfig.test_fraction, seed: int = 0,
    label_names: str | Path | None = None,
) -> LabelledSplits:
    """Find the labelled images under ``root`` in any of the supported layouts."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder")
    if (csv_path := _find_csv(root, _ICPR_HEADER)) is not None:
        found = _read_icpr(root, csv_path)
    elif (csv_path := _find_csv(root, _MULTILABEL_HEADER)) is not None:
        found = _read_multilabel(root, csv_path, label_names=label_names, val_fraction=val_fraction,
                                 test_fraction=test_fraction, seed=seed)
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


def summarize(found: LabelledSplits) -> dict:
    """Counts per class and split and image sizes; opens every file's header, so a corrupt file fails here."""
    sizes: Counter[tuple[int, int]] = Counter()
    modes: Counter[str] = Counter()
    channel_files = ChannelFiles()
    for samples in found.splits.values():
        for s in samples:
            try:
                with Image.open(next(iter(channel_files.of(s.path)), s.path)) as img:
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
