"""Temperature scaling (Guo et al. 2017): one temperature (one per label for multi-label) fitted on validation after
training, so that a probability of 0.9 is right about nine times in ten.

It works on the probabilities celltune computes (softmax, or per-label sigmoid, averaged over the test-time views),
not on the network's logits: the log of softmax probabilities are the logits up to a constant per image, which
softmax ignores, and the log-odds of a sigmoid probability are its logit. So a temperature applies the same way to a
checkpoint, an ONNX export or a probabilities CSV, and the model itself is never changed. A temperature above 1
softens over-confident probabilities; the top class (and so every single-label answer) stays the same.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import minimize_scalar

if TYPE_CHECKING:
    from celltune.models.checkpoint import ModelCard

log = logging.getLogger(__name__)

# Probabilities below this are taken as this: float32 softmax gives exact zeros for logits ~100 below the top one.
_TINY = 1e-45
_LOG_RANGE = (np.log(0.05), np.log(20.0))  # temperatures searched; beyond them the fit says more of the data
MIN_IMAGES = 20  # fewer validation images than this fit a temperature to noise: none is fitted
BINS = 15  # confidence bins of the calibration error and the reliability diagram (Guo et al.'s choice)


def reliability(truth: np.ndarray, probs: np.ndarray) -> list[list[float]]:
    """The reliability diagram's data: for each of ``BINS`` equal-width bins of top-class confidence, (lower edge,
    mean confidence, accuracy, images) of the (N, C) ``probs`` whose top class falls in it; empty bins left out.
    A bin holds confidences in (lower, upper], as torchmetrics' ``multiclass_calibration_error`` counts them."""
    probs = np.asarray(probs, dtype=np.float64)
    if len(probs) == 0:
        return []
    confidence = probs.max(axis=1)
    right = probs.argmax(axis=1) == np.asarray(truth)
    which = np.clip(np.ceil(confidence * BINS).astype(int) - 1, 0, BINS - 1)
    return [[b / BINS, float(confidence[which == b].mean()), float(right[which == b].mean()),
             int((which == b).sum())] for b in range(BINS) if (which == b).any()]


def calibration_error(truth: np.ndarray, probs: np.ndarray, *, multilabel: bool = False) -> float | None:
    """Expected calibration error (ECE): the images' share-weighted gap between confidence and accuracy over the
    ``reliability`` bins of the top class; for multi-label, the mean over labels of the same for each label's
    sigmoid probability (labels with only one kind of answer left out). None without images."""
    if len(probs) == 0:
        return None
    if not multilabel:
        bins = reliability(truth, probs)
        return float(sum(n * abs(conf - acc) for _, conf, acc, n in bins) / len(probs))
    truth = np.asarray(truth)
    gaps = [calibration_error(truth[:, c], np.stack([1 - probs[:, c], probs[:, c]], axis=1))
            for c in range(probs.shape[1]) if 0 < truth[:, c].sum() < len(truth)]
    defined = [g for g in gaps if g is not None]
    return float(np.mean(defined)) if defined else None


def logits_of(probs: np.ndarray, *, multilabel: bool) -> np.ndarray:
    """(N, C) logits, up to a constant per image (single-label), of (N, C) probabilities; float64."""
    p = np.clip(np.asarray(probs, dtype=np.float64), _TINY, 1.0)
    if multilabel:
        p = np.minimum(p, 1.0 - 1e-7)  # a float32 sigmoid rounds to 1 from a logit of about 17
        return np.log(p) - np.log1p(-p)
    return np.log(p)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def with_temperature(probs: np.ndarray, temperature: list[float] | None, *, multilabel: bool) -> np.ndarray:
    """(N, C) ``probs`` rescaled by ``temperature`` (one value, or one per label); unchanged when it is None."""
    if temperature is None or len(probs) == 0:
        return probs
    z = logits_of(probs, multilabel=multilabel) / np.asarray(temperature, dtype=np.float64)
    out = 1.0 / (1.0 + np.exp(-z)) if multilabel else _softmax(z)
    return out.astype(np.float32)


def _nll(log_t: float, z: np.ndarray, truth: np.ndarray) -> float:
    """Mean negative log-likelihood of class indices (N,) ``truth`` under softmax(z / T)."""
    s = z / np.exp(log_t)
    s = s - s.max(axis=1, keepdims=True)
    log_p = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(truth)), truth].mean())


def _bce(log_t: float, z: np.ndarray, truth: np.ndarray) -> float:
    """Mean binary cross-entropy of 0/1 (N,) ``truth`` under sigmoid(z / T)."""
    s = z / np.exp(log_t)
    return float(np.mean(np.logaddexp(0.0, s) - truth * s))


def _fit(loss, z: np.ndarray, truth: np.ndarray) -> float:
    found = minimize_scalar(loss, bounds=_LOG_RANGE, args=(z, truth), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(found.x))


def fit_temperature(probs: np.ndarray, truth: np.ndarray, *, multilabel: bool) -> list[float] | None:
    """The temperature(s) that minimise the negative log-likelihood of ``truth`` (class indices (N,), or (N, C) 0/1
    for multi-label) under the rescaled ``probs``: ``[T]``, or one per label; None with fewer than ``MIN_IMAGES``
    images (or, multi-label, a label's temperature 1.0 where validation has only one kind of answer for it)."""
    if len(probs) < MIN_IMAGES:
        log.info("no temperature fitted: %d validation image(s), fewer than %d", len(probs), MIN_IMAGES)
        return None
    z = logits_of(probs, multilabel=multilabel)
    if not multilabel:
        return [round(_fit(_nll, z, np.asarray(truth, dtype=np.int64)), 4)]
    truth = np.asarray(truth, dtype=np.float64)
    return [round(_fit(_bce, z[:, c], truth[:, c]), 4) if 0 < truth[:, c].sum() < len(truth) else 1.0
            for c in range(z.shape[1])]


def uncalibrated(card: ModelCard) -> ModelCard:
    """``card`` giving raw probabilities (``--calibrate none``): no temperature, and so no prediction sets either,
    whose scores were computed with it."""
    return replace(card, temperature=None, conformal_scores=None) if card.temperature else card
