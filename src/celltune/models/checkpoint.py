"""Weights that carry their preprocessing and labels, as plain data loadable with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import pickle
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from celltune.errors import CheckpointError, MissingError, WriteError
from celltune.models.factory import create_model

_FAMILY = "celltune-checkpoint/"
FORMAT = f"{_FAMILY}1"  # a format a later celltune cannot read the same way gets the next number
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
    intensity: str = "scale"  # scale | percentile | dataset (see celltune.data.images)
    multilabel: bool = False  # sigmoid outputs, several labels per image
    thresholds: list[float] | None = None  # multi-label: per-class decision thresholds tuned on validation
    # Fitted on validation after training (celltune.metrics.calibration): one temperature, or one per label; None: none.
    temperature: list[float] | None = None
    # The validation images' sorted scores that prediction sets are calibrated with (celltune.metrics.conformal).
    conformal_scores: list[float] | None = None


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".partial")
    try:
        torch.save(data, tmp)
    except OSError as err:  # a full disk, say: the previous checkpoint stays as it was
        tmp.unlink(missing_ok=True)
        raise WriteError(f"{path}: could not write the checkpoint ({err}); the previous one is kept. Free some space "
                         "and resume the run (celltune train --resume RUN_DIR)") from err
    tmp.replace(path)  # a crash mid-write never leaves a truncated checkpoint behind


def save_checkpoint(path: str | Path, *, model: nn.Module, card: ModelCard, extra: dict | None = None) -> None:
    """``card``, the weights and ``extra`` (plain data about the run: epoch, validation metrics, split)."""
    _write(Path(path), {"format": FORMAT, **asdict(card), "state_dict": model.state_dict(), **(extra or {})})


def replace_card(path: str | Path, card: ModelCard) -> None:
    """Rewrite a checkpoint's card (e.g. with tuned thresholds), keeping its weights and everything else."""
    _write(Path(path), {**read_checkpoint(path), **asdict(card)})


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory means its best checkpoint."""
    path = Path(path)
    if path.is_dir():
        path = path / BEST
    if not path.is_file():
        raise MissingError(f"{path}: no checkpoint here; give a run directory or a {BEST} file")
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's plain data (a run directory means its ``best.pt``)."""
    path = resolve_checkpoint(path)
    try:
        # weights_only: plain tensors and containers, never code; a pickle of anything else is refused here. Its
        # unpickler warns about a plain pickle's protocol before refusing it: the refusal below says all there is.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's own text tells how to load it anyway: not what to tell here
        raise CheckpointError(f"{path}: not a celltune checkpoint: it holds pickled Python objects, not plain data, "
                              f"and celltune never runs code from a file; give a run directory or the {BEST} that "
                              "celltune train wrote") from None
    except Exception as err:  # RuntimeError (no zip archive), EOFError (truncated) ...
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{path}: not a celltune checkpoint, torch cannot read it as plain data ({reason}); "
                              f"give a run directory or the {BEST} that celltune train wrote") from None
    found = data.get("format") if isinstance(data, dict) else None
    if isinstance(found, str) and found.startswith(_FAMILY) and found != FORMAT:
        raise CheckpointError(f"{path}: written by a newer celltune ({found}; this one reads {FORMAT}); upgrade "
                              "celltune (pip install -U celltune) to use it")
    if found != FORMAT:
        raise CheckpointError(f"{path}: not a celltune checkpoint (no {FORMAT!r} format mark); give a run directory "
                              f"or the {BEST} that celltune train wrote")
    return data


def load_checkpoint(path: str | Path) -> tuple[nn.Module, ModelCard, dict]:
    """(model in eval mode, its card, the whole checkpoint dict)."""
    data = read_checkpoint(path)
    card = ModelCard(**{f.name: data[f.name] for f in fields(ModelCard) if f.name in data})
    model, _ = create_model(card.model_name, num_classes=len(card.class_names), in_chans=card.in_chans,
                            pretrained=False)
    model.load_state_dict(data["state_dict"])
    return model.eval(), card, data
