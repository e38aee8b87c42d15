"""Where and on what a run executes: its directory (one for all processes), ranks, hardware defaults, DataLoader
workers, the progress bar and the Lightning Trainer."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import Logger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only

from celltune.config import HardwareConfig, OutputConfig, Precision, TrainConfig
from celltune.errors import ConfigError, ExistsError
from celltune.training.budget import clock

_RUN_DIR_ENV = "CELLTUNE_RUN_DIR"


def new_run_dir(out_dir: str | Path, name: str) -> Path:
    """A fresh directory; an existing one is never reused, so earlier runs are never overwritten."""
    base = Path(out_dir) / name
    for i in range(1000):
        candidate = base if i == 0 else base.with_name(f"{base.name}-{i}")
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            continue
    raise ExistsError(f"could not create a new run directory under {out_dir}; choose another --name")


def global_rank() -> int:
    """This process's rank as the launcher's environment gives it (0 when not distributed)."""
    return int(getattr(rank_zero_only, "rank", 0))


def launched_externally() -> bool:
    """Started as one of several processes by torchrun or SLURM (every rank runs the whole command)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or int(os.environ.get("SLURM_NTASKS", "1")) > 1


def open_run_dir(output: OutputConfig, *, model_name: str, resume: str | Path | None) -> Path:
    """The run directory, the same one on every process of a distributed run."""
    if resume is not None:
        return Path(resume)
    if inherited := os.environ.get(_RUN_DIR_ENV):
        return Path(inherited)  # a DDP process that Lightning launched from the rank-0 one
    if launched_externally():
        if not output.name:
            raise ConfigError("a multi-process launch (torchrun, SLURM) needs --name, so that every process writes to "
                              "one run directory")
        path = Path(output.out_dir) / output.name
        if global_rank() == 0 and (path / "config.yaml").exists():
            raise ExistsError(f"{path} holds an earlier run; choose another --name")
        path.mkdir(parents=True, exist_ok=True)
        return path
    return new_run_dir(output.out_dir, output.name or f"{model_name.replace(':', '_')}-{datetime.now():%Y%m%d-%H%M%S}")


@contextmanager
def shared_run_dir(run_dir: Path) -> Iterator[None]:
    """Processes that Lightning launches for DDP run ``fit`` again; inside this block they find the run directory."""
    os.environ[_RUN_DIR_ENV] = str(run_dir)
    try:
        yield
    finally:
        os.environ.pop(_RUN_DIR_ENV, None)


@dataclass(frozen=True)
class Hardware:
    accelerator: str
    precision: Precision
    channels_last: bool


def resolve_hardware(hardware: HardwareConfig) -> Hardware:
    """Accelerator and precision unless the config says otherwise: bf16 autocast on a GPU (fp16 where bf16 is
    missing), fp32 on CPU, where bf16 is slow without matrix units."""
    gpu = torch.cuda.is_available() and hardware.accelerator in ("auto", "gpu", "cuda")
    auto_precision: Precision = "32-true"
    if gpu:
        auto_precision = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return Hardware(accelerator="gpu" if gpu else ("cpu" if hardware.accelerator == "auto" else hardware.accelerator),
                    precision=hardware.precision or auto_precision, channels_last=hardware.channels_last)


def default_num_workers(configured: int | None, *, per_image: bool, accelerator: str) -> int:
    """DataLoader worker processes: as configured, else half the cores (at most 8) for image-by-image work. Batches
    only sliced from the cache get none when training on the CPU, where a worker process only takes cores from the
    model's threads; on a GPU it still overlaps the fetching with the device."""
    if configured is not None:
        return configured
    if not per_image and accelerator == "cpu":
        return 0
    return max(0, min(8, (os.cpu_count() or 1) // 2))


class RunProgressBar(TQDMProgressBar):
    """Lightning's bar, redrawn every 10 batches (each redraw reads the logged metrics, a cost on a 2-core CPU and
    lines in a log), with the time left when the run has a ``deadline`` (a ``time.monotonic()`` value)."""

    def __init__(self, deadline: float | None = None) -> None:
        super().__init__(refresh_rate=10)
        self.deadline = deadline

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, int | str | float | dict]:
        items = super().get_metrics(trainer, pl_module)
        if self.deadline is not None:
            items["left"] = clock(self.deadline - time.monotonic())
        return items


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written beside their place, then renamed over it: a process killed while saving leaves the previous
    checkpoint whole."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        path = Path(path)
        partial = path.with_name(path.name + ".partial")
        super().save_checkpoint(checkpoint, partial, storage_options)
        os.replace(partial, path)


def make_trainer(config: TrainConfig, hardware: Hardware, *, run_dir: Path, callbacks: list[L.Callback],
                 deadline: float | None = None, validate: bool = True,
                 loggers: list[Logger] | None = None) -> L.Trainer:
    return L.Trainer(
        max_epochs=config.optim.epochs, accelerator=hardware.accelerator, devices=config.hardware.devices,
        num_nodes=config.hardware.num_nodes, strategy=config.hardware.strategy, precision=hardware.precision,
        logger=loggers or False, callbacks=[*callbacks, RunProgressBar(deadline)], num_sanity_val_steps=0,
        limit_train_batches=config.optim.max_steps_per_epoch or 1.0, log_every_n_steps=10, default_root_dir=run_dir,
        limit_val_batches=1.0 if validate else 0,
        use_distributed_sampler=False,  # the data module shards (celltune.data.sampling)
        plugins=[AtomicCheckpointIO()])
