"""Two `celltune cv` runs over the same folds (same data, --groups, --folds and --seed), compared cell by cell on their
out-of-fold predictions: each run's headline numbers with 95% intervals, B minus A on the same bootstrap resamples
(as `celltune compare` does for two runs on one split), and F1 per class.

    python benchmarks/cv_paired.py CV_DIR_A CV_DIR_B
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from celltune.metrics.stats import bootstrap_intervals, paired_differences


def read_oof(cv_dir: Path) -> dict[str, tuple[str, str, str]]:
    """{image path: (fold, true class, predicted class)} from a cv directory's oof_predictions.csv."""
    with (cv_dir / "oof_predictions.csv").open(newline="") as f:
        return {r["path"]: (r["fold"], r["true"], r["predicted"]) for r in csv.DictReader(f)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cv_dirs", nargs=2, type=Path, metavar="CV_DIR")
    args = p.parse_args()
    a, b = (read_oof(d) for d in args.cv_dirs)
    if a.keys() != b.keys() or any(a[k][0] != b[k][0] for k in a):
        print("the two runs' folds differ: run both with the same data, --groups, --folds and --seed",
              file=sys.stderr)
        return 2
    paths = sorted(a)
    names = sorted({a[k][1] for k in paths})
    index = {n: i for i, n in enumerate(names)}
    truth = np.array([index[a[k][1]] for k in paths])
    pred_a, pred_b = (np.array([index[run[k][2]] for k in paths]) for run in (a, b))
    print(f"{len(paths)} images out of fold, {len(names)} classes; A = {args.cv_dirs[0]}, B = {args.cv_dirs[1]}")
    for label, pred in (("A", pred_a), ("B", pred_b)):
        intervals = bootstrap_intervals(truth, pred, num_classes=len(names))
        print(label + ": " + ", ".join(f"{k} [{100 * lo:.2f}, {100 * hi:.2f}]" for k, (lo, hi) in intervals.items()))
    for k, (diff, (lo, hi)) in paired_differences(truth, pred_b, pred_a, num_classes=len(names)).items():
        print(f"B - A {k}: {100 * diff:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]")
    f1_a, f1_b = (f1_score(truth, pred, average=None, labels=range(len(names))) for pred in (pred_a, pred_b))
    print(f"\n{'F1 per class':<24}{'A':>7}{'B':>7}{'B - A':>8}")
    for name, x, y in zip(names, f1_a, f1_b, strict=True):
        print(f"{name:<24}{100 * x:>7.1f}{100 * y:>7.1f}{100 * (y - x):>+8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
