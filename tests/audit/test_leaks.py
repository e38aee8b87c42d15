from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from celltune.audit.check import audit
from celltune.audit.leaks import twins_in_training, without_twins
from celltune.cli import main as celltune
from celltune.data.discovery import discover
from celltune.data.synthetic import make_dataset
from celltune.metrics.classification import classification_metrics

from conftest import quick_config


@pytest.fixture
def leaky(tmp_path):
    """tiny train/val/test cells where test holds a copy of a training image (re-saved as BMP, another name) and
    val a copy of a test image (a twin, but not of a training image)."""
    root = make_dataset(tmp_path / "cells", per_class=(6, 3, 3), size=32, seed=2)
    classes = sorted(p.name for p in (root / "train").iterdir())
    seen = sorted((root / "train" / classes[0]).iterdir())[0]
    Image.open(seen).save(root / "test" / classes[0] / "copy_of_a_training_cell.bmp")
    shutil.copy(sorted((root / "test" / classes[1]).iterdir())[0], root / "val" / classes[1] / "twin_in_test.png")
    return root


def test_only_scored_images_whose_pixels_are_in_training_count_as_seen(leaky):
    found = discover(leaky)
    twinned = twins_in_training(found, audit(found, leaky, quick=True).facts)
    assert sum(twinned["test"]) == 1 and sum(twinned["val"]) == 0
    (seen,) = [s.path.name for s, t in zip(found.splits["test"], twinned["test"], strict=True) if t]
    assert seen == "copy_of_a_training_cell.bmp"


def test_numbers_without_twins_are_those_of_the_other_images():
    truth, answers = np.array([0, 1, 1, 0, 1]), np.array([0, 1, 0, 0, 0])

    def scored(kept):
        return classification_metrics(truth[kept], answers[kept], ["a", "b"])

    # By hand, without image 0: truth 1 1 0 1, answers 1 0 0 0: accuracy 2/4; recall a 1/1, b 1/3, so ACA 2/3;
    # F1 a = 2*(1/3*1)/(1/3+1) = 1/2, F1 b = 2*(1*1/3)/(1+1/3) = 1/2, macro-F1 1/2.
    clean = without_twins([True, False, False, False, False], scored)
    assert clean["images"] == 4 and clean["left_out"] == 1
    assert clean["accuracy"] == pytest.approx(0.5)
    assert clean["mean_class_accuracy"] == pytest.approx(2 / 3)
    assert clean["macro_f1"] == pytest.approx(0.5)
    assert without_twins([False] * 5, scored) is None  # no leak: nothing more to say
    assert without_twins([True] * 5, scored) == {"images": 0, "left_out": 5}


@pytest.mark.slow
def test_a_run_scores_the_test_split_with_and_without_the_images_training_has_seen(leaky, tmp_path, capsys):
    from celltune.cli.output import print_run
    from celltune.training.fit import fit

    run_dir = fit(quick_config(leaky, tmp_path / "runs", epochs=1, bootstrap=50))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    clean = metrics["without_twins"]
    assert (clean["images"], clean["left_out"]) == (metrics["num_samples"] - 1, 1)
    assert set(clean["ci"]) >= {"accuracy", "mean_class_accuracy", "macro_f1"}
    predictions = (run_dir / "predictions.csv").read_text().splitlines()
    assert len(predictions) - 1 == metrics["num_samples"]  # the benchmark's numbers keep every test image
    report = (run_dir / "report.html").read_text()
    assert f"1 of the {metrics['num_samples']} test images have an exact copy" in report
    print_run(run_dir)
    line = f"without the 1 image(s) whose exact copy is in training ({clean['images']} left):"
    assert line in capsys.readouterr().out
    # evaluate finds the same copy again from the data folder, and --no-twins skips the reading
    assert celltune(["evaluate", str(run_dir), "--data", str(leaky), "--bootstrap", "0"]) == 0
    assert line in capsys.readouterr().out
    assert celltune(["evaluate", str(run_dir), "--data", str(leaky), "--no-twins"]) == 0
    assert "without the" not in capsys.readouterr().out


def test_a_held_out_image_is_seen_when_its_fold_trained_on_a_copy(leaky):
    from celltune.audit.leaks import twins_in_folds

    found = discover(leaky)
    facts = audit(found, leaky, quick=True).facts
    train, test = found.splits["train"], found.splits["test"]
    copy = next(s for s in test if s.path.name == "copy_of_a_training_cell.bmp")
    others = [s for s in test if s is not copy]
    plan = [{"train": [str(s.path) for s in train], "val": [], "test": [str(s.path) for s in test]},
            {"train": [str(s.path) for s in others], "val": [], "test": [str(s.path) for s in train]}]
    twinned = twins_in_folds(plan, found, facts)
    assert twinned[str(copy.path)] is True  # fold 1 trained on the original
    assert not any(twinned[str(s.path)] for s in others)
    assert not any(twinned[str(s.path)] for s in train)  # fold 2 trained without the copy
