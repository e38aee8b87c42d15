"""Multi-label scores: per-label precision, recall and F1 at per-label thresholds, macro and micro F1, exact match,
and the thresholds tuned for F1 on validation. ``label_scores`` also serves the bootstrap (``celltune.metrics.stats``),
on counts of every resample at once."""

from __future__ import annotations

import numpy as np

from celltune.metrics.calibration import calibration_error
from celltune.metrics.classification import _mean_defined, _safe_div, probability_auc
from celltune.metrics.results import LabelRow, MultilabelResult


def _f1_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    precision = _safe_div(tp, tp + fp)
    recall = _safe_div(tp, tp + fn)
    return precision, recall, _safe_div(2 * precision * recall, precision + recall)


def tune_thresholds(y_true: np.ndarray, probs: np.ndarray, grid: np.ndarray | None = None) -> list[float]:
    """Per class, the threshold on ``grid`` that maximises F1 on (validation) data; 0.5 for a class without
    positives there. Ties go to the threshold nearest 0.5."""
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2) if grid is None else grid
    order = np.argsort(np.abs(grid - 0.5), kind="stable")  # try 0.5 first, so ties keep the threshold nearest it
    out = []
    for c in range(y_true.shape[1]):
        t, p = y_true[:, c].astype(bool), probs[:, c]
        if not t.any():
            out.append(0.5)
            continue
        pred = p[None, :] >= grid[order][:, None]  # (G, N)
        tp, fp, fn = (pred & t).sum(1), (pred & ~t).sum(1), (~pred & t).sum(1)
        f1 = _f1_counts(tp.astype(float), fp.astype(float), fn.astype(float))[2]
        out.append(float(grid[order][int(np.argmax(f1))]))
    return out


def label_scores(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, exact: np.ndarray,
                 n: np.ndarray | float) -> dict[str, np.ndarray]:
    """From per-label true positive, false positive and false negative counts (..., L), images with every label right
    (...) and images (...): per-label ``precision``, ``recall``, ``f1``, and the headline ``macro_f1`` (over labels
    with a positive), ``micro_f1`` (with ``micro_precision``, ``micro_recall``) and ``exact_match``."""
    precision, recall, f1 = _f1_counts(tp, fp, fn)
    micro_p, micro_r, micro_f1 = _f1_counts(tp.sum(-1), fp.sum(-1), fn.sum(-1))
    present = (tp + fn) > 0
    return {"precision": precision, "recall": recall, "f1": f1,
            "macro_f1": _safe_div((f1 * present).sum(-1), present.sum(-1).astype(np.float64)),
            "micro_f1": micro_f1, "micro_precision": micro_p, "micro_recall": micro_r,
            "exact_match": _safe_div(np.asarray(exact, dtype=np.float64), np.asarray(n, dtype=np.float64))}


def multilabel_metrics(y_true: np.ndarray, probs: np.ndarray, class_names: list[str],
                       thresholds: list[float] | None = None) -> MultilabelResult:
    """Macro and micro F1, per-label precision/recall/F1/ROC AUC/frequency, exact-match accuracy (see
    ``label_scores``), at ``thresholds`` (0.5 each when not given)."""
    y_true = np.asarray(y_true).astype(bool)
    thresholds = list(map(float, thresholds or [0.5] * len(class_names)))
    pred = probs >= np.asarray(thresholds)[None, :]
    scores = label_scores((pred & y_true).sum(0).astype(float), (pred & ~y_true).sum(0).astype(float),
                          (~pred & y_true).sum(0).astype(float), (pred == y_true).all(axis=1).sum(), len(y_true))
    support = y_true.sum(0)
    auc = probability_auc(y_true.astype(np.int64), probs)
    precision, recall, f1 = scores["precision"], scores["recall"], scores["f1"]
    return MultilabelResult(
        class_names=list(class_names),
        num_samples=len(y_true),
        macro_f1=float(scores["macro_f1"]),
        micro_f1=float(scores["micro_f1"]),
        micro_precision=float(scores["micro_precision"]),
        micro_recall=float(scores["micro_recall"]),
        exact_match=float(scores["exact_match"]),
        roc_auc_macro=_mean_defined(auc),
        expected_calibration_error=calibration_error(y_true, probs, multilabel=True),
        per_class=[LabelRow(name, int(support[i]), float(support[i] / max(len(y_true), 1)), thresholds[i],
                            float(precision[i]), float(recall[i]), float(f1[i]), auc[i])
                   for i, name in enumerate(class_names)],
        thresholds=thresholds,
    )
