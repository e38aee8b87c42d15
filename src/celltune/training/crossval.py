"""``celltune cv``: stratified (and grouped) k-fold cross-validation.

Every labelled image is held out once. Fold k trains on the other folds, less a validation part chosen the same way
(stratified, groups whole), and is scored on its own images: a full run directory ``fold-k`` under one parent. The
fold plan is saved first (``cv_plan.json``), so ``--resume`` continues a killed cross-validation with the same folds:
finished folds are kept, a fold with a ``last.ckpt`` continues from it, the others start again. ``cv.json`` and
``cv.html`` gather the per-fold numbers, their mean and standard deviation, per-class recall across folds and the
pooled out-of-fold result; ``oof_predictions.csv`` holds every image's out-of-fold prediction.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np

from celltune.audit.leaks import twins_in_folds, without_twins
from celltune.config import TrainConfig
from celltune.data import csvfiles
from celltune.data.class_choice import ClassChoice
from celltune.data.discovery import discover_pool, split_samples
from celltune.data.samples import LabelledSplits, Sample, multi_hot
from celltune.data.splits import sample_folds
from celltune.errors import ConfigError, DataError, MissingError
from celltune.metrics.classification import classification_metrics
from celltune.metrics.multilabel import multilabel_metrics
from celltune.metrics.results import Result, RunMetrics, labelled, with_intervals
from celltune.metrics.stats import bootstrap_intervals
from celltune.training.callbacks import LAST

log = logging.getLogger(__name__)

PLAN = "cv_plan.json"
SUMMARY_SECONDS = 15.0  # the pooled result, its bootstrap intervals and cv.html, after the last fold


def plan_folds(found: LabelledSplits, *, folds: int, seed: int, val_fraction: float) -> list[dict[str, list[str]]]:
    """For each fold, the paths of its train, val and test images: every image is a test image once."""
    pool = found.samples
    plan = []
    for test in sample_folds(pool, found.class_names, folds=folds, seed=seed):
        held_out = set(test)
        rest = [s for i, s in enumerate(pool) if i not in held_out]
        (train, val, _), _ = split_samples(rest, len(found.class_names), seed=seed,
                                           fractions=(1 - val_fraction, val_fraction, 0.0))
        plan.append({"train": [str(s.path) for s in train], "val": [str(s.path) for s in val],
                     "test": [str(pool[i].path) for i in test]})
    return plan


def fold_count(folds: int | str, found: LabelledSplits) -> int:
    """``--folds``: a number, or ``groups`` for one fold per group of the data (leave one group out)."""
    if folds != "groups":
        return int(folds)
    groups = {s.group for s in found.samples}
    if None in groups:
        raise ConfigError("--folds groups holds out one group at a time: give the groups with --groups PATTERN or "
                          "--groups-csv")
    log.info("--folds groups: %d folds, one group held out in each", len(groups))
    return len(groups)


def _fold_splits(found: LabelledSplits, fold: dict[str, list[str]], k: int, folds: int) -> LabelledSplits:
    by_path: dict[str, Sample] = {str(s.path): s for s in found.samples}
    missing = [p for paths in fold.values() for p in paths if p not in by_path]
    if missing:
        raise DataError(f"{missing[0]}: in the cross-validation plan but no longer in the data ({len(missing)} "
                        "images); start a new cross-validation")
    return LabelledSplits(found.class_names, {split: [by_path[p] for p in paths] for split, paths in fold.items()},
                          f"{found.layout}, cross-validation fold {k} of {folds}", celltune_split=True,
                          left_out_classes=found.left_out_classes)


def _fold_state(fold_dir: Path) -> str:
    """done, resumable (a last.ckpt), fresh (nothing yet, or only what a run writes before training)."""
    if (fold_dir / "metrics.json").is_file():
        return "done"
    if (fold_dir / LAST).is_file():
        return "resumable"
    from celltune.training.fit import BEFORE_TRAINING

    if fold_dir.exists() and not {p.name for p in fold_dir.iterdir()} <= set(BEFORE_TRAINING):
        raise ConfigError(f"{fold_dir}: an unfinished fold with files but no {LAST}; move it away to run it again")
    return "fresh"


def _new_parent(config: TrainConfig) -> Path:
    name = config.output.name or f"cv-{config.model.name.replace(':', '_')}-{datetime.now():%Y%m%d-%H%M%S}"
    parent = Path(config.output.out_dir) / name
    if parent.exists():
        raise ConfigError(f"{parent} exists; choose another --name, or --resume it")
    return parent


def _planned(parent: str | Path) -> tuple[TrainConfig, Path, dict]:
    """The configuration, directory and fold plan of the cross-validation in ``parent``."""
    from celltune.config.recipes import load_config

    parent = Path(parent)
    if not (parent / PLAN).is_file():
        raise MissingError(f"{parent / PLAN}: nothing to resume; not a cross-validation directory")
    return load_config(parent / "config.yaml"), parent, json.loads((parent / PLAN).read_text())


def _data(config: TrainConfig):
    from celltune.training.preflight import check_data

    data = config.data
    found = discover_pool(data.root, label_names=data.label_names, groups=data.groups, groups_csv=data.groups_csv,
                          choice=ClassChoice.of(data))
    found, checks, _ = check_data(found, data)
    return found, checks


def run_cv(config: TrainConfig, *, folds: int | str = 5, resume: str | Path | None = None, fold: int | None = None,
           plan_only: bool = False) -> Path:
    """Cross-validate ``config`` (its data split into ``folds`` folds; ``"groups"``: one fold per group, each held
    out in turn); returns the parent directory. With a time budget, each fold still to train gets an equal share of
    what is left of it, less the summary's time. ``plan_only``: save the plan and stop; ``fold``: train that fold
    of the plan in ``resume`` alone (a job of a cluster array, with a share of the budget), no summary."""
    began = time.monotonic()
    from celltune.config.recipes import save_config
    from celltune.training.fit import budget_seconds, fit

    config, parent, saved = _planned(resume) if resume is not None else (config, _new_parent(config), {})
    if fold is not None and not saved:
        raise ConfigError("--fold K trains one fold of a planned cross-validation: plan it first (celltune cv --data "
                          "DATA --folds N --plan-only), then run celltune cv --resume CV_DIR --fold K for each K")
    found, checks = _data(config)
    if not saved:
        folds = fold_count(folds, found)
        saved = {"folds": folds, "seed": config.data.seed,
                 "plan": plan_folds(found, folds=folds, seed=config.data.seed, val_fraction=config.data.val_fraction)}
        parent.mkdir(parents=True)
        save_config(config, parent / "config.yaml")
        (parent / PLAN).write_text(json.dumps(saved) + "\n")
    if plan_only:
        return parent
    if fold is not None and not 1 <= fold <= saved["folds"]:
        raise ConfigError(f"--fold {fold}: {parent} has folds 1 to {saved['folds']}")
    start = time.perf_counter()
    for k, fold_plan in enumerate(saved["plan"], start=1):
        fold_dir = parent / f"fold-{k}"
        if fold is not None and k != fold:
            continue
        state = _fold_state(fold_dir)
        log.info("cross-validation fold %d of %d: %s", k, saved["folds"], state)
        if state == "done":
            continue
        if state == "fresh" and fold_dir.exists():
            shutil.rmtree(fold_dir)  # only what a run writes before its first epoch (checked above)
        fold_config = config.updated(out_dir=str(parent), name=fold_dir.name)
        if config.optim.time_budget and state == "fresh":
            if fold is not None:
                share = budget_seconds(config) / saved["folds"]
            else:
                left = began + budget_seconds(config) - SUMMARY_SECONDS - time.monotonic()
                share = left / sum(_fold_state(parent / f"fold-{j}") != "done" for j in range(k, saved["folds"] + 1))
            fold_config = fold_config.updated(time_budget=f"{max(share, 1.0):.1f}s")
            log.info("fold %d: %.0f s of the time budget", k, share)
        fit(fold_config, found=_fold_splits(found, fold_plan, k, saved["folds"]), checks=checks,
            resume=fold_dir if state == "resumable" else None)
    if fold is not None:
        return parent
    return _write_summary(parent, config, saved, found, checks, wall=time.perf_counter() - start)


def collect_cv(parent: str | Path) -> Path:
    """The summary of a cross-validation whose folds ran on their own (``--fold``): cv.json, cv.html,
    oof_predictions.csv and label_issues.csv, once every fold is done."""
    config, parent, saved = _planned(parent)
    missing = [k for k in range(1, saved["folds"] + 1) if _fold_state(parent / f"fold-{k}") != "done"]
    if missing:
        raise MissingError(f"{parent}: fold(s) {', '.join(map(str, missing))} of {saved['folds']} not finished; run "
                           f"celltune cv --resume {parent} --fold K for each, then collect again")
    found, checks = _data(config)
    return _write_summary(parent, config, saved, found, checks, wall=None)


def _write_summary(parent: Path, config: TrainConfig, saved: dict, found: LabelledSplits, checks,
                   *, wall: float | None) -> Path:
    summary = summarize_cv(parent, folds=saved["folds"], found=found, bootstrap=config.eval.bootstrap,
                           seed=config.data.seed, twinned=twins_in_folds(saved["plan"], found, checks.facts))
    if wall is not None:
        summary["wall_seconds_this_session"] = wall
    if found.left_out_classes:
        summary["classes_left_out"] = found.left_out_classes
    (parent / "cv.json").write_text(json.dumps(summary, indent=2) + "\n")
    from celltune.reports.html import write_cv_report

    write_cv_report(parent, summary)
    return parent


def _oof(parent: Path, folds: int) -> tuple[list[str], list[dict[str, str]]]:
    """The out-of-fold predictions: every fold's predictions on its held-out images, with the fold's number."""
    rows, header = [], []
    for k in range(1, folds + 1):
        with csvfiles.open_csv(parent / f"fold-{k}" / "predictions.csv") as f:
            columns, fold_rows = csvfiles.read_dicts(f)
            header = ["fold", *columns]
            rows += [{"fold": str(k), **row} for row in fold_rows]
    with csvfiles.open_csv(parent / "oof_predictions.csv", "w") as f:
        writer = csvfiles.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return header, rows


def summarize_cv(parent: Path, *, folds: int, found: LabelledSplits, bootstrap: int = 1000, seed: int = 0,
                 twinned: dict[str, bool] | None = None) -> dict:
    """Per-fold headline numbers, mean and standard deviation (ddof 1), per-class recall (multi-label: F1) across
    folds, and the pooled out-of-fold result (multi-label: each image at its own fold's thresholds); with
    ``twinned`` (each image: an exact copy in its fold's training part), the pooled result without those too;
    single-label: label_issues.csv, every image ranked by how likely its label is wrong."""
    runs = [RunMetrics.from_dict(json.loads((parent / f"fold-{k}" / "metrics.json").read_text()))
            for k in range(1, folds + 1)]
    first = runs[0].result
    names, headline = first.class_names, list(first.headline())
    per_fold = [{"fold": k, "images": r.result.num_samples, **r.result.headline()} for k, r in enumerate(runs, 1)]
    values = {m: np.array([row[m] for row in per_fold]) for m in headline}
    per_class_metric = "f1" if first.multilabel else "recall"
    per_class = {c: [getattr(r.result.per_class[i], per_class_metric) for r in runs] for i, c in enumerate(names)}
    _, rows = _oof(parent, folds)
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
    pooled = result.to_dict()
    return {"folds": folds, "images": len(rows), "headline": headline,
            "labels": {name: label for name, label, _ in labelled(first) if name in headline},
            "per_fold": per_fold,
            "mean": {m: float(v.mean()) for m, v in values.items()},
            "std": {m: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for m, v in values.items()},
            "per_class_metric": per_class_metric,
            "per_class": {c: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                              "per_fold": v} for c, v in per_class.items()},
            "pooled": pooled,
            **({} if first.multilabel else {"label_issues": _label_issues(parent, [r["path"] for r in rows], truth,
                                                                          probs, names)})}


def _label_issues(parent: Path, paths: list[str], truth: np.ndarray, probs: np.ndarray, names: list[str], *,
                  shown: int = 12) -> dict:
    """label_issues.csv from the out-of-fold predictions; how many confident learning flags and the first ones."""
    from dataclasses import asdict

    from celltune.audit.label_issues import LABEL_ISSUES, rank_label_issues, write_label_issues

    issues = rank_label_issues(paths, truth, probs, names)
    write_label_issues(parent / LABEL_ISSUES, issues)
    return {"flagged": sum(i.flagged for i in issues), "top": [asdict(i) for i in issues[:shown]]}
