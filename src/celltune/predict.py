"""Inference: class probabilities for datasets, single images and folders."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from celltune.checkpoint import ModelCard, load_checkpoint
from celltune.data import IMAGE_SUFFIXES, Sample
from celltune.dataset import CellDataset, load_input
from celltune.transforms import TTA_VIEWS, eval_transform

log = logging.getLogger(__name__)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.inference_mode()
def batch_probs(model: nn.Module, images: torch.Tensor, tta: str = "none", multilabel: bool = False) -> torch.Tensor:
    """(B, C) probabilities (softmax, or per-label sigmoid), averaged over the test-time augmentation views of the
    (B, channels, H, W) ``images``."""
    if tta not in TTA_VIEWS:
        raise ValueError(f"unknown test-time augmentation {tta!r}; choose from {sorted(TTA_VIEWS)}")
    views = TTA_VIEWS[tta](images)
    activate = torch.sigmoid if multilabel else (lambda logits: logits.softmax(dim=1))
    return torch.stack([activate(model(v).float()) for v in views]).mean(dim=0)


@torch.inference_mode()
def predict_probs(model: nn.Module, loader: torch.utils.data.DataLoader, *, device: torch.device | None = None,
                  tta: str = "none", multilabel: bool = False) -> np.ndarray:
    """(N, num_classes) probabilities in loader order."""
    device = device or default_device()
    model = model.to(device).eval()
    out = [batch_probs(model, images.to(device), tta, multilabel).cpu() for images, _ in loader]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def card_transform(card: ModelCard):
    return eval_transform(image_size=card.image_size, mean=tuple(card.mean), std=tuple(card.std),
                          interpolation=card.interpolation)


def make_loader(samples: list[Sample], card: ModelCard, *, batch_size: int = 64, num_workers: int = 0,
                masks: list[Path] | None = None):
    dataset = CellDataset(samples, card_transform(card), masks, channels=card.channels, intensity=card.intensity,
                          num_classes=len(card.class_names))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)


@dataclass(frozen=True)
class Prediction:
    path: Path
    probs: list[float]  # one per class, in class_names order

    def topk(self, class_names: list[str], k: int) -> list[tuple[str, float]]:
        order = np.argsort(self.probs)[::-1][:k]
        return [(class_names[i], float(self.probs[i])) for i in order]

    def above(self, class_names: list[str], thresholds: list[float]) -> list[tuple[str, float]]:
        """Multi-label: every label whose probability reaches its threshold, most probable first."""
        hits = [i for i, (p, t) in enumerate(zip(self.probs, thresholds, strict=True)) if p >= t]
        return sorted(((class_names[i], float(self.probs[i])) for i in hits), key=lambda x: -x[1])


class Predictor:
    """A checkpoint with its own preprocessing, ready for images."""

    def __init__(self, checkpoint: str | Path, device: torch.device | None = None, tta: str = "none") -> None:
        self.model, self.card, _ = load_checkpoint(checkpoint)
        self.device = device or default_device()
        self.model.to(self.device)
        self.transform = card_transform(self.card)
        self.tta = tta

    @property
    def class_names(self) -> list[str]:
        return self.card.class_names

    @property
    def thresholds(self) -> list[float]:
        return self.card.thresholds or [0.5] * len(self.class_names)

    @torch.inference_mode()
    def predict_paths(self, paths: list[Path], batch_size: int = 64) -> list[Prediction]:
        results: list[Prediction] = []
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            images = [load_input(p, channels=self.card.channels, intensity=self.card.intensity) for p in chunk]
            batch = torch.stack([self.transform(x) for x in images]).to(self.device)
            probs = batch_probs(self.model, batch, self.tta, self.card.multilabel).cpu().tolist()
            results += [Prediction(p, pr) for p, pr in zip(chunk, probs, strict=True)]
        return results


def inputs_under(folder: Path, channels: list[str] | None = None) -> list[Path]:
    """Images under ``folder``; with named channels, the stems of ``{stem}_{channel}.png`` file groups."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if channels is None or all(c.isdigit() for c in channels):
        return files
    marker = f"_{channels[0]}"
    return [p.with_name(p.stem[: -len(marker)]) for p in files if p.stem.endswith(marker)]


def write_predictions_csv(path: Path, predictions: list[Prediction], class_names: list[str],
                          labels: list | None = None, thresholds: list[float] | None = None) -> None:
    """One row per image: path, [true label(s),] predicted label(s), confidence, one probability column per class.

    With ``thresholds`` (multi-label), labels are space-separated and the predicted ones are those above threshold.
    """
    def names(ids) -> str:
        return " ".join(class_names[i] for i in ids)

    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        head = ["path"] + (["true"] if labels is not None else []) + ["predicted", "confidence"]
        writer.writerow(head + [f"p_{c}" for c in class_names])
        for i, pred in enumerate(predictions):
            if thresholds is None:
                best = int(np.argmax(pred.probs))
                predicted, confidence = class_names[best], pred.probs[best]
                true = [class_names[labels[i]]] if labels is not None else []
            else:
                hits = pred.above(class_names, thresholds)
                predicted = " ".join(name for name, _ in hits)
                confidence = min((p for _, p in hits), default=max(pred.probs))
                true = [names(labels[i])] if labels is not None else []
            writer.writerow([str(pred.path), *true, predicted, f"{confidence:.6f}", *(f"{p:.6f}" for p in pred.probs)])
