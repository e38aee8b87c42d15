"""What ``celltune check`` says of the groups (patients, slides, fields) of a dataset: how many images each holds of
each class, the groups that hold a single class (a model can learn the group instead of the class), a split that
whole groups cannot make (reported as a finding rather than stopping the check), and, where no groups are given,
sources that the file names reveal and the split divides (a split by cell rather than by source image)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path
from statistics import median

from celltune.audit.findings import Finding
from celltune.data.samples import LabelledSplits

# File-name parts that name the image, slide or patient a crop comes from, as --groups patterns (searched in the path
# relative to the data folder, the first capture group naming the source), most specific first.
SOURCE_NAMES: tuple[tuple[str, str], ...] = (
    ("the part of the name before _cell_", r"([^/]+?)_cell_"),
    ("the part of the name before ___T (a movie and its position)", r"([^/]+?)___T"),
    ("the part of the name before _xN_yN (a position in a larger image)", r"([^/]+?)_x\d+_y\d+"),
    ("a slide, patient, case or image id", r"(?i)((?:slide|patient|case|specimen|sample|ytma|img)[-_]?\d+)"),
)
MATCHED = 0.8  # a pattern names the sources when it matches this share of the images


def group_findings(found: LabelledSplits) -> list[Finding]:
    """Images per group and class, and the single-class groups; nothing when the samples have no groups."""
    samples = found.samples
    if not samples or any(s.group is None for s in samples):
        return []
    names = found.class_names
    per_group: dict[str, Counter[str]] = defaultdict(Counter)
    for s in samples:
        for label in s.label if isinstance(s.label, tuple) else (s.label,):
            per_group[str(s.group)][names[label]] += 1
    sizes = Counter(str(s.group) for s in samples)
    rows = [f"{g}: {sizes[g]} images ({', '.join(f'{c} {n}' for c, n in sorted(per_group[g].items()))})"
            for g in sorted(sizes)]
    low, high = min(sizes.values()), max(sizes.values())
    how_many = (f"{len(sizes)} groups of {low}-{high} images (median {median(sizes.values()):g})" if len(sizes) > 1
                else f"1 group of {high} images")
    out = [Finding("info", "groups", f"{how_many}; --json lists each with its classes", "none needed", rows)]
    single = sorted(g for g, c in per_group.items() if len(c) == 1)
    if single and len(names) > 1 and not found.multilabel:
        out.append(Finding(
            "warning", "group-one-class", f"{len(single)} of {len(sizes)} groups hold images of one class only: a "
            "model can learn the group (its patient, slide, stain or scanner) instead of the class, and scores on "
            "images of groups seen in training overstate it", "keep groups whole in every split (--groups, as "
            "here), so the scores show it; with one class per patient, say so beside the results",
            [f"{g}: {sizes[g]} images, all {next(iter(per_group[g]))}" for g in single]))
    return out


def split_finding(problem: str) -> Finding:
    """A split that cannot be made (``problem``: the split's error), reported among the findings: the check goes
    on with every image in one pool."""
    return Finding("error", "split", f"the train/val/test split cannot be made: {problem}", "the message names what "
                   "works; `celltune cv --folds groups` holds out one group at a time instead", [])


def source_name_findings(found: LabelledSplits, root: Path) -> list[Finding]:
    """When no groups are given: the first of ``SOURCE_NAMES`` that names the source of most images, with at least
    two images a source on average; a warning when some sources have images in more than one split."""
    samples = [(split, s) for split, part in found.splits.items() for s in part]
    if len(found.splits) < 2 or not samples or any(s.group is not None for _, s in samples):
        return []
    names = [s.path.relative_to(root).as_posix() for _, s in samples]
    for what, pattern in SOURCE_NAMES:
        regex = re.compile(pattern)
        sources = [m.group(1) if (m := regex.search(n)) else None for n in names]
        named = [src for src in sources if src is not None]
        if len(named) < MATCHED * len(names) or not 2 <= len(set(named)) <= len(named) / 2:
            continue
        where: dict[str, Counter[str]] = defaultdict(Counter)
        for (split, _), src in zip(samples, sources, strict=True):
            if src is not None:
                where[src][split] += 1
        across = sorted(src for src, c in where.items() if len(c) > 1)
        if not across:
            return []
        return [Finding(
            "warning", "source-across-splits", f"{len(across)} of {len(where)} sources named in the file names "
            f"({what}) have images in more than one split: the split may be by cell rather than by source image, "
            "and the scores then count cells of images seen in training",
            f"keep each source whole with --groups '{pattern}' (celltune then splits by source, or reports the "
            "pre-made splits that share one)",
            [f"{src}: " + ", ".join(f"{split} {n}" for split, n in where[src].items()) for src in across])]
    return []
