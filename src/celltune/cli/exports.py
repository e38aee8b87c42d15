"""``celltune export``: a trained model for the tools outside celltune, checked against PyTorch as it is written."""

from __future__ import annotations

import argparse

FORMATS = ("onnx", "pt2", "bioimageio")  # celltune.export.formats.SUFFIXES, named here so that --help imports no torch


def cmd_export(args: argparse.Namespace) -> int:
    from celltune.export.formats import export_run
    from celltune.export.modelzoo import PackageInfo

    info = PackageInfo(license=args.license, authors=tuple(args.author or ()), cite_doi=args.cite_doi)
    check = export_run(args.run, format=args.format, out=args.out, tolerance=args.tolerance, info=info)
    print(f"wrote {check.path} ({check.format}); checked on {check.images} {check.source}: max abs logit "
          f"difference from the PyTorch model {check.max_abs_diff:.2e} (tolerance {args.tolerance:g})")
    if check.validation:
        print(f"bioimageio.spec: {check.validation}; bioimageio.core test_model: {check.tested}")
        missing = [flag for flag, given in (("--license", info.license), ("--author", info.authors),
                                            ("--cite-doi", info.cite_doi)) if not given]
        if missing:
            print(f"before publishing it on bioimage.io, give {', '.join(missing)}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("export", help="a run's best model as ONNX (onnxruntime, any language), a torch.export "
                       "program or a BioImage Model Zoo package (Fiji/deepImageJ, ilastik, QuPath, napari), "
                       "checked against the PyTorch model on images of the run")
    p.add_argument("run", help="run directory or best.pt")
    p.add_argument("--format", choices=FORMATS, default="onnx")
    p.add_argument("--out", help="the file to write (default: beside best.pt, best.onnx, best.pt2 or best.zip)")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest accepted difference of any logit from the PyTorch model's")
    zoo = p.add_argument_group("bioimageio package")
    zoo.add_argument("--license", help="SPDX license id of the package, e.g. MIT or CC-BY-4.0")
    zoo.add_argument("--author", action="append", help="an author's name (repeat for several)")
    zoo.add_argument("--cite-doi", help="DOI of the paper to cite for the model, e.g. 10.1109/CVPR.2018.00474")
    p.set_defaults(func=cmd_export)
