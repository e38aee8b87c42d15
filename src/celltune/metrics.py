"""Metrics as typed results computed from predictions; nothing here prints, draws or writes.

A result is a frozen dataclass: headline numbers, per-class rows and (single-label) the confusion matrix. Each scalar
field carries its display label, and a headline number its short name (``aca`` -> ``val_aca`` in the per-epoch
history). The CLI, the HTML report, the plots and the tracking read those, so a metric is added here and nowhere else.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc

from celltune.calibration import calibration_error, reliability


def metric(label: str, *, short: str | None = None, default: Any = MISSING) -> Any:
    """A result field shown as ``label``; ``short`` makes it a headline number, tracked per epoch as val_<short>."""
    return field(default=default, metadata={"label": label, **({"short": short} if short else {})})


@dataclass(frozen=True)
class ClassRow:
    name: str
    precision: float = metric("precision")
    recall: float = metric("recall")
    f1: float = metric("F1")
    roc_auc: float | None = metric("ROC AUC")
    support: int = metric("images")


@dataclass(frozen=True)
class LabelRow:
    name: str
    support: int = metric("images")
    frequency: float = metric("frequency")
    threshold: float = metric("threshold")
    precision: float = metric("precision")
    recall: float = metric("recall")
    f1: float = metric("F1")
    roc_auc: float | None = metric("ROC AUC")


@dataclass(frozen=True)
class ConfusedPair:
    true: str
    predicted: str
    count: int
    fraction_of_true: float


def labelled(obj: Any) -> list[tuple[str, str, Any]]:
    """(field name, label, value) of every labelled field of a result or row, in order."""
    return [(f.name, f.metadata["label"], getattr(obj, f.name)) for f in fields(obj) if "label" in f.metadata]


class _Result:
    """What single- and multi-label results share: headline numbers, tracking names, plain-data form."""

    multilabel: ClassVar[bool]
    selection: ClassVar[str]  # the headline number that picks the best epoch
    row_type: ClassVar[type]

    def headline(self) -> dict[str, float]:
        """{field name: value} of the headline numbers."""
        return {f.name: getattr(self, f.name) for f in fields(self) if "short" in f.metadata}  # type: ignore[arg-type]

    def tracked(self, prefix: str = "val") -> dict[str, float]:
        """The headline numbers by their tracking names (``val_acc``, ``val_aca``, ...)."""
        return {f"{prefix}_{f.metadata['short']}": getattr(self, f.name)
                for f in fields(self) if "short" in f.metadata}  # type: ignore[arg-type]

    @classmethod
    def tracked_names(cls, prefix: str = "val") -> list[str]:
        """The names ``tracked`` gives, before there is a result."""
        return [f"{prefix}_{f.metadata['short']}" for f in fields(cls) if "short" in f.metadata]  # type: ignore

    @property
    def score(self) -> float:
        return float(getattr(self, self.selection))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (metrics.json): per-class rows keyed by class name."""
        data = asdict(self)  # type: ignore[call-overload]
        data["per_class"] = {row.pop("name"): row for row in data["per_class"]}
        return {**data, "multilabel": self.multilabel}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        values = {k: v for k, v in data.items() if k in known}
        values["per_class"] = [cls.row_type(name=name, **row) for name, row in data["per_class"].items()]
        if "most_confused" in values:
            values["most_confused"] = [ConfusedPair(**p) for p in values["most_confused"]]
        return cls(**values)


@dataclass(frozen=True)
class ClassificationResult(_Result):
    class_names: list[str]
    num_samples: int = metric("images")
    accuracy: float = metric("accuracy", short="acc")
    mean_class_accuracy: float = metric("mean class accuracy (ACA)", short="aca")
    macro_f1: float = metric("macro-F1", short="macro_f1")
    # Per-class F1 weighted by each class's images (sklearn's average="weighted"); reported with its interval, not
    # tracked per epoch.
    weighted_f1: float = metric("weighted F1")
    roc_auc_macro: float | None = metric("ROC AUC (macro, one-vs-rest)")
    expected_calibration_error: float | None = metric("expected calibration error")
    uncalibrated_ece: float | None = metric("expected calibration error before temperature scaling", default=None)
    per_class: list[ClassRow] = field(default_factory=list)
    confusion_matrix: list[list[int]] = field(default_factory=list)  # rows true, columns predicted
    most_confused: list[ConfusedPair] = field(default_factory=list)
    tta: str = "none"
    ci: dict[str, list[float]] = field(default_factory=dict)  # 95% bootstrap interval of each headline number
    # The headline numbers on the scored images without an exact copy in training (celltune.leaks): {"images",
    # "left_out", headline numbers, "ci"}; None when no scored image has one, or when nobody looked.
    without_twins: dict[str, Any] | None = None
    # {"temperature": the card's, or None; "before", "after": the reliability diagram's bins (celltune.calibration)
    # of the probabilities before and after temperature scaling}; None when nobody looked.
    calibration: dict[str, Any] | None = None
    # Prediction sets (celltune.conformal.set_summary) at each coverage the report measures; None without them.
    prediction_sets: list[dict[str, Any]] | None = None

    multilabel: ClassVar[bool] = False
    selection: ClassVar[str] = "mean_class_accuracy"
    row_type: ClassVar[type] = ClassRow

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        if "weighted_f1" not in data:  # written before weighted F1 was: the same number from the per-class rows
            rows = data["per_class"].values()
            total = sum(row["support"] for row in rows)
            data = {**data, "weighted_f1": sum(row["f1"] * row["support"] for row in rows) / total if total else 0.0}
        return super().from_dict(data)


