from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from celltune.config.recipes import load_config
from celltune.data.samples import LabelledSplits, Sample
from celltune.errors import ConfigError, DataError
from celltune.metrics.results import RunMetrics
from celltune.tuning.folds import (
    AUTO_FOLDS,
    SMALL_VALIDATION,
    fold_splits,
    plan_search_folds,
    resolve_folds,
    retraining_seconds,
)
from celltune.tuning.report import why_stopped
from celltune.tuning.search import new_tune, read_settings, run_tune

from conftest import FakeClock, quick_config

SPACE = """
options:
  lr: {choices: [0.01, 1.0e-7]}
start_with:
  - {lr: 0.01}
"""


def splits(*, val: int, groups: int = 0) -> LabelledSplits:
    """Two classes; ``val`` validation images, 40 training, 10 test; with ``groups``, image i of a split belongs to
    group i % groups of that split."""
    def made(split: str, n: int) -> list[Sample]:
        return [Sample(Path(f"/d/{split}/{i}.png"), i % 2, f"{split}-{i % groups}" if groups else None)
                for i in range(n)]

    return LabelledSplits(["a", "b"], {"train": made("train", 40), "val": made("val", val),
                                       "test": made("test", 10)}, "test layout")


def test_auto_chooses_on_folds_only_where_validation_is_small():
    assert resolve_folds("auto", splits(val=SMALL_VALIDATION - 1)) == AUTO_FOLDS
    assert resolve_folds("auto", splits(val=SMALL_VALIDATION)) == 1
    assert resolve_folds("auto", splits(val=10, groups=2)) == 2 * 2  # 2 groups in each of train and val: 4 folds
    assert resolve_folds("auto", splits(val=10, groups=1)) == 2  # one group each: two folds, one group each
    assert resolve_folds("3", splits(val=10)) == 3 and resolve_folds(1, splits(val=10)) == 1
    for wrong in ("0", "many"):
        with pytest.raises(ConfigError, match=rf"--folds {wrong}: give"):
            resolve_folds(wrong, splits(val=10))


def test_folds_hold_out_every_training_and_validation_image_once_groups_whole_and_no_test_image():
    found = splits(val=20, groups=4)
    plan = plan_search_folds(found, folds=4, seed=0)
    held = [p for fold in plan for p in fold]
    pool = {str(s.path) for s in found.splits["train"] + found.splits["val"]}
    assert sorted(held) == sorted(pool)  # every one once, no test image
    group_of = {str(s.path): s.group for s in found.samples}
    fold_of_group = {}
    for k, fold in enumerate(plan):
        for path in fold:
            assert fold_of_group.setdefault(group_of[path], k) == k  # a group never spans two folds
    second = fold_splits(found, plan[1], 2)
    assert {str(s.path) for s in second.splits["val"]} == set(plan[1])
    assert {str(s.path) for s in second.splits["train"]} == pool - set(plan[1])
    assert set(second.splits) == {"train", "val"} and second.celltune_split
    with pytest.raises(DataError, match=r"/gone.png: in this search's folds \(folds.json\) but no longer"):
        fold_splits(found, ["/gone.png"], 1)


def test_the_winner_retrains_for_a_trials_time_unless_that_leaves_the_search_under_two_trials():
    def kept(trial, budget):
        return retraining_seconds(trial, folds=5, budget=budget, finish=60, min_trial=60)

    # 2 hours, a quarter a trial: 1800 s kept; 7200 - 60 - 2 * 5 * 60 = 6540 s would be room for more
    assert kept(1800, 7200) == 1800
    # 1000 s and trials of 400 s: 1000 - 60 - 400 = 540 s would hold under two trials of 5 folds of 60 s; the room
    # left beside those two is 1000 - 60 - 600 = 340 s
    assert kept(400, 1000) == 340
    # 7 minutes: no room beside two trials, so one fold's time, 105 / 5
    assert kept(105, 420) == 21
    assert kept(1800, None) == 1800 and kept(None, 7200) is None  # no budget: a trial's; no trial budget: epochs


