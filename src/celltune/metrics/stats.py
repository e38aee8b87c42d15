"""How sure a number is: bootstrap confidence intervals of the headline numbers (seeded; single-label images are
resampled within their class, so every class keeps its count), paired bootstrap intervals of the difference between
two models scored on the same images, and McNemar's exact test on their right/wrong answers.

Every resample is scored by the same functions that score the images once (``classification.confusion_scores`` and
``multilabel.label_scores``), on all resamples at once: each resample is a vector of counts, one per image.
"""

from __future__ import annotations

from math import comb

import numpy as np

from celltune.metrics.classification import confusion_scores
from celltune.metrics.multilabel import label_scores

RESAMPLES = 1000
LEVEL = 0.95


def resample_counts(labels: np.ndarray | None, n: int, *, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) how often each image is drawn; with ``labels`` (n,) each class's images are drawn from that
    class only, as many times as it has images."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((resamples, n))
    strata = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for members in strata:
        counts[:, members] = rng.multinomial(len(members), np.full(len(members), 1 / len(members)), size=resamples)
    return counts


def single_label_scores(counts: np.ndarray, truth: np.ndarray, predicted: np.ndarray,
                        num_classes: int) -> dict[str, np.ndarray]:
    """The headline numbers of every resample (rows of ``counts``): accuracy, mean class accuracy, macro-F1; and
    weighted F1, which has an interval without being a headline number."""
    cell = truth * num_classes + predicted  # (N,): each image's cell of the confusion matrix
    flat = np.zeros((len(counts), num_classes * num_classes))
    for c in np.unique(cell):
        flat[:, c] = counts[:, cell == c].sum(1)
    scores = confusion_scores(flat.reshape(len(counts), num_classes, num_classes))
    return {k: scores[k] for k in ("accuracy", "mean_class_accuracy", "macro_f1", "weighted_f1")}


def multilabel_scores(counts: np.ndarray, truth: np.ndarray, predicted: np.ndarray) -> dict[str, np.ndarray]:
    """The headline numbers of every resample: macro-F1, micro-F1, exact match."""
    truth, predicted = truth.astype(bool), predicted.astype(bool)
    scores = label_scores(counts @ (predicted & truth), counts @ (predicted & ~truth), counts @ (~predicted & truth),
                          counts @ (predicted == truth).all(1), counts.sum(1))
    return {k: scores[k] for k in ("macro_f1", "micro_f1", "exact_match")}


def _scores(counts: np.ndarray, truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    if truth.ndim == 2:
        return multilabel_scores(counts, truth, predicted)
    return single_label_scores(counts, truth, predicted, num_classes)


def interval(values: np.ndarray, level: float = LEVEL) -> list[float]:
    """The percentile interval holding ``level`` of the bootstrap ``values``."""
    tail = 100 * (1 - level) / 2
    return [float(v) for v in np.percentile(values, [tail, 100 - tail])]


def bootstrap_intervals(truth: np.ndarray, predicted: np.ndarray, *, num_classes: int, resamples: int = RESAMPLES,
                        seed: int = 0) -> dict[str, list[float]]:
    """95% intervals of the headline numbers (single-label: and of weighted F1). ``truth`` and ``predicted``: class
    indices (N,), or (N, labels) 0/1."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    counts = resample_counts(truth if truth.ndim == 1 else None, len(truth), resamples=resamples, seed=seed)
    return {k: interval(v) for k, v in _scores(counts, truth, predicted, num_classes).items()}


def paired_differences(truth: np.ndarray, predicted_a: np.ndarray, predicted_b: np.ndarray, *, num_classes: int,
                       resamples: int = RESAMPLES, seed: int = 0) -> dict[str, tuple[float, list[float]]]:
    """{headline number: (A - B on the images, 95% interval of A - B)}: both models scored on the same resamples."""
    truth = np.asarray(truth)
    ones = np.ones((1, len(truth)))
    counts = resample_counts(truth if truth.ndim == 1 else None, len(truth), resamples=resamples, seed=seed)
    a, b = (_scores(np.vstack([ones, counts]), truth, np.asarray(p), num_classes) for p in (predicted_a, predicted_b))
    return {k: (float(a[k][0] - b[k][0]), interval(a[k][1:] - b[k][1:])) for k in a}


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: of the images exactly one model gets right, ``only_a`` are A's and ``only_b``
    B's; under no difference each is a fair coin's throw."""
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n)
