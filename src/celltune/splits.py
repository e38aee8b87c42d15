"""Dividing labelled images into train/val/test parts: seeded, stratified so every part sees every class."""

from __future__ import annotations

import numpy as np


def stratified_split(labels: list[int], *, fractions: tuple[float, ...], seed: int) -> list[list[int]]:
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


def iterative_split(y: np.ndarray, *, fractions: tuple[float, float, float], seed: int) -> list[list[int]]:
    """Train/val/test indices of the rows of a (N, labels) 0/1 matrix, keeping each label's frequency alike in every
    part (Sechidis et al. 2011, through the iterative-stratification package)."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    parts: list[list[int]] = []
    rest = np.arange(len(y))
    for fraction, remaining in ((fractions[2], 1.0), (fractions[1], 1.0 - fractions[2])):
        share = fraction / remaining
        if share <= 0 or len(rest) < 2:
            parts.insert(0, [])
            continue
        splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=share, random_state=seed)
        keep, take = next(splitter.split(rest[:, None], y[rest]))
        parts.insert(0, sorted(rest[take].tolist()))
        rest = rest[keep]
    return [sorted(rest.tolist()), *parts]
