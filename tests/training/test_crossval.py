import csv
import json
import shutil
import warnings
from pathlib import Path

import pytest

from celltune.cli import main
from celltune.config.recipes import load_config, save_config
from celltune.data.discovery import discover, discover_pool
from celltune.errors import ConfigError, MissingError
from celltune.predict.predictor import Prediction
from celltune.predict.to_csv import write_predictions_csv
from celltune.training.crossval import PLAN, fold_count, plan_folds, run_cv
from celltune.training.cv_summary import write_oof
from celltune.training.module import CellClassifier

from conftest import history, png, quick_config

pytestmark = pytest.mark.slow


@pytest.fixture()
def patients(tmp_path):
    """One class-folder tree: 3 classes, 10 patients, 2 images of each class per patient."""
    root = tmp_path / "d"
    for p in range(10):
        for c, cls in enumerate(("a", "b", "c")):
            for i in range(2):
                png(root / cls / f"patient{p}_{i}.png", size=(16, 16), value=(70 * c + 5 * p + i) % 256)
    return root


def test_cv_makes_a_run_per_fold_holds_every_image_out_once_and_summarizes(patients, tmp_path, capsys):
    # A cell saved twice, under two patients: where their folds differ, each copy is seen in the other's training.
    (patients / "a" / "patient9_copy.png").write_bytes((patients / "a" / "patient0_0.png").read_bytes())
    # 6 or 7 patients left outside each test fold: a validation third of them (a 15% part cannot be whole groups).
    args = ["-q", "cv", "--data", str(patients), "--folds", "3", "--groups", r"(patient\d+)_", "--val-fraction",
            "0.34", "--model", "mobilenet_v2", "--no-pretrained", "--image-size", "16", "--epochs", "1", "--batch-size",
            "8",
            "--max-steps-per-epoch", "1", "--num-workers", "0", "--out-dir", str(tmp_path / "runs"), "--name", "cv"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(args) == 0
    # each fold's directory holds celltune's files before Lightning's checkpoint: that is expected, and not shown
    assert not [w for w in seen if "exists and is not empty" in str(w.message)]
    parent = tmp_path / "runs" / "cv"
    assert all((parent / f"fold-{k}" / "report.html").is_file() for k in (1, 2, 3))
    with (parent / "oof_predictions.csv").open() as f:
        oof = list(csv.DictReader(f))
    assert sorted(r["path"] for r in oof) == sorted(str(p) for p in patients.rglob("*.png"))  # each once
    folds_of = {}
    for r in oof:  # every patient in one fold only
        folds_of.setdefault(r["path"].split("/")[-1].split("_")[0], set()).add(r["fold"])
    assert all(len(f) == 1 for f in folds_of.values()) and len(folds_of) == 10
    s = json.loads((parent / "cv.json").read_text())
    assert [row["fold"] for row in s["per_fold"]] == [1, 2, 3] and s["images"] == 61
    accs = [row["accuracy"] for row in s["per_fold"]]
    assert s["mean"]["accuracy"] == pytest.approx(sum(accs) / 3)
    assert s["pooled"]["accuracy"] == pytest.approx(sum(r["true"] == r["predicted"] for r in oof) / 61)
    assert sum(map(sum, s["pooled"]["confusion_matrix"])) == 61 and set(s["per_class"]) == {"a", "b", "c"}
    # A held-out copy counts as seen where its twin is in its fold's training part (not its validation part).
    copies = {str(patients / "a" / "patient0_0.png"): str(patients / "a" / "patient9_copy.png")}
    copies.update({b: a for a, b in copies.items()})
    plan = json.loads((parent / PLAN).read_text())["plan"]
    seen = {c for fold in plan for c in fold["test"] if c in copies and copies[c] in fold["train"]}
    clean = s["pooled"]["without_twins"]
    if seen:
        kept = [r for r in oof if r["path"] not in seen]
        assert (clean["left_out"], clean["images"]) == (len(seen), 61 - len(seen))
        assert clean["accuracy"] == pytest.approx(sum(r["true"] == r["predicted"] for r in kept) / len(kept))
    else:
        assert clean is None
    page = (parent / "cv.html").read_text()
    assert "mean ± std" in page and "Pooled out-of-fold confusion matrix" in page
    # every image ranked by how likely its label is wrong, from the out-of-fold probabilities (cleanlab)
    with (parent / "label_issues.csv").open() as f:
        issues = list(csv.DictReader(f))
    assert sorted(r["path"] for r in issues) == sorted(r["path"] for r in oof)
    assert [int(r["rank"]) for r in issues] == list(range(1, 62))
    qualities = [float(r["label_quality"]) for r in issues]
    assert qualities == sorted(qualities) and "Labels that look wrong" in page
    assert "mean +- std" in capsys.readouterr().out
    # `celltune compare` reads the out-of-fold predictions as cv wrote them: against itself, cv.json's pooled numbers
    assert main(["-q", "compare", str(parent), str(parent), "--json", str(tmp_path / "c.json")]) == 0
    c = json.loads((tmp_path / "c.json").read_text())
    assert c["images"] == 61 and c["a"]["accuracy"] == pytest.approx(s["pooled"]["accuracy"])
    assert c["a"]["macro_f1"] == pytest.approx(s["pooled"]["macro_f1"]) and c["difference"]["macro_f1"] == 0


def test_folds_keep_groups_whole_and_validation_inside_the_training_part(patients):
    found = discover(patients, groups=r"(patient\d+)_")
    plan = plan_folds(found, folds=5, seed=0, val_fraction=0.2)
    assert sorted(p for fold in plan for p in fold["test"]) == sorted(str(s.path) for s in found.samples)
    for fold in plan:
        assert not set(fold["test"]) & set(fold["train"]) and not set(fold["val"]) & set(fold["train"])
        patient = {split: {p.split("/")[-1].split("_")[0] for p in paths} for split, paths in fold.items()}
        assert not (patient["test"] & patient["train"] or patient["test"] & patient["val"] or
                    patient["val"] & patient["train"])


def test_a_killed_cv_resumes_its_unfinished_folds(patients, tmp_path, monkeypatch):
    config = quick_config(patients, tmp_path / "runs", name="cv", image_size=16, epochs=2, max_steps_per_epoch=1)
    original = CellClassifier.on_train_epoch_start
    started: list[int] = []

    def crash_in_fold_two(self):
        original(self)
        started.append(self.current_epoch)
        if len(started) == 4:  # fold 1 ran epochs 0 and 1; fold 2 crashes in its second epoch
            raise RuntimeError("power cut")

    monkeypatch.setattr(CellClassifier, "on_train_epoch_start", crash_in_fold_two)
    with pytest.raises(RuntimeError, match="power cut"):
        run_cv(config, folds=3)
    parent = tmp_path / "runs" / "cv"
    done_at = (parent / "fold-1" / "metrics.json").stat().st_mtime_ns
    assert (parent / PLAN).is_file() and (parent / "fold-2" / "last.ckpt").is_file()
    assert not (parent / "fold-3").exists()
    monkeypatch.setattr(CellClassifier, "on_train_epoch_start", original)
    # A fold resumes with its own recipe, as `celltune train --resume` does (a time budget may have planned its size).
    saved = parent / "fold-2" / "config.yaml"
    save_config(load_config(saved).updated(image_size=24), saved)
    assert run_cv(config, folds=3, resume=parent) == parent
    assert load_config(saved).data.image_size == 24
    assert load_config(parent / "fold-3" / "config.yaml").data.image_size == 16
    assert (parent / "fold-1" / "metrics.json").stat().st_mtime_ns == done_at  # kept, not trained again
    assert [r["epoch"] for r in history(parent / "fold-2")] == ["1", "2"]  # continued from its last.ckpt
    assert len(json.loads((parent / "cv.json").read_text())["per_fold"]) == 3
    with pytest.raises(MissingError, match="nothing to resume"):
        run_cv(config, resume=tmp_path)


def test_a_time_budget_is_shared_between_the_folds(patients, tmp_path):
    parent = run_cv(quick_config(patients, tmp_path, name="cvb", time_budget="10m", epochs=1, bootstrap=0), folds=2)
    plans = [json.loads((parent / f"fold-{k}" / "plan.json").read_text()) for k in (1, 2)]
    # Fold 1 gets half of 600 s less the summary's 15 s and what went before it; fold 2 all that is left then.
    assert 250 < plans[0]["budget_seconds"] <= (600 - 15) / 2
    assert plans[0]["budget_seconds"] < plans[1]["budget_seconds"] <= 600 - 15 - plans[0]["finished_seconds"]
    assert all(p["epochs"] == p["epochs_run"] == 1 and p["within_budget"] for p in plans)  # --epochs 1 caps both


def test_with_a_time_budget_later_folds_train_at_the_size_the_first_fold_planned(patients, tmp_path):
    config = quick_config(patients, tmp_path, name="cvsize", time_budget="10m", epochs=1, bootstrap=0, image_size=None)
    alone = run_cv(config.updated(name="cvalone"), folds=2, plan_only=True)
    run_cv(config, resume=alone, fold=2)
    own_size = load_config(alone / "fold-2" / "config.yaml").data.image_size
    # Fold 1 trained at another size than fold 2 would plan alone: the same run, as if its plan had chosen that size.
    parent = run_cv(config, folds=2, plan_only=True)
    shutil.copytree(alone / "fold-2", parent / "fold-1")
    save_config(load_config(parent / "fold-1" / "config.yaml").updated(image_size=own_size + 32),
                parent / "fold-1" / "config.yaml")
    run_cv(config, resume=parent, fold=2)
    assert load_config(parent / "fold-2" / "config.yaml").data.image_size == own_size + 32
    assert json.loads((parent / "fold-2" / "plan.json").read_text())["image_size"] == own_size + 32


def test_out_of_fold_table_keeps_names_that_look_like_formulas_as_text_guarded_once(tmp_path):
    names = ["=cmd", "b"]
    for k, path in ((1, "@one.png"), (2, "-two.png")):
        (tmp_path / f"fold-{k}").mkdir()
        write_predictions_csv(tmp_path / f"fold-{k}" / "predictions.csv", [Prediction(Path(path), [0.8, 0.2])], names,
                              labels=[1])
    header, rows = write_oof(tmp_path, folds=2)
    assert [(r["fold"], r["path"], r["true"], r["predicted"]) for r in rows] == [
        ("1", "@one.png", "b", "=cmd"), ("2", "-two.png", "b", "=cmd")]
    raw = list(csv.reader((tmp_path / "oof_predictions.csv").open(newline="")))
    assert raw[0] == header and [r[:4] for r in raw[1:]] == [["1", "'@one.png", "b", "'=cmd"],
                                                             ["2", "'-two.png", "b", "'=cmd"]]


def test_folds_groups_holds_each_slide_out_once_with_a_whole_slide_for_validation(tmp_path):
    """The issue's 58 histology tiles from 5 slides: --folds 5 with a 15% validation share asked for 7 groups."""
    root = tmp_path / "tiles"
    for slide, n in enumerate((12, 11, 13, 10, 12)):
        for i in range(n):
            png(root / ("tumour" if i % 2 else "stroma") / f"slide{slide}_{i}.png", value=(20 * slide + i) % 256)
    found = discover_pool(root, groups=r"(slide\d+)_")
    assert fold_count("groups", found) == 5 and fold_count(3, found) == 3
    plan = plan_folds(found, folds=5, seed=0, val_fraction=0.15)

    def slides(paths):
        return {Path(p).name.split("_")[0] for p in paths}

    assert sorted(next(iter(slides(f["test"]))) for f in plan) == [f"slide{s}" for s in range(5)]
    for fold in plan:
        test, val, train = slides(fold["test"]), slides(fold["val"]), slides(fold["train"])
        assert (len(test), len(val), len(train)) == (1, 1, 3) and not (test & val or test & train or val & train)
    with pytest.raises(ConfigError, match="--folds groups holds out one group at a time: give the groups with "
                       "--groups PATTERN"):
        fold_count("groups", discover_pool(root))


def test_two_slides_cross_validate_without_validation(tmp_path):
    """Leave one slide out of two: the other trains alone, no slide can be spared for validation."""
    root = tmp_path / "tiles"
    for slide in (0, 1):
        for i in range(8):
            png(root / ("tumour" if i % 2 else "stroma") / f"slide{slide}_{i}.png", value=(60 * slide + 9 * i) % 256)
    found = discover_pool(root, groups=r"(slide\d+)_")
    plan = plan_folds(found, folds=fold_count("groups", found), seed=0, val_fraction=0.15)
    assert [(len(f["train"]), len(f["val"]), len(f["test"])) for f in plan] == [(8, 0, 8), (8, 0, 8)]


def test_repeated_folds_run_as_separate_jobs_then_collected_rank_labels_on_averaged_probabilities(patients, tmp_path,
                                                                                                   capsys):
    """A cluster's way: plan 2 folds twice over (--repeats 2), run each fold on its own (in any order, as array jobs
    would), collect."""
    common = ["--model", "mobilenet_v2", "--no-pretrained", "--image-size", "16", "--epochs", "1", "--batch-size", "8",
              "--max-steps-per-epoch", "1", "--num-workers", "0", "--bootstrap", "0"]
    assert main(["-q", "cv", "--data", str(patients), "--folds", "2", "--repeats", "2", "--plan-only", "--out-dir",
                 str(tmp_path), "--name", "jobs", *common]) == 0
    parent = tmp_path / "jobs"
    out = capsys.readouterr().out
    assert "--fold K" in out and "array 1-4" in out and (parent / PLAN).is_file()
    assert not any(parent.glob("fold-*"))  # planned only
    assert main(["-q", "cv", "--data", str(patients), "--fold", "1", *common]) == 2
    assert main(["-q", "cv", "--resume", str(parent), "--fold", "5"]) == 2
    errors = capsys.readouterr().err
    assert "--resume CV_DIR --fold K" in errors and "folds 1 to 4" in errors
    for other in (["--repeats", "3"], ["--folds", "5"]):  # the plan's folds and repeats, never silently others
        assert main(["-q", "cv", "--resume", str(parent), "--fold", "2", *other]) == 2
        assert "folds and repeats in CV_DIR): give them alone" in capsys.readouterr().err
    assert not (parent / "fold-2").exists()
    assert main(["-q", "cv", "--resume", str(parent), "--fold", "2"]) == 0  # in any order, as array jobs run
    assert (parent / "fold-2" / "metrics.json").is_file() and not (parent / "fold-1").exists()
    assert not (parent / "cv.json").exists()  # a single fold writes no summary
    assert main(["-q", "cv", "--collect", str(parent)]) != 0
    assert "fold(s) 1, 3, 4 of 4 not finished" in capsys.readouterr().err
    for k in (4, 1, 3):
        assert main(["-q", "cv", "--resume", str(parent), "--fold", str(k)]) == 0
    assert main(["-q", "cv", "--collect", str(parent)]) == 0
    assert "mean +- std" in capsys.readouterr().out
    s = json.loads((parent / "cv.json").read_text())
    plan = json.loads((parent / PLAN).read_text())["plan"]
    with (parent / "oof_predictions.csv").open() as f:
        oof = list(csv.DictReader(f))
    assert [(row["fold"], row["repeat"]) for row in s["per_fold"]] == [(1, 1), (2, 1), (3, 2), (4, 2)]
    assert s["images"] == 60 and s["repeats"] == 2
    planned = {(str(k), str((k + 1) // 2), path) for k, fold in enumerate(plan, 1) for path in fold["test"]}
    assert {(r["fold"], r["repeat"], r["path"]) for r in oof} == planned and len(oof) == 120
    everything = sorted(str(p) for p in patients.rglob("*.png"))
    assert [sorted(plan[0]["test"] + plan[1]["test"]), sorted(plan[2]["test"] + plan[3]["test"])] == [everything] * 2
    assert {frozenset(plan[0]["test"]), frozenset(plan[1]["test"])} != {frozenset(plan[2]["test"]),
                                                                       frozenset(plan[3]["test"])}  # new folds
    assert [load_config(parent / f"fold-{k}" / "config.yaml").data.seed for k in (1, 2, 3, 4)] == [0, 0, 1, 1]
    first = [r for r in oof if r["repeat"] == "1"]  # the pooled result: the first repeat, each image once
    assert s["pooled"]["accuracy"] == pytest.approx(sum(r["true"] == r["predicted"] for r in first) / 60)
    # each image's label quality: the probability of its given label, averaged over its two held-out predictions
    given = {}
    for r in oof:
        given.setdefault(r["path"], []).append(float(r[f"p_{r['true']}"]))
    with (parent / "label_issues.csv").open() as f:
        issues = list(csv.DictReader(f))
    assert sorted(r["path"] for r in issues) == everything
    assert all(float(r["label_quality"]) == pytest.approx(sum(given[r["path"]]) / 2, abs=2e-6) for r in issues)
    assert "2 repeats on new folds" in (parent / "cv.html").read_text()
