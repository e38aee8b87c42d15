import csv
import itertools
import json

import lightning as L
import pytest
import torch

from celltune.checkpoint import load_checkpoint
from celltune.config import TrainConfig
from celltune.models import create_model
from celltune.train import fit, new_run_dir, warmup_cosine


def _config(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), model="mobilenet_v2", pretrained=False, image_size=32, epochs=2, batch_size=8,
                max_steps_per_epoch=2, num_workers=0, out_dir=str(out), name="t", accelerator="cpu")
    return TrainConfig(**{**base, **kw})


def test_fit_writes_a_complete_run_directory(tiny_data, tmp_path):
    run = fit(_config(tiny_data, tmp_path))
    for name in ("config.yaml", "dataset.json", "best.pt", "history.csv", "metrics.json", "predictions.csv",
                 "loss.png", "accuracy.png", "confusion_matrix.png"):
        assert (run / name).is_file(), name
    history = list(csv.DictReader((run / "history.csv").open()))
    assert [int(r["epoch"]) for r in history] == [1, 2]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "val_aca", "lr"} <= set(history[0])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["num_samples"] == 18
    assert sum(map(sum, metrics["confusion_matrix"])) == 18
    best = torch.load(run / "best.pt", weights_only=True)
    # best.pt is the epoch with the highest validation ACA in the history.
    acas = [float(r["val_aca"]) for r in history]
    assert best["epoch"] + 1 == metrics["best_epoch"] == 1 + acas.index(max(acas))
    assert best["val_metrics"]["mean_class_accuracy"] == pytest.approx(max(acas))
    with (run / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 18 and {"path", "true", "predicted", "confidence"} <= set(rows[0])


def test_runs_are_never_overwritten(tmp_path):
    first = new_run_dir(tmp_path, "same")
    (first / "best.pt").write_text("precious")
    second = new_run_dir(tmp_path, "same")
    assert second != first and second.name == "same-1"
    assert (first / "best.pt").read_text() == "precious"


def test_sgd_plateau_frozen_backbone_trains_only_the_head(tiny_data, tmp_path):
    cfg = _config(tiny_data, tmp_path, optimizer="sgd", scheduler="plateau", lr=0.01, freeze_backbone=True,
                  epochs=1)
    trained, _, _ = load_checkpoint(fit(cfg))
    # Same seed as fit: the backbone must be exactly the initial one, BatchNorm statistics included.
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    initial, _ = create_model("mobilenet_v2", num_classes=6, pretrained=False)
    assert torch.equal(trained.features[3].conv[1][1].running_mean, initial.features[3].conv[1][1].running_mean)
    assert torch.equal(trained.features[0][0].weight, initial.features[0][0].weight)
    assert not torch.equal(trained.classifier[1].weight, initial.classifier[1].weight)


def test_warmup_cosine_schedule_shape():
    lrs = [warmup_cosine(s, warmup_steps=4, total_steps=20) for s in range(20)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in itertools.pairwise(lrs[3:]))
    assert lrs[-1] < 0.05
