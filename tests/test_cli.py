import csv
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from celltune.cli import main


@pytest.fixture(scope="module")
def trained_run(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    config = out / "recipe.yaml"
    config.write_text(yaml.safe_dump({"model": "mobilenet_v2", "pretrained": False, "epochs": 3, "batch_size": 8,
                                      "image_size": 32, "num_workers": 0, "accelerator": "cpu"}))
    # Flags override the file: 1 epoch, not 3.
    code = main(["-q", "train", "--config", str(config), "--data", str(tiny_data), "--epochs", "1",
                 "--max-steps-per-epoch", "2", "--out-dir", str(out), "--name", "cli"])
    assert code == 0
    return out / "cli"


def test_train_resolves_config_file_then_flags(trained_run, capsys):
    resolved = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert resolved["epochs"] == 1 and resolved["batch_size"] == 8 and resolved["image_size"] == 32
    assert len(list(csv.DictReader((trained_run / "history.csv").open()))) == 1


def test_evaluate_prints_and_writes_metrics(trained_run, tiny_data, tmp_path, capsys):
    assert main(["-q", "evaluate", str(trained_run), "--data", str(tiny_data), "--split", "val",
                 "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mean class accuracy (ACA)" in out and "confusion matrix" in out
    metrics = json.loads((tmp_path / "metrics_val.json").read_text())
    assert metrics["num_samples"] == 18 and len(metrics["per_class"]) == 6
    assert f"accuracy {metrics['accuracy']:.4f}" in out
    assert (tmp_path / "confusion_matrix_val.png").is_file() and (tmp_path / "predictions_val.csv").is_file()
    assert metrics["tta"] == "none" and 0.0 <= metrics["roc_auc_macro"] <= 1.0
    assert main(["-q", "evaluate", str(trained_run), "--data", str(tiny_data), "--split", "val", "--tta", "dihedral",
                 "--out-dir", str(tmp_path / "tta")]) == 0
    assert json.loads((tmp_path / "tta" / "metrics_val.json").read_text())["tta"] == "dihedral"


def test_predict_topk_for_images_and_csv_for_folders(trained_run, tiny_data, tmp_path, capsys):
    image = next((tiny_data / "test" / "golgi").glob("*.png"))
    out_csv = tmp_path / "preds.csv"
    assert main(["-q", "predict", str(trained_run / "best.pt"), str(image), str(tiny_data / "test"), "--topk", "2",
                 "--output", str(out_csv)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(str(image)))
    probs = [float(part.rsplit(" ", 1)[1]) for part in line.split(": ", 1)[1].split(", ")]
    assert len(probs) == 2 and probs[0] >= probs[1]
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 18
    assert sum(float(rows[0][k]) for k in rows[0] if k.startswith("p_")) == pytest.approx(1.0, abs=1e-4)
    # An existing CSV is never silently replaced.
    assert main(["-q", "predict", str(trained_run), str(tiny_data / "test"), "--output", str(out_csv)]) == 2
    assert len(list(csv.DictReader(out_csv.open()))) == 18


def test_summarize_prints_counts_per_class_and_split(tiny_data, capsys):
    assert main(["summarize", str(tiny_data)]) == 0
    out = capsys.readouterr().out
    assert "6 classes" in out and "32x32" in out
    golgi = next(x for x in out.splitlines() if x.startswith("golgi"))
    assert golgi.split()[1:] == ["6", "3", "3"]


def test_bad_input_exits_2_with_the_file_named(tmp_path, capsys):
    for cls in ("a", "b"):
        (tmp_path / "d" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 8)).save(tmp_path / "d" / cls / f"{i}.png")
    (tmp_path / "d" / "a" / "bad.png").write_bytes(b"garbage")
    assert main(["summarize", str(tmp_path / "d")]) == 2
    assert "bad.png" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "d"), "--model", "resnet81", "--no-pretrained"]) == 2
    assert "resnet18" in capsys.readouterr().err


def test_demo_config_makes_synthetic_data(tmp_path):
    from celltune.demo import demo_config

    config = demo_config(data=None, workdir=tmp_path, epochs=1)
    assert (Path(config.data) / "README.txt").read_text().startswith("SYNTHETIC")
    assert config.pretrained and config.epochs == 1


def test_resume_flag_continues_a_run_in_place(tiny_data, tmp_path):
    args = ["-q", "train", "--data", str(tiny_data), "--model", "mobilenet_v2", "--no-pretrained", "--image-size",
            "32", "--batch-size", "8", "--max-steps-per-epoch", "1", "--num-workers", "0", "--scheduler", "plateau",
            "--out-dir", str(tmp_path), "--name", "r"]
    assert main([*args, "--epochs", "1"]) == 0
    assert main(["-q", "train", "--resume", str(tmp_path / "r"), "--epochs", "2"]) == 0
    assert [row["epoch"] for row in csv.DictReader((tmp_path / "r" / "history.csv").open())] == ["1", "2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
