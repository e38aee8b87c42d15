"""Inference: class probabilities for datasets, single images and folders (``to_csv`` writes them as a table)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from celltune.data.dataset import CellDataset
from celltune.data.imagefiles import is_hidden, is_image_file
from celltune.data.images import load_input, names_channel_files
from celltune.data.samples import Sample
from celltune.data.transforms import TTA_VIEWS, NormalizeBatch, card_transform
from celltune.errors import ConfigError, DataError, MissingError
from celltune.metrics import conformal
from celltune.metrics.calibration import uncalibrated, with_temperature
from celltune.models.checkpoint import ModelCard, load_checkpoint

log = logging.getLogger(__name__)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def for_inference(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` on ``device`` in eval mode and channels_last: faster on GPUs and, through oneDNN, on CPUs too (the
    README's throughput section has the measurements)."""
    return model.to(device).to(memory_format=torch.channels_last).eval()


@torch.inference_mode()
def batch_probs(model: nn.Module, images: torch.Tensor, tta: str = "none", multilabel: bool = False) -> torch.Tensor:
    """(B, C) probabilities (softmax, or per-label sigmoid), averaged over the test-time augmentation views of the
    (B, channels, H, W) ``images``."""
    if tta not in TTA_VIEWS:
        raise ConfigError(f"unknown test-time augmentation {tta!r}; choose from {sorted(TTA_VIEWS)}")
    views = TTA_VIEWS[tta](images)
    activate = torch.sigmoid if multilabel else (lambda logits: logits.softmax(dim=1))
    return torch.stack([activate(model(v.contiguous(memory_format=torch.channels_last)).float())
                        for v in views]).mean(dim=0)


def predict_probs(model: nn.Module, loader: Iterable, *, device: torch.device | None = None, tta: str = "none",
                  multilabel: bool = False, prepare: NormalizeBatch | None = None) -> np.ndarray:
    """(N, num_classes) probabilities in loader order. ``prepare`` turns each batch into the model's input on the
    device (uint8 batches of the cache: ``NormalizeBatch``). Not under inference mode itself (``batch_probs`` is):
    the memory-format change would turn the parameters into inference tensors, and the model could not train again."""
    device = device or default_device()
    model = for_inference(model, device)

    def on_device(images: torch.Tensor) -> torch.Tensor:
        images = images.to(device)
        return images if prepare is None else prepare(images.contiguous(memory_format=torch.channels_last))

    out = [batch_probs(model, on_device(images), tta, multilabel).cpu() for images, *_ in loader]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def make_loader(samples: list[Sample], card: ModelCard, *, batch_size: int = 64, num_workers: int = 0,
                masks: list[Path] | None = None):
    dataset = CellDataset(samples, card_transform(card), masks, channels=card.channels, intensity=card.intensity,
                          num_classes=len(card.class_names))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)


@dataclass(frozen=True)
class Prediction:
    path: Path
    probs: list[float]  # one per class, in class_names order; empty when the image could not be read
    error: str | None = None  # why the image could not be read

    def prediction_set(self, class_names: list[str], limit: float) -> list[str]:
        """The classes of its prediction set at the conformal ``limit`` (``Predictor.set_limit``), most probable
        first."""
        chosen = conformal.prediction_sets(np.asarray([self.probs]), limit, conformal.draw([self.path]))[0]
        return [class_names[i] for i in chosen]

    def topk(self, class_names: list[str], k: int) -> list[tuple[str, float]]:
        order = np.argsort(self.probs)[::-1][:k]
        return [(class_names[i], float(self.probs[i])) for i in order]

    def above(self, class_names: list[str], thresholds: list[float]) -> list[tuple[str, float]]:
        """Multi-label: every label whose probability reaches its threshold, most probable first."""
        hits = [i for i, (p, t) in enumerate(zip(self.probs, thresholds, strict=True)) if p >= t]
        return sorted(((class_names[i], float(self.probs[i])) for i in hits), key=lambda x: -x[1])


