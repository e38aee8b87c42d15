"""What ``celltune cv`` gathers from its finished folds: ``cv.json`` and ``cv.html`` (per-fold numbers, their mean and
standard deviation, per-class numbers across folds, the pooled out-of-fold result), ``oof_predictions.csv`` and, for
single-label data, ``label_issues.csv``.

With ``--repeats R`` the images are cross-validated R times, each time on new folds: fold runs ``fold-1`` ...
``fold-F`` are the first repeat, ``fold-F+1`` ... the second, and so on. The pooled result is the first repeat's
(each image once, as without repeats); the label issues are ranked on every image's out-of-fold probabilities
averaged over the repeats, which is steadier than one model's.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from celltune.audit.leaks import twins_in_folds, without_twins
from celltune.data import csvfiles
from celltune.data.samples import LabelledSplits, multi_hot
from celltune.metrics.classification import classification_metrics
from celltune.metrics.multilabel import multilabel_metrics
from celltune.metrics.results import Result, RunMetrics, labelled, with_intervals
from celltune.metrics.stats import bootstrap_intervals
from celltune.reports.run_files import write_json


def write_summary(parent: Path, config, saved: dict, found: LabelledSplits, checks, *, wall: float | None) -> Path:
    """cv.json and cv.html (and the CSVs) of the cross-validation in ``parent`` with plan ``saved``."""
    folds, repeats = saved["folds"], saved.get("repeats", 1)
    summary = summarize_cv(parent, folds=folds, repeats=repeats, found=found, bootstrap=config.eval.bootstrap,
                           seed=config.data.seed,
                           twinned=twins_in_folds(saved["plan"][:folds], found, checks.facts))
    if wall is not None:
        summary["wall_seconds_this_session"] = wall
    if found.left_out_classes:
        summary["classes_left_out"] = found.left_out_classes
    write_json(parent / "cv.json", summary)
    from celltune.reports.html import write_cv_report

    write_cv_report(parent, summary)
    return parent


def repeat_of(k: int, folds: int) -> int:
    """The repeat (1-based) that fold run ``k`` (1-based) belongs to, ``folds`` runs to a repeat."""
    return (k - 1) // folds + 1


def write_oof(parent: Path, *, folds: int, repeats: int = 1) -> tuple[list[str], list[dict[str, str]]]:
    """oof_predictions.csv: every fold run's predictions on its held-out images, with the fold's number (and, with
    more than one repeat, the repeat's)."""
    rows, header = [], []
    for k in range(1, folds * repeats + 1):
        with csvfiles.open_csv(parent / f"fold-{k}" / "predictions.csv") as f:
            columns, fold_rows = csvfiles.read_dicts(f)
            numbers = {"fold": str(k), **({"repeat": str(repeat_of(k, folds))} if repeats > 1 else {})}
            header = [*numbers, *columns]
            rows += [{**numbers, **row} for row in fold_rows]
    with csvfiles.open_csv(parent / "oof_predictions.csv", "w") as f:
        writer = csvfiles.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return header, rows


def summarize_cv(parent: Path, *, folds: int, found: LabelledSplits, repeats: int = 1, bootstrap: int = 1000,
                 seed: int = 0, twinned: dict[str, bool] | None = None) -> dict:
    """Per-fold headline numbers, mean and standard deviation (ddof 1), per-class recall (multi-label: F1) across
    folds, and the pooled out-of-fold result of the first repeat (multi-label: each image at its own fold's
    thresholds); with ``twinned`` (each image: an exact copy in its fold's training part), the pooled result without
    those too; single-label: label_issues.csv, every image ranked by how likely its label is wrong."""
    runs = [RunMetrics.from_dict(json.loads((parent / f"fold-{k}" / "metrics.json").read_text()))
            for k in range(1, folds * repeats + 1)]
    first = runs[0].result
    names, headline = first.class_names, list(first.headline())
    per_fold = [{"fold": k, "repeat": repeat_of(k, folds), "images": r.result.num_samples, **r.result.headline()}
                for k, r in enumerate(runs, 1)]
    values = {m: np.array([row[m] for row in per_fold]) for m in headline}
    per_class_metric = "f1" if first.multilabel else "recall"
    per_class = {c: [getattr(r.result.per_class[i], per_class_metric) for r in runs] for i, c in enumerate(names)}
    _, every = write_oof(parent, folds=folds, repeats=repeats)
    rows = [r for r in every if int(r["fold"]) <= folds]  # the first repeat: each image once
    label_of = {str(s.path): s.label for s in found.samples}
    probs = np.array([[float(r[f"p_{c}"]) for c in names] for r in rows])
    if first.multilabel:
        truth = multi_hot([label_of[r["path"]] for r in rows], len(names))  # type: ignore[misc]
        thresholds = np.array([runs[int(r["fold"]) - 1].result.thresholds for r in rows])  # type: ignore[union-attr]
        answers = (probs >= thresholds).astype(int)
    else:
        truth, answers = np.array([label_of[r["path"]] for r in rows]), probs.argmax(1)

    def pooled_of(kept: np.ndarray) -> Result:
        if first.multilabel:
            result: Result = multilabel_metrics(truth[kept], answers[kept].astype(float), names)
            result = replace(result, roc_auc_macro=None)  # of 0/1 answers, not of probabilities: left out
        else:
            result = classification_metrics(truth[kept], answers[kept], names, probs=probs[kept])
        if bootstrap:  # --bootstrap 0: no intervals (0 resamples have no percentiles)
            result = with_intervals(result, bootstrap_intervals(truth[kept], answers[kept], num_classes=len(names),
                                                                resamples=bootstrap, seed=seed))
        return result

    result = pooled_of(np.arange(len(rows)))
    if twinned:
        result = replace(result, without_twins=without_twins([twinned.get(r["path"], False) for r in rows],
                                                             pooled_of))
    summary = {"folds": folds, "repeats": repeats, "images": len(rows), "headline": headline,
               "labels": {name: label for name, label, _ in labelled(first) if name in headline},
               "per_fold": per_fold,
               "mean": {m: float(v.mean()) for m, v in values.items()},
               "std": {m: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for m, v in values.items()},
               "per_class_metric": per_class_metric,
               "per_class": {c: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                                 "per_fold": v} for c, v in per_class.items()},
               "pooled": result.to_dict()}
    if not first.multilabel:
        paths = [r["path"] for r in rows]
        summary["label_issues"] = _label_issues(parent, paths, truth, averaged(every, paths, names), names)
    return summary


def averaged(rows: list[dict[str, str]], paths: list[str], names: list[str]) -> np.ndarray:
    """(len(paths), classes): each image's out-of-fold probabilities, averaged over the rows (repeats) that hold it."""
    index = {p: i for i, p in enumerate(paths)}
    total, count = np.zeros((len(paths), len(names))), np.zeros(len(paths))
    for r in rows:
        i = index[r["path"]]
        total[i] += [float(r[f"p_{c}"]) for c in names]
        count[i] += 1
    return total / count[:, None]


def _label_issues(parent: Path, paths: list[str], truth: np.ndarray, probs: np.ndarray, names: list[str], *,
                  shown: int = 12) -> dict:
    """label_issues.csv from the out-of-fold probabilities; how many confident learning flags and the first ones."""
    from dataclasses import asdict

    from celltune.audit.label_issues import LABEL_ISSUES, rank_label_issues, write_label_issues

    issues = rank_label_issues(paths, truth, probs, names)
    write_label_issues(parent / LABEL_ISSUES, issues)
    return {"flagged": sum(i.flagged for i in issues), "top": [asdict(i) for i in issues[:shown]]}
