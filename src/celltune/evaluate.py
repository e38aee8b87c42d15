"""Scoring a trained model on a labelled split, and writing what was scored."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from torch import nn

from celltune.checkpoint import ModelCard, load_checkpoint
from celltune.data import DataError, LabelledSplits, Sample, discover
from celltune.dataset import mask_paths
from celltune.metrics import classification_metrics, multi_hot, multilabel_metrics
from celltune.predict import Prediction, make_loader, predict_probs, write_predictions_csv
from celltune.report import plot_confusion, write_json

log = logging.getLogger(__name__)


def score(model: nn.Module, card: ModelCard, samples: list[Sample], *, batch_size: int = 64, num_workers: int = 0,
          tta: str = "none", masks: list[Path] | None = None) -> tuple[dict, np.ndarray]:
    """(metrics, (N, C) probabilities) of ``model`` on ``samples``; multi-label at the card's thresholds."""
    loader = make_loader(samples, card, batch_size=batch_size, num_workers=num_workers, masks=masks)
    probs = predict_probs(model, loader, tta=tta, multilabel=card.multilabel)
    labels = [s.label for s in samples]
    if card.multilabel:
        truth = multi_hot(labels, len(card.class_names))  # type: ignore[arg-type]
        metrics = multilabel_metrics(truth, probs, card.class_names, card.thresholds)
    else:
        metrics = classification_metrics(labels, probs.argmax(axis=1), card.class_names, probs=probs)
    return metrics | {"tta": tta}, probs


def write_scored(out_dir: Path, *, split: str, metrics: dict, probs: np.ndarray, samples: list[Sample],
                 class_names: list[str], tag: str = "", thresholds: list[float] | None = None) -> None:
    """predictions{tag}.csv and (single-label) confusion_matrix{tag}.png under ``out_dir``."""
    predictions = [Prediction(s.path, p.tolist()) for s, p in zip(samples, probs, strict=True)]
    write_predictions_csv(out_dir / f"predictions{tag}.csv", predictions, class_names, [s.label for s in samples],
                          thresholds)
    if metrics.get("multilabel"):
        return
    plot_confusion(metrics["confusion_matrix"], class_names, out_dir / f"confusion_matrix{tag}.png",
                   title=f"{split}: accuracy {metrics['accuracy']:.3f}, ACA {metrics['mean_class_accuracy']:.3f}")


def align_labels(found: LabelledSplits, class_names: list[str], root: str | Path) -> LabelledSplits:
    """Re-index the dataset's labels to the checkpoint's class order; a class the model never saw is an error.

    Multi-label ids are the model's output indices already; they only need to be in range."""
    if found.multilabel:
        if len(found.class_names) > len(class_names):
            raise DataError(f"{root}: label ids up to {len(found.class_names) - 1}, but the model has "
                            f"{len(class_names)} labels")
        return LabelledSplits(list(class_names), found.splits, found.layout)
    unknown = sorted(set(found.class_names) - set(class_names))
    if unknown:
        raise DataError(f"{root}: classes {unknown} are not among the model's classes {class_names}")
    index = [class_names.index(c) for c in found.class_names]
    splits = {k: [Sample(s.path, index[s.label]) for s in v] for k, v in found.splits.items()}  # type: ignore[index]
    return LabelledSplits(list(class_names), splits, found.layout)


def evaluate_checkpoint(checkpoint: str | Path, *, data: str | Path, split: str = "test", seed: int = 0,
                        out_dir: str | Path | None = None, batch_size: int = 64, tta: str = "none",
                        mask_dir: str | Path | None = None) -> dict:
    """Metrics of a checkpoint (or run directory) on one split of ``data``; files go to ``out_dir`` if given."""
    model, card, saved = load_checkpoint(checkpoint)
    # The split as in training (seed and fractions saved in the checkpoint), so "test" means the same images.
    found = discover(data, seed=saved.get("split_seed", seed), val_fraction=saved.get("val_fraction", 0.15),
                     test_fraction=saved.get("test_fraction", 0.15))
    found = align_labels(found, card.class_names, data)
    if split not in found.splits:
        raise DataError(f"{data}: no {split!r} split here (found {sorted(found.splits)})")
    samples = found.splits[split]
    masks = mask_paths(samples, data_root=data, mask_dir=mask_dir) if mask_dir else None
    metrics, probs = score(model, card, samples, batch_size=batch_size, tta=tta, masks=masks)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tag = f"_{split}"
        write_scored(out, split=split, metrics=metrics, probs=probs, samples=samples, class_names=card.class_names,
                     tag=tag)
        write_json(out / f"metrics{tag}.json", metrics)
    return metrics
