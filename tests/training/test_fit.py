import csv
import json
import math
from typing import get_args, get_type_hints

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping
from PIL import Image

from celltune.config import Augment, OptimConfig
from celltune.config.recipes import load_config
from celltune.data.discovery import discover
from celltune.data.synthetic import HPA_CHANNELS, make_multilabel_dataset
from celltune.errors import ConfigError, WriteError
from celltune.metrics.results import ClassificationResult, MultilabelResult
from celltune.models.checkpoint import ModelCard, load_checkpoint, save_checkpoint
from celltune.models.factory import create_model, head_name
from celltune.training.fit import fit, prepare
from celltune.training.module import FocalLoss

from conftest import class_tree, quick_config, train_only

slow = pytest.mark.slow

@pytest.fixture(scope="module")
def hpa(tmp_path_factory):
    return make_multilabel_dataset(tmp_path_factory.mktemp("hpa") / "d", n_images=40, size=32, num_labels=6, seed=3)


def _multilabel(hpa, out, **options):
    return quick_config(hpa, out, channels=list(HPA_CHANNELS), intensity="percentile", **options)


def _imbalanced(root):
    class_tree(root / "train", {"common": 30, "rare": 3})
    class_tree(root / "val", {"common": 2, "rare": 2})
    return root


@slow
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


@slow
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


@slow
def test_plateau_schedule_cuts_the_rate_when_validation_stalls(tiny_data, tmp_path):
    # A rate too small to move the validation loss (frozen backbone, BatchNorm kept): after one epoch without
    # improvement (patience 0) the rate is cut by the factor. A row's rate is the one its epoch trained with.
    run = train_only(quick_config(tiny_data, tmp_path, optimizer="sgd", scheduler="plateau", lr=1e-6,
                                  plateau_patience=0, plateau_factor=0.1, freeze_backbone=True, epochs=3))
    assert [r["lr"] for r in run.recorder.history] == pytest.approx([1e-6, 1e-6, 1e-7])


def test_early_stop_monitor_choices_cover_every_tracked_number():
    offered = set(get_args(get_type_hints(OptimConfig)["early_stop_monitor"]))
    assert offered == {"val_loss", *ClassificationResult.tracked_names(), *MultilabelResult.tracked_names()}


@slow
@pytest.mark.parametrize("monitor", get_args(get_type_hints(OptimConfig)["early_stop_monitor"]))
def test_every_early_stop_monitor_works_or_is_refused_at_once(monitor, tiny_data, hpa, tmp_path):
    # lr 0 and a frozen backbone keep every validation number constant: patience 1 stops after the second epoch.
    frozen = {"epochs": 4, "lr": 0.0, "freeze_backbone": True, "scheduler": "none", "patience": 1,
              "early_stop_monitor": monitor}
    for kind, config, result in (("single", quick_config(tiny_data, tmp_path / "s", **frozen), ClassificationResult),
                                 ("multi", _multilabel(hpa, tmp_path / "m", **frozen), MultilabelResult)):
        if monitor in ("val_loss", *result.tracked_names()):
            assert len(train_only(config).recorder.history) == 2, kind
        else:
            with pytest.raises(ConfigError, match=f"{monitor} is not tracked for {kind}-label data"):
                prepare(config)
            assert not (tmp_path / config.output.out_dir).exists()  # refused before a run directory was made


def test_balance_loss_weights_the_criterion_by_n_over_c_count(tmp_path):
    run = prepare(quick_config(_imbalanced(tmp_path / "imb"), tmp_path, balance="loss", image_size=16))
    # 30 common and 3 rare images, 2 classes: 33 / (2 * 30) and 33 / (2 * 3).
    assert run.module.criterion.weight.tolist() == pytest.approx([0.55, 5.5])
    assert prepare(quick_config(tmp_path / "imb", tmp_path, image_size=16)).module.criterion.weight is None


