import json

import pytest
import torch

from celltune.train import fit

from conftest import history, quick_config

pytestmark = pytest.mark.slow


def test_best_pt_is_the_epoch_with_the_best_validation_aca(tiny_data, tmp_path):
    run = fit(quick_config(tiny_data, tmp_path, epochs=3))
    rows = history(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_aca", "val_macro_f1", "lr", "seconds",
            "train_images"} == set(rows[0])
    acas = [float(r["val_aca"]) for r in rows]
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["epoch"] + 1 == 1 + acas.index(max(acas))  # the first epoch reaching the best
    assert best["val_metrics"]["mean_class_accuracy"] == pytest.approx(max(acas))
    assert (best["split_seed"], best["val_fraction"], best["test_fraction"]) == (0, 0.15, 0.15)
    assert json.loads((run / "metrics.json").read_text())["best_epoch"] == best["epoch"] + 1


def test_early_stopping_stops_when_val_loss_does_not_improve(tiny_data, tmp_path):
    # lr 0 and a frozen backbone: the validation loss never changes, so patience 1 ends the run after 2 epochs.
    run = fit(quick_config(tiny_data, tmp_path, epochs=6, lr=0.0, freeze_backbone=True, patience=1,
                           scheduler="none"))
    assert len(history(run)) == 2
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 2
