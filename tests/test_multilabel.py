import csv
import json

import numpy as np
import pytest
import torch

from celltune.cli import main
from celltune.data import DataError, discover, iterative_split
from celltune.metrics import multi_hot, multilabel_metrics, tune_thresholds
from celltune.synthetic import HPA_CHANNELS, label_structure, make_multilabel_dataset


@pytest.fixture(scope="module")
def hpa(tmp_path_factory):
    return make_multilabel_dataset(tmp_path_factory.mktemp("hpa") / "d", n_images=60, size=32, num_labels=8, seed=2)


def test_multilabel_csv_with_channel_files_and_label_names(hpa):
    found = discover(hpa, label_names=hpa / "label_names.csv")
    assert found.multilabel and len(found.class_names) == 8
    assert found.class_names[5] == f"{label_structure(5)[0]}-size{label_structure(5)[1]}"
    rows = {r["Id"]: r["Target"] for r in csv.DictReader((hpa / "train.csv").open())}
    sample = found.splits["train"][0]
    assert sample.path.parent == hpa / "train" and not sample.path.exists()  # a stem of {Id}_red.png ...
    assert sample.label == tuple(sorted(int(t) for t in rows[sample.path.name].split()))
    assert sum(len(v) for v in found.splits.values()) == 60
    assert discover(hpa).class_names[:2] == ["0", "1"]  # without names, the ids


def test_multilabel_row_without_image_names_it(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train.csv").write_text("Id,Target\nghost,0 1\n")
    with pytest.raises(DataError, match="ghost"):
        discover(tmp_path)


def test_iterative_split_keeps_label_frequencies():
    rng = np.random.default_rng(0)
    labels = [tuple(np.flatnonzero(rng.random(6) < [0.5, 0.4, 0.3, 0.2, 0.1, 0.05]).tolist()) or (0,)
              for _ in range(600)]
    train, val, test = iterative_split(labels, 6, fractions=(0.7, 0.15, 0.15), seed=0)
    assert sorted(train + val + test) == list(range(600))
    assert abs(len(val) - 90) <= 10 and abs(len(test) - 90) <= 10  # iterative stratification sizes are approximate
    y = multi_hot(labels, 6)
    for part in (val, test):
        # Iterative stratification serves the rare labels first: their counts are within 2 of proportional.
        expected = y.sum(0) * len(part) / len(labels)
        assert np.all(np.abs(y[part].sum(0) - expected)[3:] <= 2)
        assert np.allclose(y[part].mean(0), y.mean(0), atol=0.08)


def test_multilabel_metrics_by_hand():
    y = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    probs = np.array([[0.9, 0.2], [0.4, 0.8], [0.6, 0.3], [0.1, 0.1]])
    m = multilabel_metrics(y, probs, ["a", "b"])  # at 0.5: a predicted for rows 0, 2; b for row 1
    a, b = m["per_class"]["a"], m["per_class"]["b"]
    assert (a["precision"], a["recall"]) == (0.5, 0.5) and (b["precision"], b["recall"]) == (1.0, 0.5)
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))  # tp 2, fp 1, fn 2
    assert m["exact_match"] == pytest.approx(2 / 4)  # rows 0 and 3
    assert a["frequency"] == 0.5 and a["roc_auc"] == pytest.approx(0.75)


def test_thresholds_are_tuned_per_label_for_f1():
    y = np.array([[1, 0], [1, 0], [0, 1], [0, 0]])
    probs = np.array([[0.3, 0.9], [0.25, 0.1], [0.1, 0.95], [0.05, 0.92]])
    t = tune_thresholds(y, probs)
    assert 0.1 < t[0] <= 0.25  # label a: positives at 0.3 and 0.25, negatives at 0.1 and 0.05
    assert t[1] == 0.95  # label b: only the 0.95 image is positive
    assert tune_thresholds(np.zeros((3, 1)), np.full((3, 1), 0.7)) == [0.5]


def test_multilabel_four_channel_train_evaluate_predict(hpa, tmp_path, capsys):
    args = ["-q", "train", "--data", str(hpa), "--label-names", str(hpa / "label_names.csv"), "--channels",
            ",".join(HPA_CHANNELS), "--intensity", "percentile", "--model", "mobilenet_v2", "--no-pretrained",
            "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--max-steps-per-epoch", "2",
            "--num-workers", "0", "--out-dir", str(tmp_path), "--name", "ml"]
    assert main(args) == 0
    run = tmp_path / "ml"
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["multilabel"] and best["in_chans"] == 4 and best["channels"] == list(HPA_CHANNELS)
    assert len(best["thresholds"]) == 8 and len(best["mean"]) == 4
    assert best["state_dict"]["features.0.0.weight"].shape[1] == 4
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["multilabel"] and {"macro_f1", "micro_f1"} <= set(metrics)
    first = metrics["class_names"][0]
    assert metrics["per_class"][first]["threshold"] == best["thresholds"][0]
    page = (run / "report.html").read_text()
    assert "Per label" in page and "micro-F1" in page
    capsys.readouterr()

    assert main(["-q", "evaluate", str(run), "--data", str(hpa), "--split", "test"]) == 0
    assert "macro-F1" in capsys.readouterr().out

    stem = hpa / "train" / "cell00000"
    assert main(["-q", "predict", str(run), str(stem)]) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert out.startswith(str(stem))
    listed = [] if "no label above" in out else [part.rsplit(" ", 1) for part in out.split(": ", 1)[1].split(", ")]
    names = json.loads((run / "dataset.json").read_text())["classes"]
    for name, prob in listed:  # every printed label is above its own threshold
        assert float(prob) >= best["thresholds"][names.index(name)] - 5e-4
    csv_out = tmp_path / "preds.csv"
    assert main(["-q", "predict", str(run), str(hpa / "train"), "--output", str(csv_out)]) == 0
    assert len(list(csv.DictReader(csv_out.open()))) == 60
