"""A finished run's test predictions scored as the published result it is compared with was: the paper's number, over
the paper's classes, from the run's predictions.csv, with celltune's metrics and bootstrap intervals.

    python benchmarks/published.py runs/suite30/mitocheck_hela16-defaults-20261207-095657 [RUN_DIR ...]

Only the metric and the classes follow the paper: the split stays the suite's (groups whole), which is where the
protocols still differ (see ../shared/data/README.md). A class the paper left out is left out of the truth (its test
images dropped) and of the answers (each image's most probable class among those the paper kept), as a model
trained without it would answer.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from celltune.config.recipes import load_config
from celltune.data import csvfiles
from celltune.metrics.classification import classification_metrics
from celltune.metrics.stats import bootstrap_intervals
from celltune.reports.run_files import read_json


@dataclass(frozen=True)
class Protocol:
    source: str
    metrics: tuple[str, ...]  # fields of ClassificationResult, the paper's first
    left_out: tuple[str, ...] = ()  # classes the paper did not classify


# By dataset folder (../shared/data/NAME). MitoCheck: WayScience/phenotypic_profiling @92e4025,
# utils/evaluate_utils.py model_F1_score (f1_score average="weighted": 0.8366 on its test set; macro 0.828 from its
# confusion matrices) and utils/split_utils.py get_features_data (Folded dropped); its test split is by cell
# (train_test_split stratified on class), so cells of one frame sit on both sides.
PROTOCOLS = {
    "mitocheck_hela16": Protocol("Tomkinson et al. 2024: weighted F1 0.837 (macro 0.828), 15 classes, by-cell split",
                                 ("weighted_f1", "macro_f1", "accuracy"), left_out=("Folded",)),
    "crchisto_nuclei4": Protocol("Sirinukunwattana et al. 2016: weighted F1 about 0.78, 2-fold CV over images",
                                 ("weighted_f1",)),
    "herlev_pap7_40px": Protocol("Lin et al. 2019: accuracy about 64.5%, patient-level 5-fold CV",
                                 ("accuracy",)),
    "hep2_icpr2014": Protocol("Gao et al. 2017: mean class accuracy 96.7%", ("mean_class_accuracy",)),
}


def read_predictions(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(class names, true class of each image, probabilities (N, C)) from a predictions.csv (path, true, predicted,
    confidence, p_CLASS...)."""
    with csvfiles.open_csv(path) as f:  # cells as celltune wrote them, before its spreadsheet guard
        header, rows = csvfiles.read_dicts(f)
    names = [k[2:] for k in header if k.startswith("p_")]
    return names, [r["true"] for r in rows], np.array([[float(r[f"p_{n}"]) for n in names] for r in rows])


def rescore(names: list[str], truth: list[str], probs: np.ndarray,
            protocol: Protocol) -> dict[str, tuple[float, list[float]]]:
    """{metric: (value, 95% interval)} over the classes the paper kept."""
    kept = [i for i, n in enumerate(names) if n not in protocol.left_out]
    index = {names[i]: j for j, i in enumerate(kept)}
    rows = [k for k, t in enumerate(truth) if t in index]
    y_true = np.array([index[truth[k]] for k in rows])
    sub = probs[np.ix_(rows, kept)]
    sub = sub / sub.sum(1, keepdims=True)  # (N kept images, C kept classes), each row a distribution again
    y_pred = sub.argmax(1)
    result = classification_metrics(y_true, y_pred, [names[i] for i in kept], sub)
    intervals = bootstrap_intervals(y_true, y_pred, num_classes=len(kept))
    return {m: (getattr(result, m), intervals.get(m, [float("nan")] * 2)) for m in protocol.metrics}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="finished runs of the suite's datasets")
    args = p.parse_args()
    for run in args.runs:
        dataset = Path(load_config(run / "config.yaml").data.root).name
        protocol = PROTOCOLS.get(dataset)
        if protocol is None or not (run / "predictions.csv").is_file():
            print(f"{run}: no published protocol for {dataset!r}, or no predictions.csv", file=sys.stderr)
            return 2
        scores = rescore(*read_predictions(run / "predictions.csv"), protocol)
        kept = f"without {', '.join(protocol.left_out)}" if protocol.left_out else "all classes"
        split = read_json(run / "metrics.json")["split"]  # test, or validation where there is none
        print(f"{run} ({dataset}, {split}, {kept}); published: {protocol.source}")
        for metric, (value, (lo, hi)) in scores.items():
            print(f"  {metric}: {100 * value:.2f} [{100 * lo:.2f}, {100 * hi:.2f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
