"""Training images/s with the early layers frozen (``--freeze-stride``) against none, per model and image size, on
this machine.

    python benchmarks/freeze_speed.py [--models mobilenet_v2 tf_efficientnet_lite0] [--sizes 96 128] \\
        [--strides 0 4 8] [--batch 64] [--repeats 2]

Model-only (as batch_size.py): forward, loss, backward and AdamW step on random batches in memory, channels_last, the
model with ImageNet's shape and a 6-class head. Every (model, size, stride) takes its turn in each round; each row gives
the median images/s of each stride and its ratio to the unfrozen model's, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from batch_size import measure, median_rates

from celltune.models.factory import create_model


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["mobilenet_v2", "tf_efficientnet_lite0"])
    p.add_argument("--sizes", type=int, nargs="+", default=[96, 128])
    p.add_argument("--strides", type=int, nargs="+", default=[0, 4, 8], help="0: nothing frozen, the reference")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    strides = sorted({0, *args.strides})
    models = {}
    for name in args.models:
        for stride in strides:
            torch.manual_seed(0)
            model, _ = create_model(name, num_classes=6, pretrained=False, freeze_stride=stride)
            models[name, stride] = model.to(memory_format=torch.channels_last)
    rates = median_rates([(name, size, stride) for name in args.models for size in args.sizes for stride in strides],
                         lambda key: measure(models[key[0], key[2]], size=key[1], batch=args.batch),
                         repeats=args.repeats)
    table: dict[str, dict[int, dict[int, dict[str, float]]]] = {}
    for name in args.models:
        for size in args.sizes:
            medians = {s: rates[name, size, s] for s in strides}
            row = {s: {"images_per_second": round(r, 1), "of_unfrozen": round(r / medians[0], 2)}
                   for s, r in medians.items()}
            table.setdefault(name, {})[size] = row
            print(f"{name} {size:4d} px: " + "  ".join(
                f"stride {s}: {r:6.1f} img/s ({r / medians[0]:.2f})" for s, r in medians.items()))
    print(json.dumps({"batch": args.batch, "threads": torch.get_num_threads(), "table": table}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
