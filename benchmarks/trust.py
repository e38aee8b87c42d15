"""Labels that look wrong, measured: flip a share of a dataset's labels at random (seeded), cross-validate, and count
the flipped images among the first of ``label_issues.csv`` (cleanlab's ranking of the out-of-fold probabilities).

    python benchmarks/trust.py --dataset mitocheck_hela16 --flip 0.05 --budget 10m

The flipped copy is a tree of symbolic links under OUT (same file names, so the dataset's groups stay whole), each
flipped image moved to another class drawn at random. Prints and writes OUT/trust-DATASET.json: precision and recall of
the flipped images among the top ``flip`` share of the ranking, and among the images confident learning flags.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
from suite import DATASETS

from celltune.config import config_from_dict
from celltune.crossval import run_cv
from celltune.data import discover_pool


def flipped_copy(source: Path, target: Path, *, share: float, seed: int) -> set[str]:
    """``target``: ``source``'s images as class folders of links, ``share`` of them under another class; the paths
    (under ``target``) of the flipped ones."""
    found = discover_pool(source)
    rng = np.random.default_rng(seed)
    flip = set(rng.choice(len(found.samples), size=round(share * len(found.samples)), replace=False).tolist())
    flipped = set()
    for i, s in enumerate(found.samples):
        label = int(s.label)  # type: ignore[arg-type]
        if i in flip:
            label = int(rng.choice([c for c in range(len(found.class_names)) if c != label]))
        link = target / found.class_names[label] / s.path.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(s.path.resolve())
        if i in flip:
            flipped.add(str(link))
    return flipped


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=list(DATASETS), default="mitocheck_hela16")
    p.add_argument("--flip", type=float, default=0.05, help="share of the labels flipped")
    p.add_argument("--budget", default="10m", help="the whole cross-validation's time budget")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default="runs/trust")
    args = p.parse_args()
    dataset = DATASETS[args.dataset]
    if not dataset.path.is_dir():
        print(f"no data at {dataset.path}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    out = Path(args.out_dir).resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    copy = out / f"{dataset.name}-flipped-{stamp}"
    flipped = flipped_copy(dataset.path, copy, share=args.flip, seed=args.seed)
    config = config_from_dict({"data": str(copy), "groups": dataset.groups, "seed": args.seed,
                               "accept": list(dataset.accept) or None, "time_budget": args.budget,
                               "out_dir": str(out), "name": f"{dataset.name}-cv-{stamp}"})
    start = time.perf_counter()
    parent = run_cv(config, folds=args.folds)
    with (parent / "label_issues.csv").open() as f:
        ranked = list(csv.DictReader(f))
    top = ranked[: round(args.flip * len(ranked))]
    hits = sum(r["path"] in flipped for r in top)
    flagged = [r for r in ranked if r["flagged"] == "1"]
    flagged_hits = sum(r["path"] in flipped for r in flagged)
    summary = {"date": time.strftime("%Y-%m-%d %H:%M"), "dataset": dataset.name, "images": len(ranked),
               "flipped": len(flipped), "budget": args.budget, "folds": args.folds,
               "top": len(top), "top_precision": hits / len(top), "top_recall": hits / len(flipped),
               "flagged": len(flagged), "flagged_precision": flagged_hits / len(flagged) if flagged else None,
               "flagged_recall": flagged_hits / len(flipped),
               "pooled_accuracy": json.loads((parent / "cv.json").read_text())["pooled"]["accuracy"],
               "wall_seconds": round(time.perf_counter() - start), "cv_dir": str(parent)}
    (out / f"trust-{dataset.name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
