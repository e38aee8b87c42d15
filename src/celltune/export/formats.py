"""Exports of a run's best checkpoint: ONNX, a ``torch.export`` program (``.pt2``) and a BioImage Model Zoo
package (``celltune.export.modelzoo``). Every export is read back
right after it is written and run on real images of the run (a few test images; synthetic ones of the right shape
when the data is gone) next to the PyTorch model: a difference beyond the tolerance is an error, never a silent
file.

Each export carries the model card (class names, channels, mean/std, input size) as plain data: in the ONNX
model's metadata (``celltune_card``, JSON) and in the ``.pt2`` archive's ``extra/celltune_card.json``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from celltune.errors import CelltuneError, CheckpointError, ConfigError, ExportError
from celltune.export.modelzoo import PackageInfo
from celltune.models.checkpoint import ModelCard, load_checkpoint, resolve_checkpoint
from celltune.predict.onnx_model import CARD_KEY, card_from_json, card_json, onnx_session

log = logging.getLogger(__name__)

Format = Literal["onnx", "pt2", "bioimageio"]
# keep celltune.cli.exports.FORMATS in step
SUFFIXES: dict[str, str] = {"onnx": ".onnx", "pt2": ".pt2", "bioimageio": ".zip"}
OPSET = 18
TOLERANCE = 1e-4  # max abs logit difference accepted between an export and the PyTorch model


@dataclass(frozen=True)
class ExportCheck:
    """What was written and how it compared with the PyTorch model."""

    path: Path
    format: str
    max_abs_diff: float  # over the logits of every checked image
    images: int
    source: str  # "test images" / "validation images" of the run, or "synthetic"
    validation: str | None = None  # bioimageio: the spec's verdict ("valid-format") and test_model's ("passed")
    tested: str | None = None
    warnings: tuple[str, ...] = ()  # bioimageio: what the zoo would still ask for (license, authors, citation)


def check_inputs(checkpoint: Path, card: ModelCard, saved: dict, *, n: int = 8) -> tuple[torch.Tensor, str]:
    """(N, C, H, W) float32 model inputs: ``n`` test (or validation) images spread over the run's split,
    preprocessed as its card says, or, when the run's data is gone, uniform noise in [0, 1] normalised the same
    way."""
    from celltune.config.recipes import load_config
    from celltune.data.discovery import discover_as_trained
    from celltune.data.images import load_input
    from celltune.data.transforms import card_transform

    try:
        config = load_config(checkpoint.parent / "config.yaml")
        found = discover_as_trained(config.data.root, saved, defaults=config.data,
                                    label_names=config.data.label_names)
        split = "test" if found.splits.get("test") else "val"
        transform = card_transform(card)
        samples = found.splits[split]
        spread = samples[::max(1, len(samples) // n)][:n]  # across the split, so across its classes
        images = [transform(load_input(s.path, channels=card.channels, intensity=card.intensity)) for s in spread]
        return torch.stack(images), f"{split} images"
    except (CelltuneError, OSError) as err:
        log.info("checking the export on synthetic inputs: the run's images cannot be read (%s)", err)
    noise = torch.rand(n, card.in_chans, card.image_size, card.image_size, generator=torch.Generator().manual_seed(0))
    mean, std = torch.tensor(card.mean)[:, None, None], torch.tensor(card.std)[:, None, None]
    return (noise - mean) / std, "synthetic"


def _compare(expected: torch.Tensor, got: np.ndarray | torch.Tensor, path: Path, tolerance: float) -> float:
    got_t = torch.as_tensor(np.asarray(got)).float()
    if got_t.shape != expected.shape:
        raise ExportError(f"{path}: the export gives outputs of shape {tuple(got_t.shape)}, the model "
                          f"{tuple(expected.shape)}; the file was kept for inspection, do not use it")
    diff = float((got_t - expected).abs().max())
    if not diff <= tolerance:  # also catches NaN
        raise ExportError(f"{path}: the export's logits differ from the PyTorch model's by up to {diff:.3g} "
                          f"(tolerance {tolerance:g}); the file was kept for inspection, do not use it")
    return diff


def export_onnx(model: nn.Module, card: ModelCard, path: Path, example: torch.Tensor) -> None:
    """Opset ``OPSET``, a variable batch axis, the weights inside the file, the card in its metadata."""
    import onnx

    for noisy in ("onnx_ir", "onnxscript"):  # a line per folded constant and rewrite otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(model, (example,), dynamo=True, opset_version=OPSET, input_names=["image"],
                                output_names=["logits"], dynamic_shapes={"x": {0: batch}}, external_data=False,
                                verbose=False)
    if program is None:  # only the legacy TorchScript exporter returns None
        raise ExportError(f"{path}: torch.onnx.export returned no program")
    program.save(str(path), external_data=False)
    proto = onnx.load(str(path))
    metadata = {CARD_KEY: card_json(card), "class_names": json.dumps(card.class_names),
                "channels": json.dumps(card.channels), "mean": json.dumps(card.mean), "std": json.dumps(card.std),
                "image_size": str(card.image_size)}
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _check_onnx(path: Path, inputs: torch.Tensor) -> np.ndarray:
    session = onnx_session(path)
    return session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0]


def export_pt2(model: nn.Module, card: ModelCard, path: Path, example: torch.Tensor) -> None:
    """A ``torch.export`` program with a variable batch axis; the card in the archive's extra files."""
    program = torch.export.export(model, (example,), dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}})
    torch.export.save(program, path, extra_files={f"{CARD_KEY}.json": card_json(card)})