def test_label_smoothing_and_mixup_reach_the_loss(tiny_data, tmp_path):
    smoothed = prepare(quick_config(tiny_data, tmp_path, label_smoothing=0.1)).module
    assert smoothed.criterion.label_smoothing == 0.1 and smoothed.mixup is None
    mixed = prepare(quick_config(tiny_data, tmp_path, label_smoothing=0.1,
                                 augment={"mixup": 0.8, "cutmix": 1.0})).module
    assert mixed.mixup is not None and (mixed.mixup.mixup_alpha, mixed.mixup.cutmix_alpha) == (0.8, 1.0)
    torch.manual_seed(0)
    images = torch.rand(8, 3, 32, 32)
    labels = torch.arange(8) % 6
    mixed_images, targets = mixed.mixup(images.clone(), labels)
    # Every target mixes two classes (a flipped batch: image i with image 7 - i), on top of the smoothing.
    assert targets.shape == (8, 6) and torch.allclose(targets.sum(1), torch.ones(8))
    assert all(int((row > 0.1 / 6 + 1e-6).sum()) == 2 for row in targets if labels[0] != labels[-1])
    assert not torch.equal(mixed_images, images)


_RECIPES = {
    "alexnet_classic": dict(optimizer=torch.optim.SGD, opt={"lr": 0.001, "momentum": 0.9, "weight_decay": 0.0},
                            scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau, sched={"factor": 0.1, "patience": 5},
                            frozen=True, early_stop=None,
                            augment=Augment(hflip=False, vflip=False, rot90=False, rotation=0, crop_scale=1.0,
                                            affine_degrees=20, affine_translate=0.1, affine_scale=0.1)),
    "timm_modern": dict(optimizer=torch.optim.AdamW, opt={"lr": 0.001, "weight_decay": 0.05},
                        scheduler=torch.optim.lr_scheduler.LambdaLR, sched={}, frozen=False, early_stop=None,
                        augment=Augment(rot90=False, rotation=180, randaugment_ops=2, randaugment_magnitude=9,
                                        random_erasing=0.25, mixup=0.8, cutmix=1.0)),
    "vgg16_early_stopping": dict(optimizer=torch.optim.SGD, opt={"lr": 0.001, "momentum": 0.9,
                                                                 "weight_decay": 0.0005},
                                 scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau,
                                 sched={"factor": 0.1, "patience": 3}, frozen=False, early_stop=("val_loss", 5),
                                 augment=Augment(rot90=False, rotation=180, crop_scale=0.9)),
}


@slow
@pytest.mark.parametrize("recipe", sorted(_RECIPES))
def test_each_recipe_builds_its_optimizer_schedule_augmentation_and_freezing(recipe, tiny_data, tmp_path):
    expected = _RECIPES[recipe]
    config = load_config(recipe, {"data": str(tiny_data), "model": "mobilenet_v2", "pretrained": False,
                                  "image_size": 32, "epochs": 1, "max_steps_per_epoch": 1, "batch_size": 4,
                                  "num_workers": 0, "out_dir": str(tmp_path)})
    run = prepare(config)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    optimizer = run.trainer.optimizers[0]
    assert type(optimizer) is expected["optimizer"]
    assert {k: optimizer.defaults[k] for k in expected["opt"]} == expected["opt"]
    scheduler = run.trainer.lr_scheduler_configs[0].scheduler
    assert type(scheduler) is expected["scheduler"]
    assert {k: getattr(scheduler, k) for k in expected["sched"]} == expected["sched"]
    assert run.datamodule.augment == expected["augment"]
    trainable = {n for n, p in run.model.named_parameters() if p.requires_grad}
    head = head_name(run.model)
    assert (trainable == {f"{head}.weight", f"{head}.bias"}) is expected["frozen"]
    stops = [c for c in run.trainer.callbacks if isinstance(c, EarlyStopping)]
    assert [(c.monitor, c.patience) for c in stops] == ([expected["early_stop"]] if expected["early_stop"] else [])


