"""Data-aware defaults: values for options the user left out, chosen from the data, each with the reason told."""

from __future__ import annotations

import logging
import math
import os
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from celltune.audit.findings import Audit
    from celltune.config import TrainConfig
    from celltune.data.samples import LabelledSplits

log = logging.getLogger(__name__)

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


# Activation memory of a mid-sized CNN in fp32 training, per input pixel of one image (about 150 MB for a 224 px
# image): an upper estimate for mobilenet/efficientnet-sized models, so the batch also fits the larger ones.
TRAINING_BYTES_PER_PIXEL = 3_000
MEMORY_SHARE = 4  # a batch's activations take at most a quarter of the device's memory
LARGEST = {"cpu": 64, "gpu": 256}
SMALLEST_BATCH = 8
STEPS_PER_EPOCH = 20  # at least this many optimizer steps per epoch on small datasets


def batch_size_for(*, image_size: int, memory_bytes: int, accelerator: str, train_images: int) -> Chosen:
    """The training batch: a power of two, as large as a quarter of the device's memory holds at ``image_size``, at
    most 64 on a CPU (where throughput stops growing well before and smaller batches give more optimizer steps per
    epoch) and 256 on a GPU, and small enough for 20 steps per epoch; never below 8."""
    largest = LARGEST["gpu" if accelerator in ("gpu", "cuda") else "cpu"]
    fits = memory_bytes // MEMORY_SHARE // (TRAINING_BYTES_PER_PIXEL * image_size**2)
    steps = train_images // STEPS_PER_EPOCH
    limit = min(largest, fits, steps)
    value = max(SMALLEST_BATCH, 2 ** int(math.log2(limit)) if limit >= 1 else 1)
    bound = min(("device", largest), ("memory", fits), ("steps", steps), key=lambda item: item[1])[0]
    reason = {"device": f"the largest batch worth its memory on a {'GPU' if largest == LARGEST['gpu'] else 'CPU'}",
              "memory": f"what a quarter of the {memory_bytes / 2**30:.0f} GiB of device memory holds at "
                        f"{image_size} px",
              "steps": f"{STEPS_PER_EPOCH} optimizer steps per epoch over {train_images} training images"}[bound]
    if value == SMALLEST_BATCH and limit < SMALLEST_BATCH:
        reason += f", raised to {SMALLEST_BATCH}"
    return Chosen(value, reason)


def batch_at_size(image_size: int, *, accelerator: str, train_images: int) -> int:
    """The batch ``batch_size_for`` chooses at ``image_size`` on this device: for a time budget's plan that grows the
    image after the batch was chosen at the data's size."""
    return batch_size_for(image_size=image_size, memory_bytes=device_memory(accelerator), accelerator=accelerator,
                          train_images=train_images).value


def device_memory(accelerator: str) -> int:
    """Bytes of memory of the device that trains: the first GPU's, or the machine's RAM."""
    if accelerator in ("gpu", "cuda"):
        import torch  # only here: this module stays importable without torch

        return int(torch.cuda.get_device_properties(0).total_memory)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def with_data_defaults(config: TrainConfig, found: LabelledSplits, checks: Audit, *, native_size: int,
                       accelerator: str) -> TrainConfig:
    """Image size and batch size where the config leaves them out: chosen from the data and the device, and said
    why (celltune.training.defaults)."""
    if config.data.image_size is None:
        chosen = image_size_for(((f.width, f.height) for f in checks.facts.values() if f.error is None), native_size)
        log.info("image size %d: %s (--image-size to choose another)", chosen.value, chosen.reason)
        config = config.updated(image_size=chosen.value)
    if config.optim.batch_size is None:
        assert config.data.image_size is not None
        chosen = batch_size_for(image_size=config.data.image_size, memory_bytes=device_memory(accelerator),
                                accelerator=accelerator, train_images=len(found.splits["train"]))
        log.info("batch size %d: %s (--batch-size to choose another)", chosen.value, chosen.reason)
        config = config.updated(batch_size=chosen.value)
    return config