class Predictor:
    """A checkpoint (or an exported ``.onnx``) with its own preprocessing, ready for images."""

    def __init__(self, checkpoint: str | Path, device: torch.device | None = None, tta: str = "none",
                 calibrate: str = "temperature") -> None:
        if Path(checkpoint).suffix.lower() == ".onnx":  # an export: onnxruntime, the card from its metadata
            from celltune.predict.onnx_model import OnnxModule, read_onnx_card

            self.card = read_onnx_card(Path(checkpoint))
            self.model: nn.Module = OnnxModule(Path(checkpoint))
            self.device = torch.device("cpu")
        else:
            self.model, self.card, _ = load_checkpoint(checkpoint)
            self.device = device or default_device()
            for_inference(self.model, self.device)
        if calibrate == "none":
            self.card = uncalibrated(self.card)
        self.checkpoint = Path(checkpoint)
        self.transform = card_transform(self.card)
        self.tta = tta

    def set_limit(self, coverage: float) -> float:
        """The conformal threshold of sets that hold the true class for ``coverage`` of images (metrics.conformal)."""
        conformal.check_coverage(coverage)
        if self.card.multilabel:
            raise ConfigError("--coverage: prediction sets are for single-label models; a multi-label model's answer "
                              "is already a set, its labels above their thresholds")
        if self.card.conformal_scores is None:
            raise ConfigError(f"{self.checkpoint}: --coverage needs the validation scores that celltune train keeps in "
                              "the checkpoint since prediction sets exist (and not with --calibrate none); add them "
                              "with: celltune calibrate RUN_DIR --data DATA_DIR")
        return conformal.threshold(self.card.conformal_scores, coverage)

    @property
    def class_names(self) -> list[str]:
        return self.card.class_names

    @property
    def thresholds(self) -> list[float]:
        return self.card.thresholds or [0.5] * len(self.class_names)

    def input_for(self, path: Path) -> torch.Tensor | str:
        """The model's (C, H, W) input, or why ``path`` cannot be one."""
        try:
            return self.transform(load_input(path, channels=self.card.channels, intensity=self.card.intensity))
        except DataError as err:
            return str(err).removeprefix(f"{path}: ")

    @torch.inference_mode()
    def predict_paths(self, paths: list[Path], batch_size: int = 64) -> list[Prediction]:
        """One prediction per path, in order; an image that cannot be read gets its ``error`` instead of
        probabilities, and the others are predicted all the same."""
        results: list[Prediction] = []
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            inputs = [self.input_for(p) for p in chunk]
            good = [x for x in inputs if isinstance(x, torch.Tensor)]
            raw = batch_probs(self.model, torch.stack(good).to(self.device), self.tta,
                              self.card.multilabel).cpu().numpy() if good else np.zeros((0, 0))
            probs = iter(with_temperature(raw, self.card.temperature, multilabel=self.card.multilabel).tolist())
            results += [Prediction(p, next(probs)) if isinstance(x, torch.Tensor) else Prediction(p, [], error=x)
                        for p, x in zip(chunk, inputs, strict=True)]
        return results


def require_inputs(inputs: Iterable[Path], channels: list[str] | None) -> None:
    """Every given image or folder exists, or a ``MissingError`` names the first that does not. With per-channel
    files an image is named by its stem (data/abc for data/abc_red.png ...), which is no file, so none is checked."""
    missing = next((p for p in inputs if not p.exists() and not names_channel_files(channels)), None)
    if missing is not None:
        raise MissingError(f"{missing}: no such image or folder")


def inputs_under(folder: Path, channels: list[str] | None = None) -> Iterator[Path]:
    """Images under ``folder``, one directory at a time in sorted order (memory bounded by the largest directory);
    with named channels, the stems of ``{stem}_{channel}.png`` file groups."""
    marker = f"_{channels[0]}" if channels is not None and names_channel_files(channels) else None
    for directory, subdirs, names in os.walk(folder):
        subdirs[:] = sorted(d for d in subdirs if not is_hidden(d))  # .DS_Store, ._cell.png, __MACOSX/: imagefiles
        for name in sorted(names):
            path = Path(directory) / name
            if not is_image_file(path):
                continue
            if marker is None:
                yield path
            elif path.stem.endswith(marker):
                yield path.with_name(path.stem[: -len(marker)])
