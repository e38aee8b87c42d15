"""Labels that look wrong, measured: flip a share of a dataset's labels at random (seeded), cross-validate, and count
the flipped images among the first of ``label_issues.csv`` (cleanlab's ranking of the out-of-fold probabilities).

    python benchmarks/trust.py --dataset mitocheck_hela16 --flip 0.05 --budget 10m

The flipped copy is a tree of symbolic links under OUT (same file names, so the dataset's groups stay whole), each
flipped image moved to another class drawn at random. Prints and writes OUT/trust-DATASET.json: precision and recall of
the flipped images among the top ``flip`` share of the ranking, and among the images confident learning flags.

    python benchmarks/trust.py --check calibration --dataset hep2_icpr2014 --run RUN_DIR [--seeds 20]

measures a trained run (say ``benchmarks/budget.py``'s defaults run) the way ``celltune train`` calibrates at its end:
the expected calibration error on test before and after a temperature fitted on validation, the coverage of 90% and
95% prediction sets on test calibrated on validation, and the same over ``--seeds`` random halves of validation and
test pooled (groups whole): calibrated on one half, each time with its own temperature, measured on the other. Sets
are measured as celltune gives them (never empty) and as the textbook procedure does (empty sets allowed), whose
coverage is exact whatever the accuracy.
Writes OUT/calibration-DATASET.json.
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

from celltune.config import DataConfig, config_from_dict
from celltune.config.recipes import load_config
from celltune.data.discovery import discover_as_trained, discover_pool
from celltune.evaluation.evaluate import align_labels, calibrated, raw_probs
from celltune.metrics import conformal
from celltune.metrics.calibration import calibration_error, uncalibrated, with_temperature
from celltune.models.checkpoint import load_checkpoint
from celltune.training.crossval import run_cv


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


def _sets_on(card, cal, cal_raw, test, test_raw, class_names) -> tuple[dict, list[dict]]:
    """Calibrate on ``cal`` (samples and raw probabilities), measure on ``test``: (ECE before/after, the temperature
    and the accuracy, the set summaries at 90% and 95%: celltune's, then with empty sets allowed)."""
    card = calibrated(uncalibrated(card), cal, cal_raw)
    truth = np.array([s.label for s in test])
    probs = with_temperature(test_raw, card.temperature, multilabel=False)
    ece = {"temperature": card.temperature, "ece_before": calibration_error(truth, test_raw),
           "ece_after": calibration_error(truth, probs), "accuracy": float((probs.argmax(1) == truth).mean())}
    names = [s.path for s in test]
    cal_probs = with_temperature(cal_raw, card.temperature, multilabel=False)
    textbook = conformal.scores(cal_probs, np.array([s.label for s in cal]), conformal.draw([s.path for s in cal]),
                                allow_empty=True)
    return ece, [*conformal.measure(probs, truth, names, card.conformal_scores, class_names),
                 *conformal.measure(probs, truth, names, sorted(textbook), class_names, allow_empty=True)]


def calibration_check(dataset, run: Path, *, seeds: int, out: Path) -> dict:
    model, card, saved = load_checkpoint(run)
    found = align_labels(discover_as_trained(dataset.path, saved, defaults=DataConfig()), card.class_names,
                         dataset.path)
    tta = load_config(run / "config.yaml").eval.tta
    val, test = found.splits["val"], found.splits["test"]
    val_raw, test_raw = (raw_probs(model, card, s, batch_size=128, tta=tta) for s in (val, test))
    ece, own = _sets_on(card, val, val_raw, test, test_raw, card.class_names)
    pool, pool_raw = val + test, np.concatenate([val_raw, test_raw])
    keys = [s.group or str(s.path) for s in pool]  # groups whole, where the dataset has them
    groups = sorted(set(keys))
    resplits = []
    for seed in range(seeds):  # random halves of the pooled images
        order = np.random.default_rng(seed).permutation(len(groups))
        first = {groups[i] for i in order[: len(groups) // 2]}
        half = np.array([k in first for k in keys])
        cal, rest = np.flatnonzero(half), np.flatnonzero(~half)
        e, sets = _sets_on(card, [pool[i] for i in cal], pool_raw[cal], [pool[i] for i in rest], pool_raw[rest],
                           card.class_names)
        resplits.append({**e, "sets": sets})
    summary = {"date": time.strftime("%Y-%m-%d %H:%M"), "dataset": dataset.name, "run": str(run), "tta": tta,
               "val_images": len(val), "test_images": len(test), "groups": len(groups), **ece, "sets": own,
               "seeds": seeds, "resplit_ece_before": float(np.mean([r["ece_before"] for r in resplits])),
               "resplit_ece_after": float(np.mean([r["ece_after"] for r in resplits]))}
    kinds = [(c, "") for c in conformal.COVERAGES] + [(c, "_empty_allowed") for c in conformal.COVERAGES]
    for i, (target, kind) in enumerate(kinds):
        covered = [r["sets"][i]["covered"] for r in resplits]
        summary[f"resplit_covered_{target}{kind}"] = [float(np.mean(covered)), float(np.min(covered)),
                                                      float(np.max(covered))]
        summary[f"resplit_mean_size_{target}{kind}"] = float(np.mean([r["sets"][i]["mean_size"]
                                                                      for r in resplits]))
    (out / f"calibration-{dataset.name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", choices=["labels", "calibration"], default="labels")
    p.add_argument("--run", help="calibration: the trained run directory to measure")
    p.add_argument("--seeds", type=int, default=20, help="calibration: random halves of validation and test")
    p.add_argument("--dataset", choices=list(DATASETS), default="mitocheck_hela16")
    p.add_argument("--flip", type=float, default=0.05, help="share of the labels flipped")
    p.add_argument("--budget", default="10m", help="the whole cross-validation's time budget")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=1, help="cross-validations on new folds, probabilities averaged")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default="runs/trust")
    args = p.parse_args()
    dataset = DATASETS[args.dataset]
    if not dataset.path.is_dir():
        print(f"no data at {dataset.path}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    out = Path(args.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.check == "calibration":
        if not args.run:
            p.error("--check calibration measures a trained run: give --run RUN_DIR")
        print(json.dumps(calibration_check(dataset, Path(args.run), seeds=args.seeds, out=out), indent=2))
        return 0
    stamp = time.strftime("%Y%m%d-%H%M%S")
    copy = out / f"{dataset.name}-flipped-{stamp}"
    flipped = flipped_copy(dataset.path, copy, share=args.flip, seed=args.seed)
    config = config_from_dict({"data": str(copy), "groups": dataset.groups, "seed": args.seed,
                               "accept": list(dataset.accept) or None, "time_budget": args.budget,
                               "out_dir": str(out), "name": f"{dataset.name}-cv-{stamp}"})
    start = time.perf_counter()
    parent = run_cv(config, folds=args.folds, repeats=args.repeats)
    with (parent / "label_issues.csv").open() as f:
        ranked = list(csv.DictReader(f))
    top = ranked[: round(args.flip * len(ranked))]
    hits = sum(r["path"] in flipped for r in top)
    flagged = [r for r in ranked if r["flagged"] == "1"]
    flagged_hits = sum(r["path"] in flipped for r in flagged)
    summary = {"date": time.strftime("%Y-%m-%d %H:%M"), "dataset": dataset.name, "images": len(ranked),
               "flipped": len(flipped), "budget": args.budget, "folds": args.folds, "repeats": args.repeats,
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
