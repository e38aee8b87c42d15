"""Scored images that training has seen: a validation or test image whose exact copy (the same decoded pixels, by
the SHA-1 the data checks take of every file) is among the training images.

A published split can leak (HEp-2's holds 104 groups of identical cells across its splits); a run then reports its
headline numbers twice: on every scored image, as the benchmark defines them, and on the scored images without a
twin in training, which is what a new image would meet. Near-duplicates (the same cell resized or captured twice)
are found by the full ``celltune check`` only, too slow for every run; they are not left out here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from celltune.data.image_facts import ImageFacts
from celltune.data.images import ChannelFiles
from celltune.data.samples import LabelledSplits, Sample


def _key(sample: Sample, facts: Mapping[Path, ImageFacts], files: ChannelFiles) -> tuple[str, ...] | None:
    """The pixels' hashes of a sample's file(s); None when one is unread or unreadable."""
    hashes = []
    for path in files.of(sample.path) or [sample.path]:
        fact = facts.get(path)
        if fact is None or fact.error is not None or not fact.sha1:
            return None
        hashes.append(fact.sha1)
    return tuple(hashes)


def twins_in_training(found: LabelledSplits, facts: Mapping[Path, ImageFacts]) -> dict[str, list[bool]]:
    """{scored split: for each of its images, whether training holds an image of the same pixels}."""
    files = ChannelFiles()
    seen = {k for s in found.splits.get("train", []) if (k := _key(s, facts, files)) is not None}
    return {split: [(k := _key(s, facts, files)) is not None and k in seen for s in samples]
            for split, samples in found.splits.items() if split != "train"}


def read_twins(found: LabelledSplits, split: str) -> list[bool]:
    """For each image of ``split``: whether the training split holds an image of the same pixels, reading both
    splits' files once (worker processes). All False when there is no training split to compare with."""
    from celltune.audit.check import read_all

    if split == "train" or not found.splits.get("train"):
        return [False] * len(found.splits[split])
    files = ChannelFiles()
    pair = LabelledSplits(found.class_names, {"train": found.splits["train"], split: found.splits[split]})
    facts = read_all([p for s in pair.samples for p in files.of(s.path) or [s.path]], phash=False)
    return twins_in_training(pair, facts)[split]


def twins_in_folds(plan: list[dict[str, list[str]]], found: LabelledSplits,
                   facts: Mapping[Path, ImageFacts]) -> dict[str, bool]:
    """{held-out image's path: whether its fold's training part holds an image of the same pixels} for a
    cross-validation plan (each fold's ``train``, ``val`` and ``test`` paths)."""
    by_path = {str(s.path): s for s in found.samples}
    out: dict[str, bool] = {}
    for fold in plan:
        parts = {k: [by_path[p] for p in fold[k] if p in by_path] for k in ("train", "test")}  # data since changed
        twinned = twins_in_training(LabelledSplits(found.class_names, parts), facts)["test"]
        out.update(zip((str(s.path) for s in parts["test"]), twinned, strict=True))
    return out


def without_twins(twinned: list[bool], scored: Callable[[np.ndarray], Any]) -> dict[str, Any] | None:
    """The headline numbers (and their intervals, where ``scored`` gives them) on the images without a twin in
    training: ``scored(indices)`` scores those images of the split. None when no image has a twin."""
    mask = np.asarray(twinned, dtype=bool)
    if not mask.any():
        return None
    kept = np.flatnonzero(~mask)
    out: dict[str, Any] = {"images": int(kept.size), "left_out": int(mask.sum())}
    if kept.size:
        result = scored(kept)
        out.update(result.headline())
        if result.ci:
            out["ci"] = result.ci
    return out
