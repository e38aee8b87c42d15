"""`celltune train` from the command line: recipe files under flags, resume, multi-label data."""

import csv
import json

import pytest
import torch
import yaml

from celltune.cli import main
from celltune.data.synthetic import HPA_CHANNELS, make_multilabel_dataset

from conftest import history

slow = pytest.mark.slow


@slow
def test_train_resolves_config_file_then_flags(trained_run, capsys):
    resolved = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert resolved["optim"]["epochs"] == 1 and resolved["optim"]["batch_size"] == 8
    assert resolved["data"]["image_size"] == 32
    assert len(history(trained_run)) == 1


@slow
def test_resume_flag_continues_a_run_in_place(tiny_data, tmp_path):
    args = ["-q", "train", "--data", str(tiny_data), "--model", "mobilenet_v2", "--no-pretrained", "--image-size",
            "32", "--batch-size", "8", "--max-steps-per-epoch", "1", "--num-workers", "0", "--scheduler", "plateau",
            "--out-dir", str(tmp_path), "--name", "r"]
    assert main([*args, "--epochs", "1"]) == 0
    assert main(["-q", "train", "--resume", str(tmp_path / "r"), "--epochs", "2"]) == 0
    assert [row["epoch"] for row in history(tmp_path / "r")] == ["1", "2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


@pytest.fixture(scope="module")
def hpa(tmp_path_factory):
    return make_multilabel_dataset(tmp_path_factory.mktemp("hpa") / "d", n_images=60, size=32, num_labels=8, seed=2)


@slow
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
    assert {"val_macro_f1", "val_micro_f1", "val_exact_match"} <= set(history(run)[0])
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


def test_augment_flags_go_on_top_of_a_recipes_augment_block(tmp_path):
    from celltune.cli import build_parser
    from celltune.cli.training import _train_config
    from celltune.config import Augment

    recipe = tmp_path / "r.yaml"
    recipe.write_text("augment:\n  rotation: 90\n  vflip: false\n  random_erasing: 0.3\n")
    args = build_parser().parse_args(["train", "--recipe", str(recipe), "--no-hflip", "--crop-scale", "0.5",
                                      "--random-erasing", "0.1"])
    assert _train_config(args).augment == Augment(hflip=False, vflip=False, rotation=90, crop_scale=0.5,
                                                  random_erasing=0.1)
