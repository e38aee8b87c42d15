import csv
import json
from pathlib import Path

import pytest

from celltune.data import discover
from celltune.errors import DataError
from celltune.evaluate import align_labels, evaluate_checkpoint
from celltune.samples import LabelledSplits, Sample
from celltune.train import fit

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
