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


def probability_metrics(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> dict:
    """One-vs-rest ROC AUC per class and its macro mean, and expected calibration error (ECE) of the top class.

    AUC is undefined for a class with no positives or no negatives in the split; such classes are left out (None).
    """
    target = torch.as_tensor(y_true, dtype=torch.long)
    p = torch.as_tensor(probs, dtype=torch.float32)
    per_class: list[float | None] = []
    for c in range(p.shape[1]):
        positives = int((target == c).sum())
        per_class.append(float(binary_auroc(p[:, c], (target == c).long())) if 0 < positives < len(target) else None)
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
