"""The layouts celltune reads labelled images from, recognised in this order:

1. ICPR 2014 HEp-2: a CSV with ``Image ID,Image class`` rows (ids unpadded) beside ``training/``, ``validation/`` and
   ``test/`` folders of ``00001.png``-style files.
2. Multi-label (Human Protein Atlas): a CSV with ``Id,Target`` rows, Target holding space-separated label ids, beside
   a folder of the CSV's name (``train.csv`` -> ``train/``) holding ``{Id}.png`` / ``{Id}.tif`` or one file per channel
   ``{Id}_red.png``...
3. Class-per-folder trees under ``train/`` (or ``training/``), ``val/`` (``valid/``, ``validation/``) and ``test/``
   (``testing/``).
4. One class-per-folder tree.

A reader returns what it ``Found``: the splits the layout makes (1, 3) or the pool of images celltune splits (2, 4).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from celltune.data.imagefiles import is_hidden, is_image_file
from celltune.data.samples import SPLITS, Sample
from celltune.errors import DataError

_SPLIT_DIRS = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}
_ICPR_HEADER = ("image id", "image class")
_MULTILABEL_HEADER = ("id", "target")


@dataclass
class Found:
    """What a layout holds, before celltune divides anything."""

    class_names: list[str]
    layout: str
    splits: dict[str, list[Sample]] | None = None  # the layout's own splits
    pool: list[Sample] | None = None  # images that celltune splits
    csv_path: Path | None = None  # the layout's CSV, whose columns can name groups
    columns: dict[Path, dict[str, str]] = field(default_factory=dict)  # each image's CSV row, by column name


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_image_file(p) and p.is_file())


def _split_dir(root: Path, split: str) -> Path | None:
    return next((root / d for d in _SPLIT_DIRS[split] if (root / d).is_dir()), None)


def _find_csv(root: Path, header: tuple[str, str]) -> Path | None:
    for path in sorted(p for p in root.glob("*.csv") if not is_hidden(p.name)):
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


def _read_multilabel(root: Path, csv_path: Path, *, label_names: str | Path | None) -> Found:
    folder = root / csv_path.stem if (root / csv_path.stem).is_dir() else root
    files = {p.stem: p for p in folder.iterdir() if is_image_file(p)}
    channel_stems = {stem.rsplit("_", 1)[0] for stem in files if "_" in stem}
    samples: list[Sample] = []
    label_sets: list[tuple[int, ...]] = []
    header, rows = _csv_rows(csv_path)
    columns: dict[Path, dict[str, str]] = {}
    for line, row in rows:
        try:
            image_id, labels = row[0].strip(), tuple(sorted({int(t) for t in row[1].split()}))
        except (ValueError, IndexError) as err:
            raise DataError(f"{csv_path}:{line}: expected 'Id,Target' with space-separated label ids, "
                            f"got {row!r}") from err
        if not (folder / image_id).resolve().is_relative_to(folder.resolve()) or Path(image_id).is_absolute():
            raise DataError(f"{csv_path}:{line}: Id {image_id!r} resolves outside the data folder {folder}; refused. "
                            "Ids name image files inside it (without their extension)")
        label_sets.append(labels)
        if image_id in files:
            samples.append(Sample(files[image_id], labels))
        elif image_id in channel_stems:
            samples.append(Sample(folder / image_id, labels))
        else:
            raise DataError(f"{folder / image_id}.png: no image (or {image_id}_<channel>.png files) for "
                            f"{csv_path}:{line}; add it or remove the row")
        columns[samples[-1].path] = dict(zip(header, row, strict=False))
    names = read_label_names(label_names) if label_names else {}
    num_classes = max([*names, *(lab for labels in label_sets for lab in labels)]) + 1
    class_names = [names.get(i, str(i)) for i in range(num_classes)]
    return Found(class_names, f"multi-label CSV ({csv_path.name})", pool=samples, csv_path=csv_path, columns=columns)


def _csv_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(the header's column names, [(line number, row)] after it, blank lines skipped)."""
    with path.open(newline="") as f:
        rows = csv.reader(f)
        header = [h.strip() for h in next(rows, [])]
        return header, [(line, row) for line, row in enumerate(rows, start=2) if row]


def _read_icpr(root: Path, csv_path: Path) -> Found:
    labels: dict[int, str] = {}
    header, rows = _csv_rows(csv_path)
    row_of: dict[int, list[str]] = {}
    for line, row in rows:
        try:
            labels[int(row[0])] = row[1].strip()
        except (ValueError, IndexError) as err:
            raise DataError(f"{csv_path}:{line}: expected 'Image ID,Image class', got {row!r}") from err
        row_of[int(row[0])] = row
    class_names = sorted(set(labels.values()))
    index = {c: i for i, c in enumerate(class_names)}
    splits: dict[str, list[Sample]] = {}
    columns: dict[Path, dict[str, str]] = {}
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
            columns[path] = dict(zip(header, row_of[image_id], strict=False))
        splits[split] = samples
    return Found(class_names, f"ICPR 2014 HEp-2 ({csv_path.name})", splits=splits, csv_path=csv_path, columns=columns)


def _class_folders(tree: Path) -> list[Path]:
    return sorted(d for d in tree.iterdir() if d.is_dir() and not is_hidden(d.name))


def _read_split_trees(root: Path) -> Found:
    trees = {s: d for s in SPLITS if (d := _split_dir(root, s)) is not None}
    class_names = [d.name for d in _class_folders(trees["train"])]
    index = {c: i for i, c in enumerate(class_names)}
    splits: dict[str, list[Sample]] = {}
    for split, tree in trees.items():
        samples = []
        for folder in _class_folders(tree):
            if folder.name not in index:
                raise DataError(
                    f"{folder}: class {folder.name!r} is not among the training classes {class_names}; "
                    f"add {trees['train'] / folder.name} or remove the folder"
                )
            samples += [Sample(p, index[folder.name]) for p in _images_in(folder)]
        splits[split] = samples
    return Found(class_names, "class folders per split", splits=splits)


def _read_single_tree(root: Path) -> Found:
    folders = _class_folders(root)
    pool = [Sample(p, i) for i, d in enumerate(folders) for p in _images_in(d)]
    return Found([d.name for d in folders], "one class-folder tree", pool=pool)


def read_layout(root: Path, *, label_names: str | Path | None = None) -> Found:
    """The labelled images under ``root`` in the first layout that fits."""
    if (csv_path := _find_csv(root, _ICPR_HEADER)) is not None:
        return _read_icpr(root, csv_path)
    if (csv_path := _find_csv(root, _MULTILABEL_HEADER)) is not None:
        return _read_multilabel(root, csv_path, label_names=label_names)
    if _split_dir(root, "train") is not None:
        return _read_split_trees(root)
    return _read_single_tree(root)
