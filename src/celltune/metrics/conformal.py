"""Prediction sets with a coverage guarantee: split conformal prediction with adaptive prediction sets (APS, Romano,
Sesia and Candes 2020), calibrated on the validation split.

Each validation image gets a score: the probability mass of the classes ranked above its true class, plus a share
``u`` of the true class's own probability. For a coverage of 95% the threshold is the ceil((n + 1) * 0.95)-th
smallest of the n scores; a new image's set is the classes, most probable first, whose score as if they were the true
class is at most that threshold. If validation and new images are exchangeable (drawn alike: the reason to keep
groups whole in the split), the set holds the true class for at least 95% of images, whatever the model.

``u`` is what makes the coverage exact rather than conservative (the randomized APS). It is drawn from a hash of the
image's file name, not from a random generator: an image always gets the same set, in ``evaluate``, ``predict`` and a
resumed CSV alike. A set always holds the top class, so it is never empty, and the scores count that (``scores``):
where the top class alone is right for more images than the coverage asks, sets of one class cover that share.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np

from celltune.errors import ConfigError

COVERAGES = (0.9, 0.95)  # what evaluate and the report measure


def draw(names: list[str] | list[Path]) -> np.ndarray:
    """(N,) uniform numbers in [0, 1), one per image, from its file name alone."""
    return np.array([int.from_bytes(hashlib.blake2b(Path(n).name.encode(), digest_size=8).digest(), "big") / 2**64
                     for n in names])


def _ranked(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order (N, C): classes most probable first, the mass of the classes ranked above each (N, C))."""
    order = np.argsort(-probs, axis=1, kind="stable")
    ranked = np.take_along_axis(probs, order, axis=1)
    return order, np.cumsum(ranked, axis=1) - ranked


def scores(probs: np.ndarray, truth: np.ndarray, u: np.ndarray, *, allow_empty: bool = False) -> np.ndarray:
    """(N,) APS scores of the true classes (N,) under (N, C) ``probs``. A true class that is the top one scores 0
    unless ``allow_empty``: the sets always hold it, so it is covered at any threshold, and the threshold is then
    chosen among the images whose top class is wrong (exact coverage, where the top class alone is right less often
    than asked; never less than that share where it is right more often)."""
    order, above = _ranked(probs)
    rank = np.argmax(order == np.asarray(truth)[:, None], axis=1)
    rows = np.arange(len(probs))
    found = above[rows, rank] + u * probs[rows, np.asarray(truth)]
    return found if allow_empty else np.where(rank == 0, 0.0, found)


def threshold(calibration: list[float] | np.ndarray, coverage: float) -> float:
    """The threshold that gives ``coverage`` from the validation scores: their ceil((n + 1) * coverage)-th smallest,
    or infinity (every class in every set) when there are too few scores to promise it."""
    n = len(calibration)
    k = math.ceil((n + 1) * coverage)
    return math.inf if k > n else float(np.sort(np.asarray(calibration))[k - 1])


def prediction_sets(probs: np.ndarray, limit: float, u: np.ndarray, *, allow_empty: bool = False) -> list[list[int]]:
    """For each image of (N, C) ``probs``, its set: class indices, most probable first, each with score at most
    ``limit``; the top class always, unless ``allow_empty`` (the textbook procedure, whose coverage is exact even
    where the top class alone is right more often than asked: benchmarks measure it that way too)."""
    order, above = _ranked(probs)
    ranked = np.take_along_axis(probs, order, axis=1)
    inside = above + u[:, None] * ranked <= limit  # (N, C); a prefix of each row, as the score grows with the rank
    if not allow_empty:
        inside[:, 0] = True
    return [order[i, : int(inside[i].sum())].tolist() for i in range(len(probs))]


def check_coverage(coverage: float) -> None:
    if not 0 < coverage < 1:
        raise ConfigError(f"--coverage {coverage}: give the share of images whose set must hold the true class, "
                          "between 0 and 1, such as 0.95")


def set_summary(sets: list[list[int]], truth: np.ndarray, class_names: list[str], coverage: float) -> dict[str, Any]:
    """How sets for ``coverage`` did on labelled images: the share holding the true class (overall and per true
    class), the mean set size, how many images got each size, and the share with more than one class (to look at)."""
    covered = np.array([t in s for s, t in zip(sets, truth, strict=True)], dtype=bool)
    sizes = np.array([len(s) for s in sets])
    truth = np.asarray(truth)
    per_class = {}
    for c, name in enumerate(class_names):
        mine = truth == c
        if mine.any():
            per_class[name] = {"images": int(mine.sum()), "covered": float(covered[mine].mean()),
                               "mean_size": float(sizes[mine].mean())}
    counts = np.bincount(sizes, minlength=len(class_names) + 1)
    return {"target": coverage, "images": len(sets), "covered": float(covered.mean()) if len(sets) else 0.0,
            "mean_size": float(sizes.mean()) if len(sets) else 0.0,
            "to_review": float((sizes > 1).mean()) if len(sets) else 0.0,
            "sizes": {str(k): int(v) for k, v in enumerate(counts) if k and v}, "per_class": per_class}


def measure(probs: np.ndarray, truth: np.ndarray, names: list[str] | list[Path], calibration: list[float],
            class_names: list[str], coverages: tuple[float, ...] = COVERAGES, *,
            allow_empty: bool = False) -> list[dict[str, Any]]:
    """``set_summary`` at each of ``coverages`` for labelled ``probs`` (N, C) of the images ``names``, with the
    validation scores ``calibration`` (computed with the same ``allow_empty``)."""
    u = draw(names)
    return [set_summary(prediction_sets(probs, threshold(calibration, c), u, allow_empty=allow_empty), truth,
                        class_names, c) for c in coverages]