def _check_pt2(path: Path, inputs: torch.Tensor) -> torch.Tensor:
    extra = {f"{CARD_KEY}.json": ""}
    try:
        program = torch.export.load(path, extra_files=extra)
    except Exception as err:
        raise CheckpointError(f"{path}: torch.export cannot load it ({err}); export it again") from None
    card_from_json(extra[f"{CARD_KEY}.json"])  # the card came through
    with torch.inference_mode():
        return program.module()(inputs)


class _Named(nn.Module):
    """The classifier with one positional input named ``x``, so dynamic shapes can name it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, classes) logits
        return self.model(x)


def export_run(run: str | Path, *, format: Format, out: str | Path | None = None, tolerance: float = TOLERANCE,
               info: PackageInfo | None = None) -> ExportCheck:
    """Export ``run``'s best checkpoint as ``format`` to ``out`` (default: beside it, ``best.onnx`` ...), then load
    the file back and compare its logits with the PyTorch model's on a few images of the run. ``info``: the
    license, authors and citation of a bioimageio package."""
    if format not in SUFFIXES:
        raise ConfigError(f"unknown export format {format!r}; choose from {', '.join(SUFFIXES)}")
    checkpoint = resolve_checkpoint(run)
    bare, card, saved = load_checkpoint(checkpoint)
    model = _Named(bare).eval()
    path = Path(out) if out is not None else checkpoint.with_name(checkpoint.stem + SUFFIXES[format])
    inputs, source = check_inputs(checkpoint, card, saved)
    with torch.inference_mode():
        expected = model(inputs).float()
    path.parent.mkdir(parents=True, exist_ok=True)
    diffs: list[float] = []

    def onnx_checked(target: Path) -> None:
        _write(format, target, lambda: export_onnx(model, card, target, inputs[:2]))
        diffs.append(_compare(expected, _check_onnx(target, inputs), target, tolerance))

    if format == "bioimageio":
        from celltune.export.modelzoo import package

        validation, tested, warnings = package(model=bare, card=card, checkpoint=checkpoint, inputs=inputs,
                                               out=path, info=info or PackageInfo(), write_onnx=onnx_checked)
        log.info("%s: bioimageio package %s, test_model %s", path, validation, tested)
        for warning in warnings:  # kept in the result too, for library users
            log.info("%s: bioimageio.spec warns: %s", path, warning)
        return ExportCheck(path, format, diffs[0], len(inputs), source, validation, tested, tuple(warnings))
    if format == "onnx":
        onnx_checked(path)
    else:
        _write(format, path, lambda: export_pt2(model, card, path, inputs[:2]))
        diffs.append(_compare(expected, _check_pt2(path, inputs), path, tolerance))
    log.info("%s: %s export matches the PyTorch model (max abs logit difference %.2e on %d %s)", path, format,
             diffs[0], len(inputs), source)
    return ExportCheck(path, format, diffs[0], len(inputs), source)


def _write(format: str, path: Path, writer: Callable[[], None]) -> None:
    try:
        writer()
    except CelltuneError:
        raise
    except Exception as err:  # the exporters raise many types for an unsupported operator or model
        raise ExportError(f"{path}: {format} export failed ({type(err).__name__}: {str(err).splitlines()[0]})") \
            from err
