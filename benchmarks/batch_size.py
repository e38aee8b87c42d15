"""Training images/s against batch size on this machine: where a CPU's throughput peaks at each image size, against
the batch celltune picks on a CPU (``celltune.training.defaults.batch_size_for``: 64 unless memory or the data ask for
less).

    python benchmarks/batch_size.py [--model mobilenet_v2] [--sizes 64 96 128 224] [--batches 8 16 32 64] [--repeats 3]

Model-only (as in throughput.py): forward, loss, backward and AdamW step on random batches already in memory, in
celltune's memory format (channels_last), the model with ImageNet's shape and a 6-class head. Every (size, batch)
takes its turn in each of ``--repeats`` rounds, so the machine's drift between minutes falls on all alike; each size's
row gives the median images/s of each batch and its ratio to that size's fastest.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from typing import TypeVar

import torch
from throughput import plain_train

from celltune.models.factory import create_model

K = TypeVar("K")

IMAGES = 384  # timed images per measurement: enough steps at every batch size, few enough for 224 px


def measure(model: torch.nn.Module, *, size: int, batch: int) -> float:
    steps = 1 + max(3, IMAGES // batch)  # the first is warm-up
    x = torch.randn(batch, 3, size, size).to(memory_format=torch.channels_last)
    y = torch.randint(0, 6, (batch,))
    return plain_train(model, ((x, y) for _ in range(steps)), warmup=1)


def median_rates(keys: list[K], measure_one: Callable[[K], float], *, repeats: int) -> dict[K, float]:
    """Median of ``repeats`` measurements per key, every key taking its turn in each round, so that the machine's
    drift between minutes falls on all alike."""
    rates: dict[K, list[float]] = {key: [] for key in keys}
    for _ in range(repeats):
        for key in keys:
            rates[key].append(measure_one(key))
    return {key: statistics.median(r) for key, r in rates.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mobilenet_v2")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128, 224])
    p.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.manual_seed(0)
    model, _ = create_model(args.model, num_classes=6, pretrained=False)
    model = model.to(memory_format=torch.channels_last)
    rates = median_rates([(s, b) for s in args.sizes for b in args.batches],
                         lambda key: measure(model, size=key[0], batch=key[1]), repeats=args.repeats)
    table = {}
    for size in args.sizes:
        medians = {b: rates[size, b] for b in args.batches}
        best = max(medians.values())
        table[size] = {b: {"images_per_second": round(r, 1), "of_fastest": round(r / best, 2)}
                       for b, r in medians.items()}
        print(f"{size:4d} px: " + "  ".join(f"b{b} {r:6.1f} img/s ({r / best:.2f})" for b, r in medians.items()))
    print(json.dumps({"model": args.model, "threads": torch.get_num_threads(), "table": table}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
