"""``celltune cv``: stratified (and grouped) k-fold cross-validation.

Every labelled image is held out once. Fold k trains on the other folds, less a validation part chosen the same way
(stratified, groups whole), and is scored on its own images: a full run directory ``fold-k`` under one parent. The
fold plan is saved first (``cv_plan.json``), so ``--resume`` continues a killed cross-validation with the same folds:
finished folds are kept, a fold with a ``last.ckpt`` continues from it, the others start again. ``--repeats R``
cross-validates R times, each on new folds and with a new seed (fold runs ``fold-1`` ... ``fold-F*R``, repeat after
repeat). ``cv_summary`` gathers the finished folds.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from datetime import datetime
from pathlib import Path

from celltune.config import TrainConfig
from celltune.data.class_choice import ClassChoice
from celltune.data.discovery import discover_pool, split_samples
from celltune.data.samples import LabelledSplits, Sample
from celltune.data.splits import sample_folds
from celltune.errors import CelltuneError, ConfigError, DataError, MissingError
from celltune.reports.run_files import write_json
from celltune.training.callbacks import LAST
from celltune.training.cv_summary import repeat_of, write_summary

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


def planned_size(parent: Path, runs: int, *, but: int) -> tuple[int, int] | None:
    """The image size of the first fold run (other than ``but``) that has trained an epoch, and that fold."""
    from celltune.config.recipes import load_config

    for k in range(1, runs + 1):
        run = parent / f"fold-{k}"
        try:
            if k == but or _fold_state(run) == "fresh":
                continue  # a fold that has not trained an epoch plans again when it runs
            size = load_config(run / "config.yaml").data.image_size
        except (OSError, CelltuneError):  # a fold of another job being set up: not one to follow
            continue
        if size:
            return size, k
    return None


def sized_like_first_fold(fold_config: TrainConfig, parent: Path, runs: int, *, k: int) -> TrainConfig:
    """``fold_config`` (fold run ``k``) at the image size of the first fold that trained, when a time budget would
    plan the size: planned alone, a fold near a threshold of the planner (its smaller sizes, its larger ones) could
    train at another size than its neighbours, and the folds would no longer be alike."""
    if not fold_config.optim.time_budget or fold_config.data.image_size:
        return fold_config
    pinned = planned_size(parent, runs, but=k)
    if pinned is None:
        return fold_config
    log.info("fold %d: %d px, the size fold %d trained at, so that the folds are alike", k, *pinned)
    return fold_config.updated(image_size=pinned[0])


def fold_runs(saved: dict) -> int:
    """How many fold runs a plan holds: its folds times its repeats."""
    return saved["folds"] * saved.get("repeats", 1)


def run_cv(config: TrainConfig, *, folds: int | str = 5, repeats: int = 1, resume: str | Path | None = None,
           fold: int | None = None, plan_only: bool = False) -> Path:
    """Cross-validate ``config`` (its data split into ``folds`` folds; ``"groups"``: one fold per group, each held
    out in turn), ``repeats`` times on new folds; returns the parent directory. With a time budget, each fold run still
    to train gets an equal share of what is left of it, less the summary's time, and the image size the first fold's
    plan chose (unless ``--image-size`` was given). ``plan_only``: save the plan and stop; ``fold``: train that fold
    run of the plan in ``resume`` alone (a job of a cluster array, with a share of the budget), no summary."""
    began = time.monotonic()
    from celltune.config.recipes import load_config, save_config
    from celltune.training.fit import budget_seconds, fit

    if repeats < 1:
        raise ConfigError(f"--repeats {repeats}: at least 1")
    config, parent, saved = _planned(resume) if resume is not None else (config, _new_parent(config), {})
    if fold is not None and not saved:
        raise ConfigError("--fold K trains one fold of a planned cross-validation: plan it first (celltune cv --data "
                          "DATA --folds N --plan-only), then run celltune cv --resume CV_DIR --fold K for each K")
    found, checks = _data(config)
    if not saved:
        folds = fold_count(folds, found)
        seed, share = config.data.seed, config.data.val_fraction
        saved = {"folds": folds, "repeats": repeats, "seed": seed,
                 "plan": [f for r in range(repeats) for f in plan_folds(found, folds=folds, seed=seed + r,
                                                                          val_fraction=share)]}
        parent.mkdir(parents=True)
        save_config(config, parent / "config.yaml")
        write_json(parent / PLAN, saved)
    if plan_only:
        return parent
    runs = fold_runs(saved)
    if fold is not None and not 1 <= fold <= runs:
        raise ConfigError(f"--fold {fold}: {parent} has folds 1 to {runs}")
    start = time.perf_counter()
    for k, fold_plan in enumerate(saved["plan"], start=1):
        fold_dir = parent / f"fold-{k}"
        if fold is not None and k != fold:
            continue
        state = _fold_state(fold_dir)
        log.info("cross-validation fold %d of %d: %s", k, runs, state)
        if state == "done":
            continue
        if state == "fresh" and fold_dir.exists():
            shutil.rmtree(fold_dir)  # only what a run writes before its first epoch (checked above)
        if state == "resumable":  # as `celltune train --resume`: its own recipe, the size and epochs it planned
            fold_config = load_config(fold_dir / "config.yaml")
        else:  # a repeat's runs start from their own seed: new initial heads and draws, as its folds are new
            seed = saved["seed"] + repeat_of(k, saved["folds"]) - 1
            fold_config = config.updated(out_dir=str(parent), name=fold_dir.name, seed=seed)
        if config.optim.time_budget and state == "fresh":
            if fold is not None:
                share = budget_seconds(config) / runs
            else:
                left = began + budget_seconds(config) - SUMMARY_SECONDS - time.monotonic()
                share = left / sum(_fold_state(parent / f"fold-{j}") != "done" for j in range(k, runs + 1))
            fold_config = fold_config.updated(time_budget=f"{max(share, 1.0):.1f}s")
            log.info("fold %d: %.0f s of the time budget", k, share)
            fold_config = sized_like_first_fold(fold_config, parent, runs, k=k)
        fit(fold_config, found=_fold_splits(found, fold_plan, k, runs), checks=checks,
            resume=fold_dir if state == "resumable" else None)
    if fold is not None:
        return parent
    return write_summary(parent, config, saved, found, checks, wall=time.perf_counter() - start)


def collect_cv(parent: str | Path) -> Path:
    """The summary of a cross-validation whose folds ran on their own (``--fold``): cv.json, cv.html,
    oof_predictions.csv and label_issues.csv, once every fold is done."""
    config, parent, saved = _planned(parent)
    runs = fold_runs(saved)
    missing = [k for k in range(1, runs + 1) if _fold_state(parent / f"fold-{k}") != "done"]
    if missing:
        raise MissingError(f"{parent}: fold(s) {', '.join(map(str, missing))} of {runs} not finished; run "
                           f"celltune cv --resume {parent} --fold K for each, then collect again")
    found, checks = _data(config)
    return write_summary(parent, config, saved, found, checks, wall=None)
