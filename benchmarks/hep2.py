"""Benchmark: fine-tune the offline pretrained model on the ICPR 2014 HEp-2 cell set and report on its test split.

    python benchmarks/hep2.py [--data ../shared/data/hep2_icpr2014] [--epochs 12] [--image-size 96]
    python benchmarks/hep2.py --recipe timm_modern    # a packaged recipe (or a YAML file), with the offline model

Trains on training/, selects the best epoch by validation/ mean class accuracy, reports on test/. Prints test accuracy,
ACA, wall time and training images/s; the README's HEp-2 table holds the results and targets.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from celltune.config import DEFAULT_MODEL, config_from_dict
from celltune.recipes import load_config
from celltune.train import fit

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "hep2_icpr2014"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--recipe", "--config", dest="recipe",
                   help="a packaged recipe or YAML file; --model, --image-size and --epochs override it")
    p.add_argument("--epochs", type=int, default=None, help="default 12, or the recipe's")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--out-dir", default="runs/benchmarks")
    p.add_argument("--max-steps-per-epoch", type=int, default=None)
    args = p.parse_args()
    if not Path(args.data).is_dir():
        print(f"no HEp-2 data at {args.data}; pass --data", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    common = {"data": args.data, "model": args.model, "image_size": args.image_size,
              "num_workers": args.num_workers, "accelerator": args.accelerator, "out_dir": args.out_dir,
              "max_steps_per_epoch": args.max_steps_per_epoch}
    if args.recipe:
        recipe = Path(args.recipe).stem
        config = load_config(args.recipe, common | ({"epochs": args.epochs} if args.epochs else {}))
    else:
        recipe = "foundation"
        config = config_from_dict({**common, "epochs": args.epochs or 12, "batch_size": args.batch_size,
                                   "optimizer": "adamw", "lr": args.lr, "weight_decay": 0.05, "scheduler": "cosine",
                                   "warmup_epochs": 1, "label_smoothing": 0.1})
    config = config.updated(name=f"hep2-{recipe}-{args.model}-{args.image_size}px")
    start = time.perf_counter()
    run_dir = fit(config)
    wall = time.perf_counter() - start
    m = json.loads((run_dir / "metrics.json").read_text())
    result = {
        "recipe": recipe, "model": args.model, "image_size": args.image_size, "epochs": m["epochs_run"],
        "best_epoch": m["best_epoch"], "tta": m["tta"],
        "test_accuracy": round(m["accuracy"], 4), "test_aca": round(m["mean_class_accuracy"], 4),
        "test_macro_f1": round(m["macro_f1"], 4), "val_aca": round(m["best_val"]["mean_class_accuracy"], 4),
        "wall_seconds": round(wall), "train_images_per_second": round(m["fit_images_per_second"], 1),
        "run_dir": str(run_dir),
    }
    (run_dir / "benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
