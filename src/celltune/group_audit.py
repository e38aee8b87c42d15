"""What ``celltune check`` says of the groups (patients, slides, fields) of a dataset: how many images each holds of
each class, the groups that hold a single class (a model can learn the group instead of the class), and a split that
whole groups cannot make, reported as a finding rather than stopping the check."""

from __future__ import annotations

from collections import Counter, defaultdict
from statistics import median

from celltune.findings import Finding
from celltune.samples import LabelledSplits


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
    out = [Finding("info", "groups", f"{len(sizes)} groups of {min(sizes.values())}-{max(sizes.values())} images "
                   f"(median {median(sizes.values()):g}); --json lists each with its classes", "none needed", rows)]
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
