"""Single-label scores from predictions: the confusion matrix and what is read off it (accuracy, ACA, per-class
precision/recall/F1, macro- and weighted F1), one-vs-rest ROC AUC and the top class's calibration error."""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc

from celltune.metrics.calibration import calibration_error
from celltune.metrics.results import ClassificationResult, ClassRow, ConfusedPair


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts; rows are true classes, columns predicted."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast_shapes(num.shape, den.shape)), where=den > 0)


def most_confused(cm: np.ndarray, class_names: list[str], k: int = 5) -> list[ConfusedPair]:
    """The k largest off-diagonal cells: which true class is most often taken for which other."""
    off = [(int(cm[i, j]), i, j) for i in range(len(cm)) for j in range(len(cm)) if i != j and cm[i, j] > 0]
    return [ConfusedPair(class_names[i], class_names[j], n, n / int(cm[i].sum()))
            for n, i, j in sorted(off, reverse=True)[:k]]


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


def _mean_defined(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def confusion_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """From (..., C, C) confusion matrices (rows true): per-class ``precision``, ``recall``, ``f1`` and ``support``
    (..., C), the headline ``accuracy``, ``mean_class_accuracy`` (ACA, the mean of per-class recall, which is also
    the balanced accuracy) and ``macro_f1`` (...), and ``weighted_f1`` (...: per-class F1 weighted by the class's
    true images, as sklearn's ``average="weighted"``). A class with no true image has recall 0 and is left out of
    ACA and macro-F1, as its accuracy is undefined (its weight in weighted F1 is 0). The bootstrap scores stacks of
    resampled matrices with this too."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(-1)
    precision = _safe_div(tp, cm.sum(-2))
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    present = support > 0
    n_present = present.sum(-1)
    total = support.sum(-1)

    def over_present(x: np.ndarray) -> np.ndarray:
        return _safe_div((x * present).sum(-1), n_present.astype(np.float64))

    return {"precision": precision, "recall": recall, "f1": f1, "support": support,
            "accuracy": _safe_div(tp.sum(-1), total), "mean_class_accuracy": over_present(recall),
            "macro_f1": over_present(f1), "weighted_f1": _safe_div((f1 * support).sum(-1), total)}


def classification_metrics(y_true, y_pred, class_names: list[str], probs: np.ndarray | None = None) -> \
        ClassificationResult:
    """Accuracy, ACA, per-class P/R/F1, macro-F1 and weighted F1 (see ``confusion_scores``), the confusion matrix and
    the most confused pairs; with ``probs`` (N, C) also one-vs-rest ROC AUC per class and its macro mean (classes
    with no positives or no negatives left out, None) and the expected calibration error (ECE) of the top class."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    cm = confusion_matrix(y_true, y_pred, len(class_names))
    scores = confusion_scores(cm)
    aucs: list[float | None] = [None] * len(class_names)
    ece = None
    if probs is not None:
        probs = np.asarray(probs)
        aucs = probability_auc(np.eye(probs.shape[1], dtype=np.int64)[y_true], probs)
        ece = calibration_error(y_true, probs)
    precision, recall, f1, support = (scores[k] for k in ("precision", "recall", "f1", "support"))
    return ClassificationResult(
        class_names=list(class_names),
        num_samples=len(y_true),
        accuracy=float(scores["accuracy"]),
        mean_class_accuracy=float(scores["mean_class_accuracy"]),
        macro_f1=float(scores["macro_f1"]),
        weighted_f1=float(scores["weighted_f1"]),
        roc_auc_macro=_mean_defined(aucs) if probs is not None else None,
        expected_calibration_error=ece,
        per_class=[ClassRow(name, float(precision[i]), float(recall[i]), float(f1[i]), aucs[i], int(support[i]))
                   for i, name in enumerate(class_names)],
        confusion_matrix=cm.tolist(),
        most_confused=most_confused(cm, list(class_names)),
    )
