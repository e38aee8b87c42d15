import csv
import json
from pathlib import Path

import numpy as np
import pytest

from celltune.data.discovery import discover
from celltune.data.samples import LabelledSplits, Sample
from celltune.errors import DataError
from celltune.evaluation.evaluate import align_labels, calibrate_checkpoint, calibrated, evaluate_checkpoint
from celltune.metrics.calibration import MIN_IMAGES, with_temperature
from celltune.metrics.multilabel import tune_thresholds
from celltune.models.checkpoint import ModelCard, read_checkpoint
from celltune.training.fit import fit

from conftest import class_tree, quick_config


def test_align_labels_reindexes_to_the_models_class_order(tmp_path):
    found = LabelledSplits(["b", "c"], {"test": [Sample(tmp_path / "x.png", 0), Sample(tmp_path / "y.png", 1)]})
    aligned = align_labels(found, ["a", "b", "c"], tmp_path)
    assert aligned.class_names == ["a", "b", "c"] and [s.label for s in aligned.splits["test"]] == [1, 2]
    with pytest.raises(DataError, match=r"classes \['z'\] are not among the model's classes"):
        align_labels(LabelledSplits(["a", "z"], {}), ["a", "b"], tmp_path)


@pytest.mark.slow
def test_evaluate_scores_the_runs_own_test_split_and_writes_files(tmp_path):
    data = class_tree(tmp_path / "d", {"x": 10, "y": 10, "z": 10})
    run = fit(quick_config(data, tmp_path / "runs", seed=3, epochs=1))
    result = evaluate_checkpoint(run, data=data, split="test", out_dir=tmp_path / "out")
    # The checkpoint's seed (3, not the default 0) picks the same test images as training's report did.
    expected = json.loads((run / "metrics.json").read_text())
    assert result.num_samples == expected["num_samples"] == 6  # round(0.15 * 10) = 2 of each class
    assert result.accuracy == pytest.approx(expected["accuracy"])
    scored = [row["path"] for row in csv.DictReader((tmp_path / "out" / "predictions_test.csv").open())]
    assert scored == [row["path"] for row in csv.DictReader((run / "predictions.csv").open())]
    assert {Path(p) for p in scored} != {s.path for s in discover(data, seed=0).splits["test"]}
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"metrics_test.json", "predictions_test.csv",
                                                              "confusion_matrix_test.png"}
    two_splits = tmp_path / "two"
    class_tree(two_splits / "train", {"x": 2, "y": 2})
    class_tree(two_splits / "val", {"x": 1, "y": 1})
    with pytest.raises(DataError, match="no 'test' split here"):
        evaluate_checkpoint(run, data=two_splits, split="test")


@pytest.mark.slow
def test_training_calibrates_on_validation_and_scores_report_it(tmp_path):
    data = class_tree(tmp_path / "d", {"x": 25, "y": 25, "z": 25})
    run = fit(quick_config(data, tmp_path / "runs", val_fraction=0.3, epochs=1))
    best = read_checkpoint(run)
    val = discover(data, val_fraction=0.3).splits["val"]
    assert len(val) >= MIN_IMAGES
    (temperature,) = best["temperature"]
    assert temperature > 0 and len(best["conformal_scores"]) == len(val)
    assert best["conformal_scores"] == sorted(best["conformal_scores"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["calibration"]["temperature"] == [temperature]
    assert metrics["uncalibrated_ece"] is not None and metrics["expected_calibration_error"] is not None
    assert [s["target"] for s in metrics["prediction_sets"]] == [0.9, 0.95]
    assert all(set(s["per_class"]) == {"x", "y", "z"} and s["images"] == metrics["num_samples"]
               for s in metrics["prediction_sets"])
    # evaluate gives the same sets (each image's draw is fixed by its name), and --calibrate none the raw numbers.
    again = evaluate_checkpoint(run, data=data, split="test", bootstrap=0)
    assert again.prediction_sets == metrics["prediction_sets"]
    assert again.expected_calibration_error == pytest.approx(metrics["expected_calibration_error"], abs=1e-5)
    raw = evaluate_checkpoint(run, data=data, split="test", bootstrap=0, calibrate="none")
    assert raw.prediction_sets is None and raw.calibration["temperature"] is None
    assert raw.expected_calibration_error == pytest.approx(metrics["uncalibrated_ece"], abs=1e-5)
    assert raw.accuracy == again.accuracy  # a temperature never changes a single-label answer
    # Calibrated again without a temperature: the sets are made from the raw probabilities.
    card, on_val = calibrate_checkpoint(run, data=data, calibrate="none")
    assert card.temperature is None and len(card.conformal_scores) == len(val) and on_val.num_samples == len(val)
    assert evaluate_checkpoint(run, data=data, split="test", bootstrap=0).prediction_sets is not None


def test_multilabel_calibration_is_per_label_and_thresholds_are_tuned_after_it(tmp_path):
    """Label 0 over-confident (logits x3), label 1 well calibrated: its own temperature each, and the thresholds are
    tuned on the rescaled probabilities, as evaluate and predict will apply them."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3000, 2)) * 2
    truth = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(int)
    raw = (1 / (1 + np.exp(-z * np.array([3.0, 1.0])))).astype(np.float32)
    samples = [Sample(tmp_path / f"{i}.png", [c for c in (0, 1) if truth[i, c]]) for i in range(3000)]
    card = ModelCard("resnet18", ["a", "b"], [0.5] * 3, [0.25] * 3, 32, multilabel=True)
    fitted = calibrated(card, samples, raw)
    t0, t1 = fitted.temperature
    assert t0 == pytest.approx(3.0, rel=0.15) and t1 == pytest.approx(1.0, rel=0.15)
    assert fitted.conformal_scores is None  # sets are single-label
    probs = with_temperature(raw, fitted.temperature, multilabel=True)
    assert fitted.thresholds == tune_thresholds(truth, probs)
    assert calibrated(card, samples, raw, temperature=False).temperature is None
