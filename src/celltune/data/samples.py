"""The data model: labelled samples, the splits they are divided into, and their labels as a matrix."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

import numpy as np

from celltune.config import Split

SPLITS: tuple[str, ...] = get_args(Split)


@dataclass(frozen=True)
class Sample:
    path: Path  # an image file, or for per-channel files their common stem ({Id} of {Id}_red.png)
    label: int | tuple[int, ...]  # a class index, or the label ids of a multi-label image
    group: str | None = None  # the patient, slide or specimen it comes from, when groups are given


@dataclass
class LabelledSplits:
    """Samples per split (``train``/``val``/``test``) with the class names their labels index."""

    class_names: list[str]
    splits: dict[str, list[Sample]] = field(default_factory=dict)
    layout: str = ""
    celltune_split: bool = False  # celltune divided the images (else the splits are the layout's own)
    left_out_classes: dict[str, dict] = field(default_factory=dict)  # {class: {"images": n, "why": ...}} (class_choice)

    def class_indices(self, split: str) -> list[int]:
        """Single-label: the class index of every image of ``split``."""
        return [s.label for s in self.splits[split] if isinstance(s.label, int)]

    @property
    def multilabel(self) -> bool:
        return any(isinstance(s.label, tuple) for samples in self.splits.values() for s in samples)

    @property
    def samples(self) -> list[Sample]:
        """Every sample, split after split."""
        return [s for samples in self.splits.values() for s in samples]

    def counts(self) -> dict[str, dict[str, int]]:
        """{split: {class name: images}} with every class present, zeros included (multi-label: images per label)."""
        out = {}
        for split, samples in self.splits.items():
            per_label = Counter(lab for s in samples for lab in (s.label if isinstance(s.label, tuple) else [s.label]))
            out[split] = {name: per_label[i] for i, name in enumerate(self.class_names)}
        return out


def multi_hot(labels: list[tuple[int, ...]], num_classes: int) -> np.ndarray:
    """(N, num_classes) 0/1 matrix from each image's label ids."""
    y = np.zeros((len(labels), num_classes), dtype=np.int64)
    for i, labs in enumerate(labels):
        y[i, list(labs)] = 1
    return y
