"""Metrics as typed results (computed from predictions by ``classification`` and ``multilabel``); nothing here
prints, draws or writes.

A result is a frozen dataclass: headline numbers, per-class rows and (single-label) the confusion matrix. Each scalar
field carries its display label, and a headline number its short name (``aca`` -> ``val_aca`` in the per-epoch
history). The CLI, the HTML report, the plots and the tracking read those, so a metric is declared here (and
computed in classification.py or multilabel.py).
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

import numpy as np

from celltune.metrics.calibration import calibration_error, reliability


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
    ci: dict[str, list[float]]

    def headline(self) -> dict[str, float]:
        """{field name: value} of the headline numbers."""
        return {f.name: getattr(self, f.name) for f in fields(self) if "short" in f.metadata}  # type: ignore[arg-type]

    def tracked(self, prefix: str = "val") -> dict[str, float]:
        """The headline numbers by their tracking names (``val_acc``, ``val_aca``, ...)."""
        return {f"{prefix}_{f.metadata['short']}": getattr(self, f.name)
                for f in fields(self) if "short" in f.metadata}  # type: ignore[arg-type]

    def tracked_intervals(self, prefix: str) -> dict[str, float]:
        """The bootstrap intervals (``ci``) by tracking name: ``test_aca_ci_low``, ``test_aca_ci_high``, ..."""
        out: dict[str, float] = {}
        for f in fields(self):  # type: ignore[arg-type]
            if "short" in f.metadata and f.name in self.ci:
                low, high = self.ci[f.name]
                out |= {f"{prefix}_{f.metadata['short']}_ci_low": low, f"{prefix}_{f.metadata['short']}_ci_high": high}
        return out

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
    # The headline numbers on the scored images without an exact copy in training (celltune.audit.leaks): {"images",
    # "left_out", headline numbers, "ci"}; None when no scored image has one, or when nobody looked.
    without_twins: dict[str, Any] | None = None
    # {"temperature": the card's, or None; "before", "after": the reliability diagram's bins (calibration.py)
    # of the probabilities before and after temperature scaling}; None when nobody looked.
    calibration: dict[str, Any] | None = None
    # Prediction sets (celltune.metrics.conformal.set_summary) at each coverage the report measures; None without them.
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
    # The headline numbers on the scored images without an exact copy in training (celltune.audit.leaks): {"images",
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
