"""The embedded default job: the offline pretrained model fine-tuned on synthetic HEp-2-like cells (or real data)."""

from __future__ import annotations

from pathlib import Path

from celltune.config import DEFAULT_MODEL, TrainConfig, config_from_dict
from celltune.data.synthetic import make_dataset


def demo_config(*, data: str | None, workdir: Path, epochs: int | None = None,
                max_steps_per_epoch: int | None = None) -> TrainConfig:
    """A recipe that runs in a few minutes on 2 CPU cores; synthetic data is made under ``workdir`` when needed."""
    common = {"model": DEFAULT_MODEL, "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "scheduler": "cosine",
              "warmup_epochs": 1, "out_dir": str(workdir / "runs"), "max_steps_per_epoch": max_steps_per_epoch}
    if data is None:
        synthetic = workdir / "synthetic-hep2"
        if not (synthetic / "README.txt").is_file():
            make_dataset(synthetic, per_class=(60, 20, 20), size=64, seed=0)
        return config_from_dict({**common, "data": str(synthetic), "image_size": 64, "epochs": epochs or 12,
                                 "batch_size": 32, "name": "demo-synthetic"}, source="demo")
    return config_from_dict({**common, "data": data, "image_size": 96, "epochs": epochs or 10, "batch_size": 64,
                             "name": "demo"}, source="demo")