def test_a_search_on_folds_keeps_a_trials_time_for_the_winner_and_gives_it_what_the_trials_left(
        tiny_data, tmp_path, monkeypatch):
    from celltune.tuning import folds, report, search

    clock, budgets, retrained = FakeClock(), [], []

    def cross_validated(trial, config, *, seconds, **kwargs):  # a trial that takes all its time, instantly
        budgets.append(seconds)
        clock.now += seconds
        return 0.5

    def finish_tune(tune_dir, study, config, *, retrain, **kwargs):
        retrain(study.best_trial)

    monkeypatch.setattr(search, "time", SimpleNamespace(monotonic=clock))  # search's clock alone
    monkeypatch.setattr(folds, "cross_validated", cross_validated)
    monkeypatch.setattr(folds, "retrain_winner", lambda *args, seconds, **kwargs: retrained.append(seconds))
    monkeypatch.setattr(report, "finish_tune", finish_tune)
    (tmp_path / "space.yaml").write_text(SPACE)
    config = quick_config(tiny_data, tmp_path, name="timed").updated(time_budget="2h")
    run_tune(new_tune(config, space=tmp_path / "space.yaml", folds=5))
    # 7200 s less 60 to finish and 1800 kept for the winner: two trials of a quarter, then the 1740 s left
    assert budgets == [1800, 1800, 1740] and retrained == [1800]

    budgets.clear()
    retrained.clear()
    config = config.updated(name="short", time_budget="8m")
    run_tune(new_tune(config, space=tmp_path / "space.yaml", folds=5))
    # 480 s: only one fold's 24 s kept (a trial's 120 would leave room for under two trials of 5 folds of 60 s); one
    # trial of 120 s, then the 276 s left beside the 24 hold no trial of 5 folds: the winner gets them, up to 120
    assert budgets == [120] and retrained == [120]


def predicted_paths(run: Path) -> set[str]:
    with (run / "predictions.csv").open() as f:
        return {row["path"] for row in csv.DictReader(f)}


