"""Weights that carry their preprocessing and labels, as plain data loadable with ``torch.load(weights_only=True)``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from celltune.models import create_model

FORMAT = "celltune-checkpoint/1"
BEST = "best.pt"


@dataclass(frozen=True)
class ModelCard:
    """Everything needed to rebuild the model and feed it images like the ones it was trained on."""

    model_name: str
    class_names: list[str]
    mean: list[float]
    std: list[float]
    image_size: int
    interpolation: str = "bilinear"
    in_chans: int = 3
    channels: list[str] | None = None  # None: RGB from one image file; else channel names or TIFF plane numbers
    intensity: str = "scale"  # scale | percentile | dataset (see celltune.channels)
    multilabel: bool = False  # sigmoid outputs, several labels per image
    thresholds: list[float] | None = None  # multi-label: per-class decision thresholds tuned on validation


def save_checkpoint(path: str | Path, *, model: nn.Module, card: ModelCard, extra: dict | None = None) -> None:
    path = Path(path)
    data = {"format": FORMAT, **asdict(card), "state_dict": model.state_dict(), **(extra or {})}
    tmp = path.with_suffix(".partial")
    torch.save(data, tmp)
    tmp.replace(path)  # a crash mid-write never leaves a truncated checkpoint behind


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory means its best checkpoint."""
    path = Path(path)
    if path.is_dir():
        path = path / BEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint here; give a run directory or a {BEST} file")
    return path


def load_checkpoint(path: str | Path) -> tuple[nn.Module, ModelCard, dict]:
    """(model in eval mode, its card, the whole checkpoint dict)."""
    path = resolve_checkpoint(path)
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a celltune checkpoint (expected format {FORMAT!r})")
    card = ModelCard(**{k: data[k] for k in ModelCard.__dataclass_fields__ if k in data})
    model, _ = create_model(card.model_name, num_classes=len(card.class_names), in_chans=card.in_chans,
                            pretrained=False)
    model.load_state_dict(data["state_dict"])
    return model.eval(), card, data
