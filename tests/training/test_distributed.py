"""Two-process DDP on CPU (gloo) through Lightning's ddp_spawn, under torchrun and as SLURM tasks: validation metrics
gathered across processes must be the single-process ones, with the sampler's padding images counted once."""

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from celltune.config import config_from_dict
from celltune.config.flags import config_flags_of
from celltune.data.synthetic import make_dataset
from celltune.training.fit import fit, prepare, run_prepared
from celltune.training.module import CellClassifier

from conftest import history

pytestmark = pytest.mark.slow

# lr 0 with a frozen backbone keeps the model fixed, so every run scores the very same network: metrics must agree.
_FIXED = dict(model="mobilenet_v2", pretrained=False, image_size=32, epochs=2, batch_size=4, lr=0.0,
              freeze_backbone=True, scheduler="none", num_workers=0, accelerator="cpu", ema=0.0, tta="none")


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """17 validation images (one rank gets a padding repeat) and the single-process run on them, shared by the DDP
    tests."""
    tmp = tmp_path_factory.mktemp("ddp")
    data = make_dataset(tmp / "d", per_class=(4, 3, 3), size=32, seed=4)
    next((data / "val" / "golgi").iterdir()).unlink()
    return data, fit(config_from_dict({**_FIXED, "data": str(data), "out_dir": str(tmp / "runs"), "name": "single"}))


def _same_validation(single_run, ddp) -> None:
    rows = list(zip(history(single_run), history(ddp), strict=True))
    assert len(rows) == 2
    for a, b in rows:
        for key in ("val_acc", "val_aca", "val_macro_f1"):
            assert float(a[key]) == float(b[key]), key
        assert float(a["val_loss"]) == pytest.approx(float(b["val_loss"]), rel=1e-5)
        assert float(a["train_images"]) == float(b["train_images"]) == 24  # both ranks' images counted


class _FirstDraw(CellClassifier):
    """Writes each rank's first random number of training after its first step: the stream Mixup and dropout draw
    from, seeded per step and process."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        if batch_idx == 0 and self.current_epoch == 0:  # the run directory is the trainer's root
            (Path(self.trainer.default_root_dir) / f"draw{self.global_rank}").write_text(str(torch.rand(1).item()))
        return loss


def test_two_process_ddp_metrics_equal_single_process_and_ranks_draw_their_own_augmentation(single, tmp_path):
    data, single_run = single
    run = prepare(config_from_dict({**_FIXED, "data": str(data), "out_dir": str(tmp_path), "name": "ddp",
                                    "devices": 2, "strategy": "ddp_spawn", "logger": "csv"}))
    run.module.__class__ = _FirstDraw  # the same module, watched: pickled by reference into the spawned ranks
    ddp = run_prepared(run)
    _same_validation(single_run, ddp)
    m1, m2 = (json.loads((r / "metrics.json").read_text()) for r in (single_run, ddp))
    assert m1["confusion_matrix"] == m2["confusion_matrix"] and m1["best_epoch"] == m2["best_epoch"]
    assert (ddp / "report.html").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]
    # Seeded alike for the same initial weights; each step's draws are seeded by the process's rank too.
    draws = [float((ddp / f"draw{rank}").read_text()) for rank in range(2)]
    assert draws[0] != draws[1]
    # The CSV tracker holds the ranks' epochs and, below them, the test scores this process added (it failed so).
    with (ddp / "csv" / "metrics.csv").open() as f:
        logged = list(csv.DictReader(f))
    assert [float(r["val_aca"]) for r in logged if r.get("val_aca")] == [float(r["val_aca"]) for r in history(ddp)]
    assert float(logged[-1]["test_aca"]) == pytest.approx(m2["mean_class_accuracy"])


def _train_command(tmp_path, data, name: str) -> list[str]:
    config = config_from_dict({**_FIXED, "data": str(data), "devices": 2, "strategy": "ddp", "name": name,
                               "out_dir": str(tmp_path / "runs")})
    return ["-m", "celltune", "train", *config_flags_of(config)]


def _env(tmp_path, **extra: str) -> dict[str, str]:
    return {**os.environ, "CELLTUNE_CACHE_DIR": str(tmp_path / "cache"), **extra}


def test_torchrun_two_processes_on_cpu(single, tmp_path):
    data, single_run = single
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           *_train_command(tmp_path, data, "torchrun")], env=_env(tmp_path), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run directory:") == 1  # rank 0 reports; rank 1 exits quietly
    _same_validation(single_run, tmp_path / "runs" / "torchrun")


def test_slurm_tasks_on_cpu(single, tmp_path):
    """Two tasks as ``srun`` starts them: every task runs the command, Lightning reads its rank from SLURM_*."""
    data, single_run = single
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
    _same_validation(single_run, tmp_path / "runs" / "slurm")
