"""Two `celltune cv` runs over the same folds (same data, --groups, --folds and --seed), compared cell by cell on their
out-of-fold predictions: each run's headline numbers with 95% intervals, B minus A on the same bootstrap resamples
(as `celltune compare` does for two runs on one split), and F1 per class.

    python benchmarks/cv_paired.py CV_DIR_A CV_DIR_B
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from celltune.data import csvfiles
from celltune.metrics.classification import classification_metrics
from celltune.metrics.stats import bootstrap_intervals, paired_differences


def read_oof(cv_dir: Path) -> dict[str, tuple[str, str, str]]:
    """{image path: (fold, true class, predicted class)} from a cv directory's oof_predictions.csv."""
    with csvfiles.open_csv(cv_dir / "oof_predictions.csv") as f:  # cells as celltune wrote them, before its guard
        _, rows = csvfiles.read_dicts(f)
    return {r["path"]: (r["fold"], r["true"], r["predicted"]) for r in rows}


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
    rows_a, rows_b = (classification_metrics(truth, pred, names).per_class for pred in (pred_a, pred_b))
    print(f"\n{'F1 per class':<24}{'A':>7}{'B':>7}{'B - A':>8}")
    for x, y in zip(rows_a, rows_b, strict=True):
        print(f"{x.name:<24}{100 * x.f1:>7.1f}{100 * y.f1:>7.1f}{100 * (y.f1 - x.f1):>+8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
