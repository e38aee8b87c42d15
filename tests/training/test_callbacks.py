import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from celltune.config import OptimConfig
from celltune.metrics.classification import classification_metrics
from celltune.models.checkpoint import BEST, ModelCard
from celltune.training.callbacks import RunRecorder
from celltune.training.fit import fit
from celltune.training.module import CellClassifier

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


@pytest.mark.parametrize("better", ["ema", "raw"])
def test_the_recorder_saves_whichever_weights_scored_better(better, tmp_path):
    model = torch.nn.Linear(3, 2)
    card = ModelCard(model_name="x", class_names=["a", "b"], mean=[0.5] * 3, std=[0.25] * 3, image_size=8)
    module = CellClassifier(model, card=card, optim=OptimConfig(), ema=0.5)
    assert module.ema is not None
    with torch.no_grad():
        module.ema.module.weight.add_(1.0)  # the average now differs from the raw weights
    truth = np.array([0, 0, 1, 1])
    good, poor = (classification_metrics(truth, answers, card.class_names) for answers in
                  (np.array([0, 0, 1, 1]), np.array([0, 1, 1, 0])))
    module.val_result, module.ema_val_result = (poor, good) if better == "ema" else (good, poor)
    module.epoch_row = {"epoch": 1}
    recorder = RunRecorder(tmp_path, card=card, extra={})
    trainer = SimpleNamespace(sanity_checking=False, is_global_zero=True, current_epoch=0, loggers=[])
    recorder.on_validation_end(trainer, module)
    saved = torch.load(tmp_path / BEST, weights_only=True)
    kept = module.ema.module if better == "ema" else model
    assert saved["weights"] == better and torch.equal(saved["state_dict"]["weight"], kept.weight)
    assert saved["val_metrics"]["mean_class_accuracy"] == 1.0 and recorder.best_score == 1.0


def test_an_ema_run_validates_both_and_scores_the_saved_weights(tiny_data, tmp_path):
    run = fit(quick_config(tiny_data, tmp_path, epochs=2, ema=0.5))
    rows = history(run)
    assert {"ema_val_loss", "ema_val_acc", "ema_val_aca", "ema_val_macro_f1"} <= set(rows[0])
    best = torch.load(run / "best.pt", weights_only=True)
    scores = [max(float(r["val_aca"]), float(r["ema_val_aca"])) for r in rows]
    assert best["val_metrics"]["mean_class_accuracy"] == pytest.approx(max(scores))
    chosen = rows[best["epoch"]]
    assert best["weights"] == ("ema" if float(chosen["ema_val_aca"]) > float(chosen["val_aca"]) else "raw")
    assert json.loads((run / "metrics.json").read_text())["weights"] == best["weights"]
    state = torch.load(run / "last.ckpt", weights_only=False)["state_dict"]
    raw, averaged = state["model.classifier.1.weight"], state["ema.module.classifier.1.weight"]
    assert not torch.equal(raw, averaged)  # the average lags the trained weights
