"""Dividing labelled images into parts: train/val/test splits and cross-validation folds, seeded and stratified so
every part sees every class, and with groups (patients, slides) kept whole when they are given.

Single-label grouped splits follow scikit-learn's StratifiedGroupKFold; multi-label ones iterative stratification
(Sechidis et al. 2011): the iterative-stratification package for images, the same algorithm here for groups.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import numpy as np

from celltune.data.samples import Sample, multi_hot
from celltune.errors import DataError, GroupSplitError

log = logging.getLogger(__name__)


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


def _group_codes(groups: Sequence[str]) -> np.ndarray:
    return np.unique(np.asarray(groups), return_inverse=True)[1]


def iterative_group_assign(y: np.ndarray, groups: Sequence[str], shares: Sequence[float], *, seed: int) -> np.ndarray:
    """Each image's part (0..len(shares)-1), whole groups at a time, by iterative stratification over the groups'
    label counts: the rarest label's groups go first, each to the part that still lacks most of that label."""
    codes = _group_codes(groups)
    counts = np.zeros((codes.max() + 1, y.shape[1]))  # (groups, labels): images carrying each label
    np.add.at(counts, codes, y)
    sizes = np.bincount(codes).astype(float)
    shares_ = np.asarray(shares, dtype=float) / sum(shares)
    want_label = shares_[:, None] * counts.sum(0)[None]  # (parts, labels) still wanted
    want_size = shares_ * sizes.sum()
    rng = np.random.default_rng(seed)
    part_of = np.full(len(sizes), -1)
    remaining = counts.copy()
    while (part_of < 0).any():
        left = remaining.sum(0)
        if left.any():
            label = int(np.argmin(np.where(left > 0, left, np.inf)))
            chosen = np.flatnonzero((part_of < 0) & (counts[:, label] > 0))
        else:  # groups without any label: by size alone
            label, chosen = -1, np.flatnonzero(part_of < 0)
        for g in rng.permutation(chosen):
            need = want_label[:, label] if label >= 0 else want_size
            best = np.flatnonzero(need == need.max())
            if len(best) > 1:  # ties: the part that wants the most images, then chance
                best = best[want_size[best] == want_size[best].max()]
            part = int(rng.choice(best))
            part_of[g] = part
            want_label[part] -= counts[g]
            want_size[part] -= sizes[g]
            remaining[g] = 0
    return part_of[codes]


def grouped_split(labels: list[int] | np.ndarray, groups: Sequence[str], *, fractions: tuple[float, float, float],
                  seed: int) -> list[list[int]]:
    """Train/val/test indices with every group in one part only, stratified as far as the groups allow. ``labels``:
    class indices, or a (N, labels) 0/1 matrix for multi-label images. Where too few groups are left for a part of
    ``fractions``'s share, the part is one whole group, the nearest share there is (logged); where a single group is
    left for training and validation, validation is empty (logged) and training runs without it."""
    labels = np.asarray(labels)
    n_groups = len(set(groups))
    if labels.ndim == 2:
        part = iterative_group_assign(labels, groups, fractions, seed=seed)
        return [np.flatnonzero(part == k).tolist() for k in range(3)]
    from sklearn.model_selection import StratifiedGroupKFold

    parts: list[list[int]] = []
    rest = np.arange(len(labels))
    for name, fraction, remaining in (("test", fractions[2], 1.0), ("val", fractions[1], 1.0 - fractions[2])):
        if fraction <= 0:
            parts.insert(0, [])
            continue
        k = max(2, round(remaining / fraction))  # one fold of k is the part
        left = len(set(np.asarray(groups)[rest]))
        if left == 1 and name == "val":  # the last group trains: the run goes without validation
            log.warning("one group left for training and validation: none can be spared for validation, so training "
                        "runs its epochs without one (no best epoch is chosen; the last epoch's weights are kept)")
            parts.insert(0, [])
            continue
        if left < 2:
            to_make = 1 + (fractions[1] > 0 and remaining == 1.0)  # this part, and val after test
            raise GroupSplitError(too_few_groups(
                np.asarray(groups), f"a {fraction:.0%} part", needed=n_groups - left + to_make + 1,
                ways="or --test-fraction 0 where the data has a test set of its own"))
        if left < k:
            log.info("%d group(s) left cannot give a %.0f%% part with whole groups: one group, about %.0f%% of them, "
                     "the nearest share there is", left, 100 * fraction, 100 / left)
            k = left
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        keep, take = next(splitter.split(rest[:, None], labels[rest], np.asarray(groups)[rest]))
        parts.insert(0, sorted(rest[take].tolist()))
        rest = rest[keep]
    return [sorted(rest.tolist()), *parts]


