"""Typed training configuration: parsed once at the edge (YAML file and CLI flags), plain data everywhere else."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from celltune.models import DEFAULT_MODEL
from celltune.transforms import Augment


@dataclass
class TrainConfig:
    data: str = ""
    model: str = DEFAULT_MODEL
    pretrained: bool = True
    weights: str | None = None  # a state_dict or checkpoint file, instead of the library's pretrained weights
    freeze_backbone: bool = False
    image_size: int | None = None  # None: the pretrained weights' native size
    epochs: int = 10
    batch_size: int = 32
    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    scheduler: Literal["plateau", "cosine", "none"] = "cosine"
    warmup_epochs: float = 1.0
    plateau_factor: float = 0.1
    plateau_patience: int = 5
    label_smoothing: float = 0.0
    augment: Augment = field(default_factory=Augment)
    mask_dir: str | None = None  # masks with the images' file names: white keeps, black zeroes the pixel
    balance: Literal["none", "sampler", "loss"] = "none"  # class imbalance: weighted sampler or class-weighted loss
    patience: int | None = None  # early stopping: epochs without improvement of early_stop_monitor
    early_stop_monitor: Literal["val_loss", "val_aca", "val_macro_f1"] = "val_loss"
    channels: list[str] | None = None  # e.g. [red, green, blue, yellow] for {id}_red.png files, or TIFF planes [0, 1]
    intensity: Literal["scale", "percentile", "dataset"] = "scale"  # see celltune.channels
    label_names: str | None = None  # multi-label: 'id,name' CSV naming the label ids
    focal_gamma: float = 0.0  # multi-label: focal loss with this gamma instead of BCE when > 0
    tta: Literal["none", "flips", "dihedral"] = "none"  # test-time augmentation for the final report
    val_fraction: float = 0.15  # used only for a single class-folder tree
    test_fraction: float = 0.15
    seed: int = 0
    num_workers: int | None = None  # None: half the CPU cores (none for cached batches on CPU, see train)
    cache: Literal["auto", "on", "off"] = "auto"  # decoded, resized uint8 images on disk; auto: datasets up to 2 GiB
    cache_dir: str | None = None  # default $CELLTUNE_CACHE_DIR or ~/.cache/celltune
    accelerator: str = "auto"
    devices: int | str = 1  # per node; "auto" takes every GPU
    num_nodes: int = 1
    strategy: str = "auto"  # "ddp" for multi-GPU (torchrun, SLURM), "ddp_spawn" also runs on CPU
    precision: str | None = None  # None: bf16-mixed on a GPU that has it, else 32-true
    channels_last: bool | None = None  # None: on (faster on GPUs and on CPUs)
    compile: bool = False  # torch.compile the model
    out_dir: str = "runs"
    name: str | None = None  # run directory name; default MODEL-TIMESTAMP
    max_steps_per_epoch: int | None = None  # cap batches per epoch (quick checks and tests)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_keys(cls: type, data: dict, source: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{source}: unknown option(s) {unknown}; known: {sorted(known)}")


def config_from_dict(data: dict[str, Any], source: str = "config") -> TrainConfig:
    data = dict(data)
    _check_keys(TrainConfig, data, source)
    augment = data.pop("augment", None) or {}
    if isinstance(augment, Augment):
        augment = asdict(augment)
    _check_keys(Augment, augment, f"{source} (augment)")
    return TrainConfig(**data, augment=Augment(**augment))


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """A YAML file's options, then ``overrides`` (from CLI flags) on top."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read config ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file holds a mapping of option: value")
    merged = {**data, **(overrides or {})}
    if "augment" in data and overrides and "augment" in overrides:
        merged["augment"] = {**data["augment"], **overrides["augment"]}
    return config_from_dict(merged, source=str(path))


def save_config(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def replace(config: TrainConfig, **changes: Any) -> TrainConfig:
    return dataclasses.replace(config, **changes)
