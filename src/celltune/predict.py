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
from celltune.data import IMAGE_SUFFIXES, CellDataset, Sample, read_image
from celltune.transforms import TTA_VIEWS, eval_transform

log = logging.getLogger(__name__)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.inference_mode()
def batch_probs(model: nn.Module, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """(B, C) softmax probabilities, averaged over the test-time augmentation views of (B, 3, H, W) ``images``."""
    if tta not in TTA_VIEWS:
        raise ValueError(f"unknown test-time augmentation {tta!r}; choose from {sorted(TTA_VIEWS)}")
    views = TTA_VIEWS[tta](images)
    return torch.stack([model(v).float().softmax(dim=1) for v in views]).mean(dim=0)


@torch.inference_mode()
def predict_probs(model: nn.Module, loader: torch.utils.data.DataLoader, *, device: torch.device | None = None,
                  tta: str = "none") -> np.ndarray:
    """(N, num_classes) softmax probabilities in loader order."""
    device = device or default_device()
    model = model.to(device).eval()
    out = [batch_probs(model, images.to(device), tta).cpu() for images, _ in loader]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def card_transform(card: ModelCard):
    return eval_transform(image_size=card.image_size, mean=tuple(card.mean), std=tuple(card.std),
                          interpolation=card.interpolation)


def make_loader(samples: list[Sample], transform, *, batch_size: int = 64, num_workers: int = 0,
                masks: list[Path] | None = None):
    return torch.utils.data.DataLoader(CellDataset(samples, transform, masks), batch_size=batch_size, shuffle=False,
                                       num_workers=num_workers)


@dataclass(frozen=True)
class Prediction:
    path: Path
    probs: list[float]  # one per class, in class_names order

    def topk(self, class_names: list[str], k: int) -> list[tuple[str, float]]:
        order = np.argsort(self.probs)[::-1][:k]
        return [(class_names[i], float(self.probs[i])) for i in order]


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

    @torch.inference_mode()
    def predict_paths(self, paths: list[Path], batch_size: int = 64) -> list[Prediction]:
        results: list[Prediction] = []
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            batch = torch.stack([self.transform(read_image(p)) for p in chunk]).to(self.device)
            probs = batch_probs(self.model, batch, self.tta).cpu().tolist()
            results += [Prediction(p, pr) for p, pr in zip(chunk, probs, strict=True)]
        return results


def images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def write_predictions_csv(path: Path, predictions: list[Prediction], class_names: list[str],
                          labels: list[int] | None = None) -> None:
    """One row per image: path, [true label,] predicted label, confidence, then one probability column per class."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        head = ["path"] + (["true"] if labels is not None else []) + ["predicted", "confidence"]
        writer.writerow(head + [f"p_{c}" for c in class_names])
        for i, pred in enumerate(predictions):
            best = int(np.argmax(pred.probs))
            true = [class_names[labels[i]]] if labels is not None else []
            writer.writerow([str(pred.path), *true, class_names[best], f"{pred.probs[best]:.6f}",
                             *(f"{p:.6f}" for p in pred.probs)])
