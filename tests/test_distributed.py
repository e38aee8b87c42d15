"""Two-process DDP on CPU (gloo) through Lightning's ddp_spawn: validation metrics gathered across processes must be
the single-process ones, with the sampler's padding images counted once."""

import csv
import json

import pytest

from celltune.config import TrainConfig
from celltune.synthetic import make_dataset
from celltune.train import fit, resolve_hardware


def _rows(run):
    return list(csv.DictReader((run / "history.csv").open()))


def test_two_process_ddp_metrics_equal_single_process(tmp_path):
    data = make_dataset(tmp_path / "d", per_class=(4, 3, 3), size=32, seed=4)
    next((data / "val" / "golgi").iterdir()).unlink()  # 17 validation images: one rank gets a padding repeat
    # lr 0 with a frozen backbone keeps the model fixed, so both runs score the very same network.
    base = dict(data=str(data), model="mobilenet_v2", pretrained=False, image_size=32, epochs=2, batch_size=4,
                lr=0.0, freeze_backbone=True, scheduler="none", num_workers=0, accelerator="cpu",
                out_dir=str(tmp_path / "runs"))
    single = fit(TrainConfig(**base, name="single"))
    ddp = fit(TrainConfig(**base, name="ddp", devices=2, strategy="ddp_spawn"))
    for a, b in zip(_rows(single), _rows(ddp), strict=True):
        for key in ("val_acc", "val_aca", "val_macro_f1"):
            assert float(a[key]) == float(b[key]), key
        assert float(a["val_loss"]) == pytest.approx(float(b["val_loss"]), rel=1e-5)
        assert float(a["train_images"]) == float(b["train_images"]) == 24  # both ranks' images counted
    m1, m2 = (json.loads((r / "metrics.json").read_text()) for r in (single, ddp))
    assert m1["confusion_matrix"] == m2["confusion_matrix"] and m1["best_epoch"] == m2["best_epoch"]
    assert (ddp / "report.html").is_file() and sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["ddp",
                                                                                                        "single"]


def test_hardware_defaults_on_cpu():
    hw = resolve_hardware(TrainConfig(accelerator="cpu"))
    assert hw == {"accelerator": "cpu", "precision": "32-true", "channels_last": True}
    forced = resolve_hardware(TrainConfig(accelerator="cpu", precision="bf16-mixed", channels_last=False))
    assert forced["precision"] == "bf16-mixed" and not forced["channels_last"]


def test_contiguous_format_and_bf16_train_on_cpu(tmp_path):
    data = make_dataset(tmp_path / "d", per_class=(4, 2, 2), size=32, seed=5)
    run = fit(TrainConfig(data=str(data), model="mobilenet_v2", pretrained=False, image_size=32, epochs=1,
                          batch_size=4, num_workers=0, accelerator="cpu", precision="bf16-mixed", channels_last=False,
                          out_dir=str(tmp_path / "runs"), name="bf16"))
    assert json.loads((run / "metrics.json").read_text())["num_samples"] == 12
