"""Training order and randomness that a resumed run repeats exactly.

Every random draw of training is a function of counters, not of a generator's running state: the order of an epoch
comes from (seed, epoch); an image's own augmentation (per-image transforms, RandAugment) from (seed, rank, epoch,
position); a batch's augmentation, Mixup and dropout from (seed, rank, epoch, position of its first image). So a run
resumed from any checkpoint, at the end of an epoch or in its middle, draws what the uninterrupted run drew, whatever
the DataLoader workers, the prefetching or the process did before.

The training loader is resumable: its state is the number of images of the epoch already trained on (the data module
counts them as batches reach the device, so a batch fetched ahead but not trained is fetched again), and a loaded
state makes the sampler start the epoch there.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

TRAIN_ORDER, IMAGE, BATCH, STEP = 0, 1, 2, 3  # what a seed is for: never two uses of one seed


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, purpose, rank, epoch, position ...), well mixed (numpy's SeedSequence)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def seed_everything_from(seed: int) -> None:
    """The global generators (Python, NumPy, torch on every device) seeded for one step."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_states() -> dict[str, Any]:
    """The global generators' states, as plain data that loads with ``torch.load(weights_only=True)``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    return {"python": random.getstate(),
            "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, gauss],
            "torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def gather_objects(value: Any) -> list[Any]:
    """``value`` of every process, by rank (itself alone when not distributed); every process must call it."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [value]
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, value)
    return out


@dataclass
class Progress:
    """Images of ``epoch`` this process has trained on (shared by the data module and the training loader)."""

    epoch: int = 0
    images: int = 0


class EpochSampler(torch.utils.data.Sampler):
    """Yields (epoch, position, index): this process's share of the epoch's order (shuffled, or drawn by ``weights``
    with replacement, from (seed, epoch); padded to equal shares like DistributedSampler), from ``start`` on."""

    def __init__(self, size: int, *, seed: int, weights: torch.Tensor | None = None, replicas: int = 1,
                 rank: int = 0) -> None:
        self.size, self.seed, self.weights, self.replicas, self.rank = size, seed, weights, replicas, rank
        self.epoch = 0
        self._resume: tuple[int, int] | None = None  # (epoch, images to skip)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, images: int) -> None:
        self._resume = (epoch, images)

    def _share(self) -> list[int]:
        g = torch.Generator().manual_seed(derive_seed(self.seed, TRAIN_ORDER, self.epoch))
        order = (torch.multinomial(self.weights, self.size, replacement=True, generator=g)
                 if self.weights is not None else torch.randperm(self.size, generator=g)).tolist()
        per_rank = -(-len(order) // self.replicas)
        order += order[: per_rank * self.replicas - len(order)]  # as DistributedSampler pads
        return order[self.rank :: self.replicas]

    def __len__(self) -> int:
        return -(-self.size // self.replicas)

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        start = self._resume[1] if self._resume and self._resume[0] == self.epoch else 0
        self._resume = None
        share = self._share()
        for position in range(start, len(share)):
            yield self.epoch, position, share[position]


class Keyed(torch.utils.data.Dataset):
    """(image, target, key) for (epoch, position, index) items; key = (epoch, position). A random per-image
    transform of the dataset draws from a generator seeded by (seed, rank, epoch, position)."""

    def __init__(self, dataset: torch.utils.data.Dataset, *, seed: int, rank: int = 0, random_items: bool) -> None:
        self.dataset, self.seed, self.rank, self.random_items = dataset, seed, rank, random_items

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int, int]):
        epoch, position, index = item
        if not self.random_items:
            image, target = self.dataset[index]
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(self.seed, IMAGE, self.rank, epoch, position))
                image, target = self.dataset[index]
        return image, target, torch.tensor([epoch, position])


class ResumableLoader(torch.utils.data.DataLoader):
    """The training loader: its state is ``progress`` (images trained on this epoch), and loading one makes the
    sampler start there. Lightning saves and loads it with every checkpoint."""

    def __init__(self, *args: Any, progress: Progress, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.progress = progress

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.progress.epoch, "images": self.progress.images}

    def load_state_dict(self, state: dict[str, int]) -> None:
        assert isinstance(self.sampler, EpochSampler)
        self.progress.epoch, self.progress.images = state["epoch"], state["images"]
        self.sampler.resume(state["epoch"], state["images"])
