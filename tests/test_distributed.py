"""Two-process DDP on CPU (gloo) through Lightning's ddp_spawn, under torchrun and as SLURM tasks: validation metrics
gathered across processes must be the single-process ones, with the sampler's padding images counted once."""

import csv
import json
import os
import socket
import subprocess
import sys

import lightning as L
import pytest
import torch

from celltune.checkpoint import ModelCard
from celltune.config import TrainConfig
from celltune.data import discover
from celltune.models import create_model
from celltune.synthetic import make_dataset
from celltune.train import CellClassifier, build_loaders, fit, resolve_hardware


def _rows(run):
    return list(csv.DictReader((run / "history.csv").open()))


# lr 0 with a frozen backbone keeps the model fixed, so every run scores the very same network: metrics must agree.
_FIXED = dict(model="mobilenet_v2", pretrained=False, image_size=32, epochs=2, batch_size=4, lr=0.0,
              freeze_backbone=True, scheduler="none", num_workers=0, accelerator="cpu")
_FIXED_FLAGS = ["--model", "mobilenet_v2", "--no-pretrained", "--image-size", "32", "--epochs", "2", "--batch-size",
                "4", "--lr", "0", "--freeze-backbone", "--scheduler", "none", "--num-workers", "0", "--accelerator",
                "cpu"]


def _single_run(tmp_path):
    """17 validation images (one rank gets a padding repeat) and the single-process run on them."""
    data = make_dataset(tmp_path / "d", per_class=(4, 3, 3), size=32, seed=4)
    next((data / "val" / "golgi").iterdir()).unlink()
    return data, fit(TrainConfig(data=str(data), **_FIXED, out_dir=str(tmp_path / "runs"), name="single"))


def _same_validation(single, ddp) -> None:
    rows = list(zip(_rows(single), _rows(ddp), strict=True))
    assert len(rows) == 2
    for a, b in rows:
        for key in ("val_acc", "val_aca", "val_macro_f1"):
            assert float(a[key]) == float(b[key]), key
        assert float(a["val_loss"]) == pytest.approx(float(b["val_loss"]), rel=1e-5)
        assert float(a["train_images"]) == float(b["train_images"]) == 24  # both ranks' images counted


def test_two_process_ddp_metrics_equal_single_process(tmp_path):
    data, single = _single_run(tmp_path)
    ddp = fit(TrainConfig(data=str(data), **_FIXED, out_dir=str(tmp_path / "runs"), name="ddp", devices=2,
                          strategy="ddp_spawn"))
    _same_validation(single, ddp)
    m1, m2 = (json.loads((r / "metrics.json").read_text()) for r in (single, ddp))
    assert m1["confusion_matrix"] == m2["confusion_matrix"] and m1["best_epoch"] == m2["best_epoch"]
    assert (ddp / "report.html").is_file() and sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["ddp",
                                                                                                        "single"]


class _FirstDraw(CellClassifier):
    """Writes each rank's first random number of training, the stream batch augmentation draws from."""

    def training_step(self, batch, batch_idx):
        if batch_idx == 0:
            (self.run_dir / f"draw{self.global_rank}").write_text(str(torch.rand(1).item()))
        return super().training_step(batch, batch_idx)


def test_ranks_draw_their_own_augmentation(tmp_path):
    data = make_dataset(tmp_path / "d", per_class=(4, 2, 2), size=32, seed=4)
    config = TrainConfig(data=str(data), **_FIXED, cache="on", cache_dir=str(tmp_path / "cache"))
    found = discover(config.data)
    card = ModelCard(model_name="mobilenet_v2", class_names=found.class_names, mean=[0.5] * 3, std=[0.25] * 3,
                     image_size=32)
    loaders = build_loaders(config, found, card)
    model, _ = create_model("mobilenet_v2", num_classes=6, pretrained=False)
    module = _FirstDraw(model, card=card, config=config, run_dir=tmp_path, augment_batch=loaders.augment_batch)
    L.Trainer(max_steps=1, accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
              limit_val_batches=0).fit(module, loaders.train)
    draws = [float((tmp_path / f"draw{rank}").read_text()) for rank in range(2)]
    assert draws[0] != draws[1]


def _train_command(tmp_path, data, name: str) -> list[str]:
    return ["-m", "celltune.cli", "train", "--data", str(data), *_FIXED_FLAGS, "--devices", "2", "--strategy", "ddp",
            "--name", name, "--out-dir", str(tmp_path / "runs")]


def _env(tmp_path, **extra: str) -> dict[str, str]:
    return {**os.environ, "CELLTUNE_CACHE_DIR": str(tmp_path / "cache"), **extra}


def test_torchrun_two_processes_on_cpu(tmp_path):
    data, single = _single_run(tmp_path)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           *_train_command(tmp_path, data, "torchrun")], env=_env(tmp_path), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run directory:") == 1  # rank 0 reports; rank 1 exits quietly
    _same_validation(single, tmp_path / "runs" / "torchrun")


def test_slurm_tasks_on_cpu(tmp_path):
    """Two tasks as ``srun`` starts them: every task runs the command, Lightning reads its rank from SLURM_*."""
    data, single = _single_run(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    slurm = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NODEID": "0", "SLURM_JOB_ID": "4321",
             "SLURM_JOB_NAME": "celltune", "SLURM_NODELIST": "localhost", "SLURM_JOB_NUM_NODES": "1",
             "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    tasks = [subprocess.Popen([sys.executable, *_train_command(tmp_path, data, "slurm")],
                              env=_env(tmp_path, **slurm, SLURM_PROCID=str(i), SLURM_LOCALID=str(i)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [task.communicate(timeout=300) for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], outputs[0][1][-3000:] + outputs[1][1][-3000:]
    assert [out.count("run directory:") for out, _ in outputs] == [1, 0]
    _same_validation(single, tmp_path / "runs" / "slurm")


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