@pytest.mark.slow
def test_a_search_on_folds_prunes_after_a_fold_and_scores_the_winner_retrained_once_on_test(
        tiny_data, tmp_path, scored_by_lr):
    (tmp_path / "space.yaml").write_text(SPACE)
    base = quick_config(tiny_data, tmp_path, name="folds", epochs=2, freeze_backbone=True, bootstrap=0)
    tune_dir = new_tune(base, space=tmp_path / "space.yaml", max_trials=2, folds=3)
    settings = read_settings(tune_dir)
    assert settings.folds == 3
    study = optuna.load_study(study_name=settings.study, storage=settings.storage)
    study.enqueue_trial({"lr": 1e-7})  # behind the first after fold 2 of 3: pruned there
    run_tune(tune_dir)

    first, behind = optuna.load_study(study_name=settings.study, storage=settings.storage).trials
    assert [first.state, behind.state] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert first.value == pytest.approx(0.9) and first.user_attrs["fold_scores"] == [0.9, 0.9, 0.9]
    assert first.intermediate_values == {1: 0.9, 2: 0.9, 3: 0.9}  # reported after each fold
    assert behind.user_attrs["pruned_after"] == 2 and not (tune_dir / "trials" / "trial-0001" / "fold-3").exists()
    assert why_stopped(behind) == "pruned after fold 2: behind the trials that reached that fold"
    assert why_stopped(first) == "ran its 3 folds (2 epochs each on average)"

    # Each fold run validated on its own held-out images: together the training and validation images, once each.
    plan = json.loads((tune_dir / "folds.json").read_text())["held_out"]
    for k, held in enumerate(plan, start=1):
        assert predicted_paths(tune_dir / "trials" / "trial-0000" / f"fold-{k}") == set(held)
    train_val = {str(p) for split in ("train", "val") for p in (tiny_data / split).rglob("*.png")}
    assert sorted(p for fold in plan for p in fold) == sorted(train_val)

    # The winner trained once more on the training split, chosen on its validation split, scored once on test.
    retrained = tune_dir / "winner-trial-0000"
    assert RunMetrics.from_dict(json.loads((retrained / "metrics.json").read_text())).split == "val"
    assert predicted_paths(retrained) == {str(p) for p in (tiny_data / "val").rglob("*.png")}
    winner = json.loads((tune_dir / "winner.json").read_text())
    assert winner["trial"] == 0 and winner["run_dir"] == str(retrained) and winner["selection"].endswith(
        "mean of 3 folds")
    folds_aca = [RunMetrics.from_dict(json.loads((tune_dir / "trials" / "trial-0000" / f"fold-{k}" /
                                                  "metrics.json").read_text())).result.headline()
                 for k in (1, 2, 3)]
    for name, value in winner["val"].items():
        assert value == pytest.approx(sum(h[name] for h in folds_aca) / 3)
        assert winner["overstated_by"][name] == pytest.approx(value - winner["test"][name])
    assert (tune_dir / "winner" / "metrics_test.json").is_file()
    best = load_config(tune_dir / "best.yaml")
    assert best == load_config(retrained / "config.yaml").updated(name=None, out_dir="runs", time_budget=None)
    # The folds' reports left out Grad-CAM, the winner's, its last run, has it again.
    fold_report = tune_dir / "trials" / "trial-0000" / "fold-1" / "report.html"
    assert "Grad-CAM left out of this run" in fold_report.read_text()
    assert best.eval.heatmaps and '<div class="cams">' in (retrained / "report.html").read_text()
    assert best.optim.lr == 0.01
    page = (tune_dir / "tune.html").read_text()
    assert "pruned after fold 2" in page and "mean of 3 folds" in page and "trained once more" in page

    # Resumed when finished: neither trained again nor scored on test again.
    stamps = [(retrained / "metrics.json").stat().st_mtime_ns,
              (tune_dir / "winner" / "metrics_test.json").stat().st_mtime_ns]
    run_tune(tune_dir)
    assert stamps == [(retrained / "metrics.json").stat().st_mtime_ns,
                      (tune_dir / "winner" / "metrics_test.json").stat().st_mtime_ns]


def test_a_trial_whose_later_fold_had_no_time_says_which_fold():
    short = "--time-budget 0:30: not one epoch fits"
    trial = optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs={"fold_scores": [0.5], "too_short": short})
    assert why_stopped(trial) == f"pruned before fold 2: {short}"
    trial = optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs={"too_short": short})
    assert why_stopped(trial) == f"pruned before training: {short}"


def test_a_trials_later_folds_train_at_the_size_its_first_fold_trained(tiny_data, tmp_path, monkeypatch):
    from celltune.training import fit
    from celltune.tuning import search
    from celltune.tuning.folds import cross_validated

    real_prepare = fit.prepare

    def first_fold_at_48(config, **options):  # as if fold 1's own plan had chosen 48 px, a size none would here
        return real_prepare(config.updated(image_size=48) if config.output.name == "fold-1" else config, **options)

    monkeypatch.setattr(fit, "prepare", first_fold_at_48)
    config = quick_config(tiny_data, tmp_path, epochs=1, freeze_backbone=True, bootstrap=0, image_size=None)
    found, checks = search._data(config)
    plan = plan_search_folds(found, folds=2, seed=0)
    trial = SimpleNamespace(number=0, set_user_attr=lambda *_: None, report=lambda *_, **__: None,
                            should_prune=lambda: False)
    cross_validated(trial, config, run_dir=tmp_path / "trial", found=found, checks=checks, plan=plan, seconds=600)
    # Planned alone, fold 2 would choose its own size (the size rule's 64 px, without the pin): it follows fold 1.
    second = tmp_path / "trial" / "fold-2"
    assert load_config(second / "config.yaml").data.image_size == 48
    assert json.loads((second / "plan.json").read_text())["image_size"] == 48
