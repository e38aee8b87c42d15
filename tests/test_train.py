import csv
import json

import lightning as L
import pytest
import torch
from PIL import Image

from celltune.checkpoint import load_checkpoint
from celltune.data import discover
from celltune.errors import ConfigError, MissingError, ModelNotFoundError
from celltune.models import create_model
from celltune.recipes import load_config, recipe_names
from celltune.train import fit

from conftest import class_tree, quick_config

pytestmark = pytest.mark.slow


def test_fit_writes_a_complete_run_directory(tiny_data, tmp_path):
    run = fit(quick_config(tiny_data, tmp_path))
    for name in ("config.yaml", "dataset.json", "best.pt", "last.ckpt", "history.csv", "metrics.json",
                 "predictions.csv", "loss.png", "accuracy.png", "confusion_matrix.png", "report.html"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["num_samples"] == 18 and metrics["epochs_run"] == 2
    assert sum(map(sum, metrics["confusion_matrix"])) == 18
    with (run / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 18 and {"path", "true", "predicted", "confidence"} <= set(rows[0])
    # The report scores the best checkpoint: its predictions give the accuracy in metrics.json.
    assert sum(r["true"] == r["predicted"] for r in rows) / 18 == pytest.approx(metrics["accuracy"])


def test_sgd_plateau_frozen_backbone_trains_only_the_head(tiny_data, tmp_path):
    cfg = quick_config(tiny_data, tmp_path, optimizer="sgd", scheduler="plateau", lr=0.01, freeze_backbone=True,
                       epochs=1)
    trained, _, _ = load_checkpoint(fit(cfg))
    # Same seed as fit: the backbone must be exactly the initial one, BatchNorm statistics included.
    L.seed_everything(cfg.data.seed, workers=True, verbose=False)
    initial, _ = create_model("mobilenet_v2", num_classes=6, pretrained=False)
    assert torch.equal(trained.features[3].conv[1][1].running_mean, initial.features[3].conv[1][1].running_mean)
    assert torch.equal(trained.features[0][0].weight, initial.features[0][0].weight)
    assert not torch.equal(trained.classifier[1].weight, initial.classifier[1].weight)


def test_masks_train_end_to_end(tiny_data, tmp_path):
    masks = tmp_path / "masks"
    for split in discover(tiny_data).splits.values():
        for s in split:
            target = masks / s.path.relative_to(tiny_data)
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (32, 32), 255).save(target)
    run = fit(quick_config(tiny_data, tmp_path, mask_dir=str(masks), epochs=1, max_steps_per_epoch=1))
    assert (run / "best.pt").is_file()


def _imbalanced(root):
    class_tree(root / "train", {"common": 30, "rare": 3})
    class_tree(root / "val", {"common": 2, "rare": 2})
    return root


def test_class_weighted_loss_and_mixup_train(tmp_path):
    data = _imbalanced(tmp_path / "imb")
    run = fit(quick_config(data, tmp_path, balance="loss", image_size=16, epochs=1))
    assert (run / "best.pt").is_file()
    run = fit(quick_config(data, tmp_path, balance="sampler", image_size=16, epochs=1, label_smoothing=0.1,
                           augment={"mixup": 0.8, "cutmix": 1.0, "randaugment_ops": 2, "random_erasing": 0.25}))
    assert (run / "best.pt").is_file()


def test_what_cannot_run_fails_before_any_work(tiny_data, tmp_path):
    with pytest.raises(ConfigError, match="balance: sampler"):
        fit(quick_config(tiny_data, tmp_path, balance="loss", augment={"mixup": 0.8}))
    with pytest.raises(ConfigError, match="give --data"):
        fit(quick_config("", tmp_path))
    with pytest.raises(ModelNotFoundError, match="resnet18"):
        fit(quick_config(tiny_data, tmp_path, model="resnet81"))
    with pytest.raises(MissingError, match="nothing to resume"):
        fit(quick_config(tiny_data, tmp_path), resume=tmp_path)
    assert not (tmp_path / "t").exists()


def test_contiguous_format_and_bf16_train_on_cpu(tiny_data, tmp_path):
    run = fit(quick_config(tiny_data, tmp_path, epochs=1, precision="bf16-mixed", channels_last=False))
    assert json.loads((run / "metrics.json").read_text())["num_samples"] == 18


@pytest.mark.parametrize("recipe", recipe_names())
def test_recipes_run_one_step(recipe, tiny_data, tmp_path):
    config = load_config(recipe, {"data": str(tiny_data), "model": "mobilenet_v2", "pretrained": False,
                                  "image_size": 32, "epochs": 1, "max_steps_per_epoch": 1, "batch_size": 4,
                                  "num_workers": 0, "out_dir": str(tmp_path)})
    assert config.model.name == "mobilenet_v2" and config.optim.epochs == 1
    assert (fit(config) / "best.pt").is_file()
