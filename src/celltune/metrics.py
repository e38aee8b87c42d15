"""Classification metrics as plain data (numbers, lists, dicts): nothing here prints or draws."""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc, multiclass_calibration_error


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts; rows are true classes, columns predicted."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def most_confused(cm: np.ndarray, class_names: list[str], k: int = 5) -> list[dict]:
    """The k largest off-diagonal cells: which true class is most often taken for which other."""
    off = [(int(cm[i, j]), i, j) for i in range(len(cm)) for j in range(len(cm)) if i != j and cm[i, j] > 0]
    return [{"true": class_names[i], "predicted": class_names[j], "count": n,
             "fraction_of_true": n / int(cm[i].sum())} for n, i, j in sorted(off, reverse=True)[:k]]


def probability_auc(y_true: np.ndarray, probs: np.ndarray) -> list[float | None]:
    """ROC AUC of each column of (N, C) ``probs`` against the (N, C) 0/1 ``y_true``; None where a column has no
    positives or no negatives."""
    out: list[float | None] = []
    for c in range(probs.shape[1]):
        t = torch.as_tensor(y_true[:, c], dtype=torch.long)
        positives = int(t.sum())
        out.append(float(binary_auroc(torch.as_tensor(probs[:, c], dtype=torch.float32), t))
                   if 0 < positives < len(t) else None)
    return out


def probability_metrics(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> dict:
    """One-vs-rest ROC AUC per class and its macro mean, and expected calibration error (ECE) of the top class.

    AUC is undefined for a class with no positives or no negatives in the split; such classes are left out (None).
    """
    target = torch.as_tensor(y_true, dtype=torch.long)
    p = torch.as_tensor(probs, dtype=torch.float32)
    per_class = probability_auc(np.eye(p.shape[1], dtype=np.int64)[np.asarray(y_true)], probs)
    defined = [a for a in per_class if a is not None]
    return {
        "roc_auc_macro": float(np.mean(defined)) if defined else None,
        "roc_auc_per_class": per_class,
        "expected_calibration_error": float(multiclass_calibration_error(p, target, num_classes=p.shape[1],
                                                                         n_bins=n_bins, norm="l1")),
    }


def classification_metrics(y_true, y_pred, class_names: list[str], probs: np.ndarray | None = None) -> dict:
    """Accuracy, mean class accuracy (ACA, the mean of per-class recall, which is also the balanced accuracy),
    per-class P/R/F1, macro-F1, confusion matrix, most confused pairs; with ``probs`` (N, C) also ROC AUC and ECE.

    A class with no true samples has recall 0 and is left out of ACA, as its accuracy is undefined.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    cm = confusion_matrix(y_true, y_pred, len(class_names))
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    present = support > 0
    aca = float(recall[present].mean()) if present.any() else 0.0
    out = {
        "num_samples": len(y_true),
        "accuracy": float(tp.sum() / max(len(y_true), 1)),
        "mean_class_accuracy": aca,
        "balanced_accuracy": aca,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(class_names)
        },
        "class_names": list(class_names),
        "confusion_matrix": cm.tolist(),
        "most_confused": most_confused(cm, list(class_names)),
    }
    if probs is not None:
        out |= probability_metrics(y_true, np.asarray(probs))
        for name, auc in zip(class_names, out["roc_auc_per_class"], strict=True):
            out["per_class"][name]["roc_auc"] = auc
    return out


# --- multi-label ------------------------------------------------------------------------------------------------


def multi_hot(labels: list[tuple[int, ...]], num_classes: int) -> np.ndarray:
    """(N, num_classes) 0/1 matrix from each image's label ids."""
    y = np.zeros((len(labels), num_classes), dtype=np.int64)
    for i, labs in enumerate(labels):
        y[i, list(labs)] = 1
    return y


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


def multilabel_metrics(y_true: np.ndarray, probs: np.ndarray, class_names: list[str],
                       thresholds: list[float] | None = None) -> dict:
    """Macro and micro F1, per-label precision/recall/F1/ROC AUC/frequency, exact-match accuracy, at ``thresholds``
    (0.5 each when not given). Macro averages run over labels present in ``y_true``."""
    y_true = np.asarray(y_true).astype(bool)
    thresholds = thresholds or [0.5] * len(class_names)
    pred = probs >= np.asarray(thresholds)[None, :]
    tp = (pred & y_true).sum(0).astype(float)
    fp = (pred & ~y_true).sum(0).astype(float)
    fn = (~pred & y_true).sum(0).astype(float)
    precision, recall, f1 = _f1_counts(tp, fp, fn)
    micro_p, micro_r, micro_f1 = _f1_counts(tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True))
    support = y_true.sum(0)
    present = support > 0
    auc = probability_auc(y_true.astype(np.int64), probs)
    defined = [a for a in auc if a is not None]
    return {
        "multilabel": True,
        "num_samples": len(y_true),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "micro_f1": float(micro_f1[0]),
        "micro_precision": float(micro_p[0]),
        "micro_recall": float(micro_r[0]),
        "exact_match": float((pred == y_true).all(axis=1).mean()) if len(y_true) else 0.0,
        "roc_auc_macro": float(np.mean(defined)) if defined else None,
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "roc_auc": auc[i], "support": int(support[i]), "frequency": float(support[i] / max(len(y_true), 1)),
                   "threshold": float(thresholds[i])}
            for i, name in enumerate(class_names)
        },
        "class_names": list(class_names),
        "thresholds": list(map(float, thresholds)),
    }
