"""Finding labelled images: ``discover`` reads the layout on disk (``celltune.data.layouts``), gives each image its
group when groups are given (a pattern on its path, a path,group table, or a column of the layout's CSV), and makes the
train/val/test split where the layout has none: stratified, with groups kept whole. ``summarize`` describes it.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from celltune.config import DataConfig
from celltune.data.class_choice import CHOICE_FIELDS, EVERY_CLASS, ClassChoice, choose_classes
from celltune.data.image_facts import ImageFacts
from celltune.data.imagefiles import IMAGE_SUFFIXES, is_image_file
from celltune.data.images import ChannelFiles, image_header
from celltune.data.layouts import Found, read_layout
from celltune.data.samples import SPLITS, LabelledSplits, Sample, multi_hot
from celltune.data.splits import grouped_split, iterative_split, stratified_split
from celltune.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def _group_table(path: Path, root: Path) -> dict[str, str]:
    """{path relative to root: group} from ``path,group`` rows (a header row is skipped)."""
    table = {}
    with path.open(newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row or (line == 1 and [c.strip().lower() for c in row[:2]] == ["path", "group"]):
                continue
            if len(row) < 2:
                raise DataError(f"{path}:{line}: expected 'path,group', got {row!r}")
            key = Path(row[0].strip())
            table[(key.relative_to(root) if key.is_absolute() and key.is_relative_to(root) else key).as_posix()] = (
                row[1].strip())
    return table


def group_samples(found: Found, root: Path, *, pattern: str | None = None, source: str | None = None) -> Found:
    """``found`` with every sample's group: the first capture group of ``pattern`` (or its whole match) searched in
    the path relative to ``root``; or, with ``source``, a ``path,group`` CSV file or a column of the layout's CSV."""
    if pattern and source:
        raise ConfigError("give --groups or --groups-csv, not both")
    samples = found.pool if found.pool is not None else [s for v in (found.splits or {}).values() for s in v]
    if pattern:
        try:
            regex = re.compile(pattern)
        except re.error as err:
            raise ConfigError(f"--groups {pattern!r} is not a regular expression ({err})") from None

        def group_of(s: Sample) -> str | None:
            match = regex.search(s.path.relative_to(root).as_posix())
            return None if match is None else match.group(1 if regex.groups else 0)
    elif source and Path(source).is_file():
        table = _group_table(Path(source), root)

        def group_of(s: Sample) -> str | None:
            return table.get(s.path.relative_to(root).as_posix())
    elif source and found.columns and source in next(iter(found.columns.values())):

        def group_of(s: Sample) -> str | None:
            return found.columns.get(s.path, {}).get(source) or None
    else:
        where = f" nor a column of {found.csv_path.name}" if found.csv_path else ""
        raise ConfigError(f"--groups-csv {source}: not a file{where}; give a path,group CSV"
                          + (" or a column name" if where else ""))
    grouped = {s.path: group_of(s) for s in samples}
    missing = [s.path for s in samples if grouped[s.path] is None]
    if missing:
        how = f"the pattern {pattern!r}" if pattern else f"{source}"
        raise DataError(f"{missing[0]}: no group from {how} ({len(missing)} of {len(samples)} images have none); "
                        "fix the pattern or add their rows")

    def regroup(items: list[Sample]) -> list[Sample]:
        return [dataclasses.replace(s, group=grouped[s.path]) for s in items]

    return dataclasses.replace(found, pool=None if found.pool is None else regroup(found.pool),
                               splits=None if found.splits is None else {k: regroup(v) for k, v in
                                                                         found.splits.items()})


def split_samples(pool: list[Sample], num_classes: int, *, fractions: tuple[float, float, float],
                  seed: int) -> tuple[list[list[Sample]], str]:
    """(train, val, test samples, how): stratified, by iterative stratification for multi-label images, and with
    every group whole when the samples have groups."""
    multilabel = any(isinstance(s.label, tuple) for s in pool)
    labels = [s.label for s in pool]
    y = multi_hot(labels, num_classes) if multilabel else np.asarray(labels)  # type: ignore[arg-type]
    if pool and pool[0].group is not None:
        groups = [str(s.group) for s in pool]
        parts = grouped_split(y, groups, fractions=fractions, seed=seed)
        how = f"stratified group split, {len(set(groups))} groups"
    elif multilabel:
        parts, how = iterative_split(y, fractions=fractions, seed=seed), "iterative stratification"
    else:
        parts, how = stratified_split(y.tolist(), fractions=fractions, seed=seed), "stratified split"
    return [[pool[i] for i in idx] for idx in parts], how