def test_precision_and_memory_format_reach_the_trainer_and_the_batches(tiny_data, tmp_path):
    default = prepare(quick_config(tiny_data, tmp_path, cache="on"))
    forced = prepare(quick_config(tiny_data, tmp_path, cache="on", precision="bf16-mixed", channels_last=False))
    assert (default.trainer.precision, forced.trainer.precision) == ("32-true", "bf16-mixed")
    for run, channels_last in ((default, True), (forced, False)):
        run.datamodule.prepare_data()
        run.datamodule.setup("fit")
        batch = run.datamodule.on_after_batch_transfer(next(iter(run.datamodule.val_dataloader())), 0)
        assert batch[0].is_contiguous(memory_format=torch.channels_last) is channels_last
        assert run.model.features[0][0].weight.is_contiguous(memory_format=torch.channels_last) is channels_last


@slow
def test_focal_loss_trains_multilabel_data_to_a_finite_loss(hpa, tmp_path):
    run = prepare(_multilabel(hpa, tmp_path / "p", focal_gamma=2.0))
    assert isinstance(run.module.criterion, FocalLoss) and run.module.criterion.gamma == 2.0
    (row,) = train_only(_multilabel(hpa, tmp_path / "f", focal_gamma=2.0, epochs=1)).recorder.history
    assert math.isfinite(row["train_loss"]) and row["train_loss"] > 0


@slow
def test_compile_runs_a_training_step(tiny_data, tmp_path, monkeypatch):
    # inductor's C++ code generation takes minutes on 2 cores; the eager backend captures the same graph with dynamo
    # and runs it without generating code.
    compiled = []
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compiled.append(model) or real_compile(
        model, backend="eager"))
    run = train_only(quick_config(tiny_data, tmp_path, model="timm:test_efficientnet", compile=True, epochs=1,
                                  max_steps_per_epoch=1))
    assert len(compiled) == 1 and len(run.recorder.history) == 1
    model, _, _ = load_checkpoint(run.run_dir)  # the checkpoint holds the plain model's state_dict
    assert not any(k.startswith("_orig_mod") for k in model.state_dict())


@pytest.mark.parametrize("as_checkpoint", [False, True])
def test_weights_file_is_where_training_starts(tiny_data, tmp_path, as_checkpoint):
    source, _ = create_model("mobilenet_v2", num_classes=6, pretrained=False)
    path = tmp_path / "start.pt"
    if as_checkpoint:
        card = ModelCard(model_name="mobilenet_v2", class_names=[str(i) for i in range(6)], mean=[0.5] * 3,
                         std=[0.25] * 3, image_size=32)
        save_checkpoint(path, model=source, card=card)
    else:
        torch.save(source.state_dict(), path)
    run = prepare(quick_config(tiny_data, tmp_path, weights=str(path), pretrained=True))
    own = run.model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in source.state_dict().items())


def test_freeze_stride_trains_all_but_the_early_layers(tiny_data, tmp_path):
    torch.manual_seed(0)
    start, _ = create_model("mobilenet_v2", num_classes=6, pretrained=False)
    path = tmp_path / "start.pt"
    torch.save(start.state_dict(), path)
    run = train_only(quick_config(tiny_data, tmp_path, weights=str(path), pretrained=True, freeze_stride=4, lr=0.01,
                                  epochs=1))
    trained, start = run.module.model.state_dict(), start.state_dict()
    # mobilenet_v2 at 1/4 resolution or finer: features 0-3 and the expanding 1x1 convolution of block 4.
    for name in ("features.0.0.weight", "features.3.conv.2.weight", "features.4.conv.0.0.weight"):
        assert torch.equal(trained[name], start[name]), name
    for name in ("features.4.conv.1.0.weight", "features.18.0.weight", "classifier.1.weight"):
        assert not torch.equal(trained[name], start[name]), name


