"""Benchmark: folder prediction through onnxruntime (an exported .onnx) against PyTorch (the run), same images.

    python benchmarks/onnx_predict.py RUN [--folder DIR] [--rounds 3] [--batch-size 64]

Exports RUN's best checkpoint to ONNX (checked against PyTorch as ``celltune export`` does), then predicts every
image of ``--folder`` (default: the HEp-2 test split) into a CSV with each, taking turns for ``--rounds`` rounds so
that drifts in this machine's speed fall on both alike. Prints images/s of each round, the median of the per-round
ratios, and the largest probability difference between the two CSVs. The README holds the results.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

from celltune.export.formats import export_run
from celltune.predict.predictor import Predictor, inputs_under
from celltune.predict.to_csv import predict_to_csv

DEFAULT_FOLDER = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "hep2_icpr2014" / "test"


def timed(model: Path, folder: Path, out: Path, batch_size: int) -> float:
    predictor = Predictor(model)
    start = time.perf_counter()
    n = predict_to_csv(predictor, inputs_under(folder), out, batch_size=batch_size).written
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        check = export_run(args.run, format="onnx", out=out / "model.onnx")
        print(f"export: max abs logit difference {check.max_abs_diff:.2e} on {check.images} {check.source}")
        ratios = []
        for r in range(args.rounds):
            torch_rate = timed(args.run, args.folder, out / "torch.csv", args.batch_size)
            onnx_rate = timed(check.path, args.folder, out / "onnx.csv", args.batch_size)
            ratios.append(onnx_rate / torch_rate)
            print(f"round {r + 1}: PyTorch {torch_rate:.1f} images/s, onnxruntime {onnx_rate:.1f} images/s, "
                  f"ratio {ratios[-1]:.2f}")
        rows = [list(csv.DictReader((out / f"{k}.csv").open())) for k in ("torch", "onnx")]
        columns = [c for c in rows[0][0] if c.startswith("p_")]
        diff = max(abs(float(a[c]) - float(b[c])) for a, b in zip(*rows, strict=True) for c in columns)
        same = sum(a["predicted"] == b["predicted"] for a, b in zip(*rows, strict=True))
        print(f"onnxruntime / PyTorch images/s: median ratio {statistics.median(ratios):.2f} over {args.rounds} "
              f"rounds; {same} of {len(rows[0])} predictions equal; max probability difference {diff:.1e}")


if __name__ == "__main__":
    main()