def _split_pool(found: Found, *, val_fraction: float, test_fraction: float, seed: int) -> LabelledSplits:
    parts, how = split_samples(found.pool or [], len(found.class_names), seed=seed,
                               fractions=(1 - val_fraction - test_fraction, val_fraction, test_fraction))
    splits = {split: part for split, part in zip(SPLITS, parts, strict=True) if part or split == "val"}
    return LabelledSplits(found.class_names, splits, f"{found.layout}, {how} (seed {seed})", celltune_split=True)


def _read_grouped(root: Path, *, label_names: str | Path | None, groups: str | None,
                  groups_csv: str | None, choice: ClassChoice) -> tuple[Found, dict[str, dict]]:
    """The layout under ``root`` with the chosen classes, its samples grouped when ``groups`` or ``groups_csv`` is
    given; and the classes left out."""
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder")
    found = read_layout(root, label_names=label_names)
    found = group_samples(found, root, pattern=groups, source=groups_csv) if groups or groups_csv else found
    return choose_classes(found, choice, root=root)


def split_record(data: DataConfig) -> dict:
    """What makes a run's split, kept with its checkpoints so evaluation finds the same images
    (``discover_as_trained``): seed, fractions, groups and the classes chosen."""
    return {"split_seed": data.seed, "val_fraction": data.val_fraction, "test_fraction": data.test_fraction,
            "groups": data.groups, "groups_csv": data.groups_csv, **{k: getattr(data, k) for k in CHOICE_FIELDS}}