@slow
def test_masks_train_end_to_end(tiny_data, tmp_path):
    masks = tmp_path / "masks"
    for split in discover(tiny_data).splits.values():
        for s in split:
            target = masks / s.path.relative_to(tiny_data)
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (32, 32), 255).save(target)
    run = train_only(quick_config(tiny_data, tmp_path, mask_dir=str(masks), epochs=1, max_steps_per_epoch=1))
    assert (run.run_dir / "best.pt").is_file()


@slow
def test_class_weighted_loss_and_mixup_train(tmp_path):
    data = _imbalanced(tmp_path / "imb")
    run = train_only(quick_config(data, tmp_path, balance="loss", image_size=16, epochs=1))
    assert (run.run_dir / "best.pt").is_file()
    run = train_only(quick_config(data, tmp_path, balance="sampler", image_size=16, epochs=1, label_smoothing=0.1,
                                  augment={"mixup": 0.8, "cutmix": 1.0, "randaugment_ops": 2, "random_erasing": 0.25}))
    assert (run.run_dir / "best.pt").is_file() and math.isfinite(run.recorder.history[0]["train_loss"])


def test_a_start_that_fails_after_the_run_directory_opened_leaves_none(tiny_data, tmp_path):
    """The image cache is built when training starts; where it cannot be written (here a file stands where its
    folder should be), the error names the folder and the fixes, and the new run directory goes; others stay."""
    in_the_way = tmp_path / "not_a_folder"
    in_the_way.write_text("")
    config = quick_config(tiny_data, tmp_path / "runs", cache="on", cache_dir=str(in_the_way))
    with pytest.raises(WriteError, match=r"not_a_folder: cannot write the image cache .*--cache-dir.*--cache off"):
        fit(config)
    assert not (tmp_path / "runs" / "t").exists()
    (tmp_path / "runs" / "t").mkdir(parents=True)
    (tmp_path / "runs" / "t" / "notes.txt").write_text("mine")
    with pytest.raises(WriteError):
        fit(config)  # opens runs/t-1, as runs/t exists
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["t"]
    assert [p.name for p in (tmp_path / "runs" / "t").iterdir()] == ["notes.txt"]


@slow
def test_contiguous_format_and_bf16_train_on_cpu(tiny_data, tmp_path):
    run = train_only(quick_config(tiny_data, tmp_path, epochs=1, precision="bf16-mixed", channels_last=False))
    assert run.trainer.precision == "bf16-mixed" and math.isfinite(run.recorder.history[0]["val_loss"])


@slow
def test_two_slides_train_without_validation_and_say_so(tmp_path):
    """The issue's few-patients case at its end: two slides, one held out for test, the other trains; no group can be
    spared for validation, so the run trains its epochs without one and keeps the last epoch's weights."""
    root = tmp_path / "d"
    for slide in (0, 1):
        for cls in ("stroma", "tumour"):
            for i in range(6):
                Image.fromarray(np.full((16, 16, 3), 40 * slide + 90 * (cls == "tumour") + i, np.uint8)).save(
                    (root / cls).mkdir(parents=True, exist_ok=True) or root / cls / f"slide{slide}_{cls}_{i}.png")
    with pytest.raises(ConfigError, match=r"no validation images .* --scheduler plateau watch"):
        prepare(quick_config(root, tmp_path / "refused", groups=r"(slide\d)_", scheduler="plateau"))
    run = fit(quick_config(root, tmp_path / "runs", groups=r"(slide\d)_", epochs=2, ema=0.99))
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"] and not any(k.startswith("val_") for k in rows[0])
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["epoch"] == 1 and best["val_metrics"] is None and best["weights"] == "ema"
    assert best["temperature"] is None and best["conformal_scores"] is None  # nothing to calibrate on
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["best_val"] == {} and metrics["best_epoch"] == 2
    assert metrics["num_samples"] == 12  # one whole slide
    assert "none (no group could be spared for it): the weights after the last of 2 epochs" in (
        run / "report.html").read_text()
