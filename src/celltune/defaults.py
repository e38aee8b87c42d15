"""Data-aware defaults: values for options the user left out, chosen from the data, each with the reason told."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

SIZE_STEP = 32  # the stride of the usual CNN's last stage: input sides that divide evenly keep the map whole
SMALLEST = 64  # below this the last stage of most CNNs is a 2x2 map or smaller


@dataclass(frozen=True)
class Chosen:
    value: int
    reason: str


def image_size_for(sides: Iterable[tuple[int, int]], native: int) -> Chosen:
    """The input size for images of (width, height) ``sides``: the median shorter side rounded up to a multiple of
    32, kept between 64 and the weights' ``native`` size. Upsampling a 50 px cell to 224 px adds no detail and costs
    about 13 times the compute of 64 px; downsampling a large tile below the native size loses what the weights
    were trained to see at that size only when the tiles are larger than it."""
    shorter = [min(w, h) for w, h in sides if w > 0 and h > 0]
    if not shorter:
        return Chosen(native, "the weights' native size: no image sizes known")
    median = statistics.median(shorter)
    rounded = math.ceil(median / SIZE_STEP) * SIZE_STEP
    if rounded < SMALLEST:
        return Chosen(SMALLEST, f"median shorter image side {median:g} px, raised to {SMALLEST} (smaller inputs "
                                "leave the network's last stage a pixel or two)")
    if rounded > native:
        return Chosen(max(native, SMALLEST), f"median shorter image side {median:g} px, above the weights' native "
                                             f"size {native}")
    return Chosen(rounded, f"median shorter image side {median:g} px, rounded up to a multiple of {SIZE_STEP}")