def discover(
    root: str | Path, *, val_fraction: float = DataConfig.val_fraction,
    test_fraction: float = DataConfig.test_fraction, seed: int = 0, label_names: str | Path | None = None,
    groups: str | None = None, groups_csv: str | None = None, choice: ClassChoice = EVERY_CLASS,
) -> LabelledSplits:
    """Find the labelled images under ``root`` in any of the supported layouts, with the classes ``choice`` keeps
    (``celltune.data.class_choice``), grouped when ``groups`` (a pattern) or ``groups_csv`` (a CSV file or column) is
    given, and split where the layout has no splits of its own."""
    root = Path(root)
    found, left_out = _read_grouped(root, label_names=label_names, groups=groups, groups_csv=groups_csv,
                                    choice=choice)
    if found.splits is not None:
        out = LabelledSplits(found.class_names, found.splits, found.layout)
    else:
        out = _split_pool(found, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    out.left_out_classes = left_out
    if len(out.class_names) < 2:
        raise DataError(
            f"{root}: found {len(out.class_names)} class(es); put each class's images in its own subfolder "
            "(root/CLASS/*.png or root/train/CLASS/*.png) or give an ICPR-style CSV"
        )
    # A validation split celltune left empty because no group could be spared for it trains without one.
    val_may_be_empty = found.splits is None and (groups or groups_csv)
    for split in ("train",) if val_may_be_empty else ("train", "val"):
        if not out.splits.get(split):
            raise DataError(f"{root}: the {split} split has no images ({out.layout})")
    log.info("%s: %s, %d classes, %s", root, out.layout, len(out.class_names),
             {s: len(v) for s, v in out.splits.items()})
    return out


class MaskFinder:
    """Where each image's mask is: in the mask folder, under the image's relative folder, the file of the image's
    name or else of its stem with any image extension (``cells/291.bmp`` -> ``masks/cells/291.png``); failing that,
    likewise at the mask folder's top. Each folder is listed once."""

    def __init__(self, data_root: Path, mask_dir: Path) -> None:
        self.data_root, self.mask_dir = data_root, mask_dir
        self._stems: dict[Path, dict[str, list[Path]]] = {}

    def _by_stem(self, folder: Path) -> dict[str, list[Path]]:
        if folder not in self._stems:
            stems: dict[str, list[Path]] = {}
            for f in sorted(folder.iterdir()) if folder.is_dir() else []:
                if is_image_file(f) and f.is_file():
                    stems.setdefault(f.stem, []).append(f)
            self._stems[folder] = stems
        return self._stems[folder]

    def candidates(self, image: Path) -> list[Path]:
        """The masks that fit ``image``: one, none, or (ambiguous) several."""
        rel = image.relative_to(self.data_root)
        stem = rel.stem if rel.suffix.lower() in IMAGE_SUFFIXES else rel.name  # per-channel images: a bare stem
        for folder in dict.fromkeys([self.mask_dir / rel.parent, self.mask_dir]):
            if (folder / rel.name).is_file():
                return [folder / rel.name]  # the image's own file name: no doubt which
            if found := self._by_stem(folder).get(stem):
                return found
        return []

    def of(self, image: Path) -> Path:
        found = self.candidates(image)
        if not found:
            rel = image.relative_to(self.data_root)
            raise DataError(f"{image}: no mask at {self.mask_dir / rel.parent / rel.stem}.<png|tif|bmp|jpg> or "
                            f"{self.mask_dir / rel.name}; add one or drop --mask-dir")
        if len(found) > 1:
            raise DataError(f"{image}: {len(found)} masks fit it, {found[0]} and {found[1]}; keep only one")
        return found[0]


def discover_as_trained(root: str | Path, saved: Mapping, *, defaults: DataConfig = DataConfig(),
                        label_names: str | Path | None = None) -> LabelledSplits:
    """The splits of ``root`` as the run behind ``saved`` (a checkpoint's data) made them, with its seed, fractions
    and groups, so that "test" means the same images; ``defaults`` for a checkpoint that saved none."""
    return discover(root, seed=saved.get("split_seed", defaults.seed),
                    val_fraction=saved.get("val_fraction", defaults.val_fraction),
                    test_fraction=saved.get("test_fraction", defaults.test_fraction),
                    groups=saved.get("groups"), groups_csv=saved.get("groups_csv"), label_names=label_names,
                    choice=_as_trained(saved))


def _as_trained(saved: Mapping) -> ClassChoice:
    """The classes of a run that chose some: those its model has (on its own data, the same images, so the same
    split); on other data, a class the model lacks is left out and one the data lacks is no error."""
    if not ClassChoice.of(saved) or not saved.get("class_names"):
        return EVERY_CLASS
    return ClassChoice(only=tuple(saved["class_names"]), strict=False)


def discover_pool(root: str | Path, *, label_names: str | Path | None = None, groups: str | None = None,
                  groups_csv: str | None = None, choice: ClassChoice = EVERY_CLASS) -> LabelledSplits:
    """Every labelled image under ``root`` (of the classes ``choice`` keeps) in one ``train`` split, whatever splits
    the layout has: the pool that cross-validation divides into folds."""
    root = Path(root)
    found, left_out = _read_grouped(root, label_names=label_names, groups=groups, groups_csv=groups_csv,
                                    choice=choice)
    pool = found.pool if found.pool is not None else [s for v in (found.splits or {}).values() for s in v]
    if len(found.class_names) < 2 or not pool:
        raise DataError(f"{root}: found {len(found.class_names)} class(es) and {len(pool)} images; cross-validation "
                        "needs labelled images of at least two classes")
    return LabelledSplits(found.class_names, {"train": pool}, f"{found.layout}, all splits pooled",
                          celltune_split=True, left_out_classes=left_out)


def mask_paths(samples: list[Sample], *, data_root: str | Path, mask_dir: str | Path) -> list[Path]:
    """The mask of each sample (see ``MaskFinder``); a missing or ambiguous one is an error naming the files."""
    finder = MaskFinder(Path(data_root), Path(mask_dir))
    return [finder.of(s.path) for s in samples]


def summarize(found: LabelledSplits, facts: Mapping[Path, ImageFacts] | None = None) -> dict:
    """Counts per class and split and image sizes. Sizes and modes come from ``facts`` (an audit's) where given, else
    from every file's header, so a corrupt file fails here."""
    sizes: Counter[tuple[int, int]] = Counter()
    modes: Counter[str] = Counter()
    channel_files = ChannelFiles()
    for samples in found.splits.values():
        for s in samples:
            path = next(iter(channel_files.of(s.path)), s.path)
            if facts is not None and path in facts and facts[path].error is None:
                sizes[facts[path].width, facts[path].height] += 1
                modes[facts[path].mode] += 1
                continue
            size, mode = image_header(path)
            sizes[size] += 1
            modes[mode] += 1
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
        **({"groups": {split: len({s.group for s in samples}) for split, samples in found.splits.items()}}
           if any(s.group is not None for s in found.samples) else {}),
        **({"classes_left_out": found.left_out_classes} if found.left_out_classes else {}),
    }
