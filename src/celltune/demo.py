"""The embedded default job: the offline pretrained model fine-tuned on synthetic HEp-2-like cells (or real data)."""

from __future__ import annotations

from pathlib import Path

from celltune.config import TrainConfig
from celltune.models import DEFAULT_MODEL
from celltune.synthetic import make_dataset


def demo_config(*, data: str | None, workdir: Path, epochs: int | None = None) -> TrainConfig:
    """A recipe that runs in a few minutes on 2 CPU cores; synthetic data is made under ``workdir`` when needed."""
    if data is None:
        synthetic = workdir / "synthetic-hep2"
        if not (synthetic / "README.txt").is_file():
            make_dataset(synthetic, per_class=(60, 20, 20), size=64, seed=0)
        return TrainConfig(data=str(synthetic), model=DEFAULT_MODEL, image_size=64, epochs=epochs or 12,
                           batch_size=32, optimizer="adamw", lr=1e-3, weight_decay=0.05, scheduler="cosine",
                           warmup_epochs=1, out_dir=str(workdir / "runs"), name="demo-synthetic")
    return TrainConfig(data=data, model=DEFAULT_MODEL, image_size=96, epochs=epochs or 10, batch_size=64,
                       optimizer="adamw", lr=1e-3, weight_decay=0.05, scheduler="cosine", warmup_epochs=1,
                       out_dir=str(workdir / "runs"), name="demo")
