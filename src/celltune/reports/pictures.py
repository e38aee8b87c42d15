"""How a model input looks to a person: one RGB picture from any number of channels, for covers and heatmaps."""

from __future__ import annotations

import numpy as np

# Channel colours of a composite, in order: the first three are the usual red, green, blue; a fourth channel is
# yellow, as in the Human Protein Atlas's endoplasmic-reticulum channel, then magenta and cyan.
PALETTE = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], dtype=np.float32)


def unnormalize(image: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """A normalised model input back to the 0..1 intensities it came from. (C, H, W) -> (C, H, W)."""
    return image * np.asarray(std, np.float32)[:, None, None] + np.asarray(mean, np.float32)[:, None, None]


def composite(image: np.ndarray) -> np.ndarray:
    """(C, H, W) intensities in 0..1 -> (H, W, 3) RGB in 0..1: one channel as grey, three as RGB, more as an
    additive blend of ``PALETTE`` colours (each channel its own colour, the sum clipped)."""
    image = np.clip(np.asarray(image, np.float32), 0, 1)
    channels = image.shape[0]
    if channels == 1:
        return np.repeat(image[0][..., None], 3, axis=2)
    if channels == 3:
        return image.transpose(1, 2, 0)
    colours = PALETTE[np.arange(channels) % len(PALETTE)]  # (C, 3)
    return np.clip(np.einsum("chw,ck->hwk", image, colours), 0, 1)
