"""``celltune export``: a trained model for the tools outside celltune, checked against PyTorch as it is written."""

from __future__ import annotations

import argparse

FORMATS = ("onnx", "pt2")  # celltune.export.SUFFIXES, named here so that --help imports no torch


def cmd_export(args: argparse.Namespace) -> int:
    from celltune.export import export_run

    check = export_run(args.run, format=args.format, out=args.out, tolerance=args.tolerance)
    print(f"wrote {check.path} ({check.format}); checked on {check.images} {check.source}: max abs logit "
          f"difference from the PyTorch model {check.max_abs_diff:.2e} (tolerance {args.tolerance:g})")
    return 0


def register(sub) -> None:
    p = sub.add_parser("export", help="a run's best model as ONNX (onnxruntime, any language) or a torch.export "
                       "program, checked against the PyTorch model on images of the run")
    p.add_argument("run", help="run directory or best.pt")
    p.add_argument("--format", choices=FORMATS, default="onnx")
    p.add_argument("--out", help="the file to write (default: beside best.pt, best.onnx or best.pt2)")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest accepted difference of any logit from the PyTorch model's")
    p.set_defaults(func=cmd_export)