@dataclass(frozen=True)
class MultilabelResult(_Result):
    class_names: list[str]
    num_samples: int = metric("images")
    macro_f1: float = metric("macro-F1", short="macro_f1")
    micro_f1: float = metric("micro-F1", short="micro_f1")
    micro_precision: float = metric("micro precision")
    micro_recall: float = metric("micro recall")
    exact_match: float = metric("exact match (all labels right)", short="exact_match")
    roc_auc_macro: float | None = metric("ROC AUC (macro over labels)")
    expected_calibration_error: float | None = metric("expected calibration error (mean over labels)", default=None)
    uncalibrated_ece: float | None = metric("expected calibration error before temperature scaling", default=None)
    per_class: list[LabelRow] = field(default_factory=list)
    thresholds: list[float] = field(default_factory=list)
    tta: str = "none"
    ci: dict[str, list[float]] = field(default_factory=dict)  # 95% bootstrap interval of each headline number
    # The headline numbers on the scored images without an exact copy in training (celltune.leaks): {"images",
    # "left_out", headline numbers, "ci"}; None when no scored image has one, or when nobody looked.
    without_twins: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None  # {"temperature": one per label, or None}
    prediction_sets: list[dict[str, Any]] | None = None  # single-label only: always None

    multilabel: ClassVar[bool] = True
    selection: ClassVar[str] = "macro_f1"
    row_type: ClassVar[type] = LabelRow


Result = ClassificationResult | MultilabelResult


def result_from_dict(data: dict[str, Any]) -> Result:
    return (MultilabelResult if data.get("multilabel") else ClassificationResult).from_dict(data)


def with_tta(result: Result, tta: str) -> Result:
    return replace(result, tta=tta)


def with_intervals(result: Result, intervals: dict[str, list[float]]) -> Result:
    return replace(result, ci=intervals)


def with_calibration(result: Result, truth: np.ndarray, raw_probs: np.ndarray, probs: np.ndarray,
                     temperature: list[float] | None) -> Result:
    """``result``, scored on ``probs`` (the ``raw_probs`` rescaled by ``temperature``, or themselves when it is None),
    with the calibration error before the scaling and, single-label, the reliability diagram's bins before and
    after."""
    info: dict[str, Any] = {"temperature": temperature}
    if not result.multilabel:
        info |= {"before": reliability(truth, raw_probs) if temperature else None, "after": reliability(truth, probs)}
    before = calibration_error(truth, raw_probs, multilabel=result.multilabel) if temperature else None
    return replace(result, uncalibrated_ece=before, calibration=info)


# --- single-label -------------------------------------------------------------------------------------------------


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


# --- a finished run -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunMetrics:
    """metrics.json: the best checkpoint's result on the reported split, and how training went."""

    split: str
    result: Result
    best_epoch: int  # 1-based
    best_val: dict[str, float]  # the headline numbers on validation at the best epoch
    epochs_run: int
    train_seconds: float
    fit_images_per_second: float  # training images per wall-clock second of the fit, validation included
    weights: str = "raw"  # "ema": the best checkpoint holds the averaged weights (--ema)

    def to_dict(self) -> dict[str, Any]:
        run = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("split", "result")}
        return {"split": self.split, **self.result.to_dict(), **run}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunMetrics:
        run = {f.name: data[f.name] for f in fields(cls) if f.name not in ("split", "result") and f.name in data}
        return cls(split=data["split"], result=result_from_dict(data), **run)