def kfold(labels: list[int] | np.ndarray, groups: Sequence[str] | None, *, folds: int, seed: int,
          class_names: Sequence[str] | None = None) -> list[list[int]]:
    """The held-out indices of each of ``folds`` folds: stratified, and grouped when ``groups`` are given. Every
    index is held out once. ``class_names`` name the classes in errors."""
    labels = np.asarray(labels)
    x = np.zeros((len(labels), 1))
    if groups is not None and (len(set(groups)) < folds or folds < 2):
        raise GroupSplitError(too_few_groups(np.asarray(groups), f"{folds} folds", needed=max(folds, 2),
                                             ways="or --folds groups (one group held out at a time)"))
    if groups is not None and folds == len(set(groups)):  # one group a fold: leave one group out
        from sklearn.model_selection import LeaveOneGroupOut

        return [sorted(test.tolist()) for _, test in LeaveOneGroupOut().split(x, groups=groups)]
    if labels.ndim == 2:
        if groups is not None:
            part = iterative_group_assign(labels, groups, [1.0] * folds, seed=seed)
            return [np.flatnonzero(part == k).tolist() for k in range(folds)]
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

        splits = MultilabelStratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, labels)
    elif groups is not None:
        from sklearn.model_selection import StratifiedGroupKFold

        splits = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, labels, groups)
    else:
        from sklearn.model_selection import StratifiedKFold

        _every_class_in_every_fold(labels, folds, class_names)
        splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, labels)
    return [sorted(test.tolist()) for _, test in splits]


def sample_folds(samples: Sequence[Sample], class_names: Sequence[str], *, folds: int, seed: int) -> list[list[int]]:
    """``kfold`` of labelled samples: their class indices (multi-hot rows for multi-label) and, where they have
    them, their groups."""
    if any(isinstance(s.label, tuple) for s in samples):
        labels = multi_hot([s.label for s in samples], len(class_names))  # type: ignore[misc]
    else:
        labels = np.array([s.label for s in samples])
    groups = [str(s.group) for s in samples] if samples and samples[0].group is not None else None
    return kfold(labels, groups, folds=folds, seed=seed, class_names=class_names)


def _every_class_in_every_fold(labels: np.ndarray, folds: int, class_names: Sequence[str] | None) -> None:
    """Fail, naming the classes and the flags that work, when a class has fewer images than there are folds."""
    present, counts = np.unique(labels, return_counts=True)
    small = [(str(class_names[c]) if class_names is not None else f"class {c}", int(n))
             for c, n in zip(present, counts, strict=True) if n < folds]
    if not small:
        return
    listed = ", ".join(f"{name} ({n} image{'s' * (n != 1)})" for name, n in small)
    ways = [f"--exclude-classes {','.join(name for name, _ in small)}", f"--min-class-images {folds}"]
    if min(n for _, n in small) >= 2:
        ways.append(f"--folds {min(n for _, n in small)}")
    raise DataError(f"{len(small)} class(es) with fewer images than the {folds} folds cannot appear in every fold: "
                    f"{listed}; leave them out with {' or '.join(ways)}")


def too_few_groups(groups: np.ndarray, what: str, *, needed: int, ways: str) -> str:
    """The message of a split that whole groups cannot make: the groups with their sizes, and what would work."""
    sizes = Counter(groups.tolist())
    listed = ", ".join(f"{g} ({n})" for g, n in sorted(sizes.items())[:12]) + (" ..." if len(sizes) > 12 else "")
    return (f"{len(sizes)} group(s) cannot give {what} with whole groups (images per group: {listed}); it needs "
            f"{needed}: give finer groups (a --groups pattern for slides or fields rather than patients), {ways}")
