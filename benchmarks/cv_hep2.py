"""Benchmark: 5-fold cross-validation of the offline pretrained model on a class-balanced subset of ICPR 2014 HEp-2.

    python benchmarks/cv_hep2.py [--per-class 300] [--folds 5] [--epochs 4] [--image-size 96]

Links (hard links, else copies) the first ``--per-class`` cells of each class of ``training/`` into a class-folder
tree and runs ``celltune cv`` on it with the foundation recipe of benchmarks/hep2.py. Prints cv.json's per-fold
numbers, mean +- std, the pooled out-of-fold result and the wall time. The README's cross-validation table holds the
results.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from celltune.cli import main as celltune
from celltune.data.discovery import discover

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "hep2_icpr2014"


def subset(data: Path, out: Path, per_class: int) -> Path:
    found = discover(data)
    taken: dict[int, int] = {}
    for s in found.splits["train"]:
        assert isinstance(s.label, int)
        if taken.get(s.label, 0) >= per_class:
            continue
        taken[s.label] = taken.get(s.label, 0) + 1
        target = out / found.class_names[s.label] / s.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(s.path, target)
        except OSError:
            shutil.copyfile(s.path, target)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--per-class", type=int, default=300)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--out-dir", default="runs/benchmarks")
    args = p.parse_args()
    if not Path(args.data).is_dir():
        print(f"no HEp-2 data at {args.data}; pass --data", file=sys.stderr)
        return 2
    tree = subset(Path(args.data), Path(args.out_dir) / f"hep2-subset-{args.per_class}", args.per_class)
    name = f"cv-hep2-{args.per_class}x6-{args.folds}folds-{args.epochs}ep-{args.image_size}px"
    start = time.perf_counter()
    code = celltune(["cv", "--data", str(tree), "--folds", str(args.folds), "--epochs", str(args.epochs),
                     "--image-size", str(args.image_size), "--batch-size", "64", "--lr", "2e-3",
                     "--weight-decay", "0.05", "--warmup-epochs", "1", "--label-smoothing", "0.1",
                     "--out-dir", args.out_dir, "--name", name])
    wall = time.perf_counter() - start
    if code:
        return code
    s = json.loads((Path(args.out_dir) / name / "cv.json").read_text())
    print(json.dumps({"images": s["images"], "folds": s["folds"], "per_fold": s["per_fold"], "mean": s["mean"],
                      "std": s["std"], "pooled": {m: s["pooled"][m] for m in s["headline"]},
                      "pooled_ci": s["pooled"]["ci"], "wall_seconds": round(wall)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
