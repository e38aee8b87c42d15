"""``celltune explain``: which part of each image drove the model's answer, as pictures."""

from __future__ import annotations

import argparse
from pathlib import Path

METHODS = ("gradcam", "gradcam++", "eigencam")  # explain.cam.METHODS; named here: --help imports no torch
SHOWN = 20  # images listed one per line; more are summed up


def cmd_explain(args: argparse.Namespace) -> int:
    from celltune.explain.heatmaps import explain_images

    inputs = [Path(p) for p in args.images]
    run = Path(args.run)
    out = Path(args.out) if args.out else (run if run.is_dir() else run.parent) / "explain"
    results = explain_images(args.run, inputs, out=out, method=args.method, target=args.target, layer=args.layer,
                             overwrite=args.overwrite, batch_size=args.batch_size)
    done = [r for r in results if r.error is None]
    for r in results if len(results) <= SHOWN else [r for r in results if r.error is not None]:
        print(f"{r.path}: error: {r.error}" if r.error else
              f"{r.path}: {', '.join(f'{c} {p:.3f}' for c, p in r.top)}; evidence for {r.target} -> {r.png}")
    layer = f" (maps of layer {done[0].layer})" if done else ""
    print(f"wrote {len(done)} picture(s) under {out}{layer}")
    if len(done) < len(results):
        print(f"{len(results) - len(done)} image(s) could not be read")
    return 0 if len(done) == len(results) else 1


def register(sub) -> None:
    p = sub.add_parser("explain", help="class activation maps (Grad-CAM): per image a picture of the image, the "
                       "evidence for a class over it, and the top-3 classes")
    p.add_argument("run", help="run directory or best.pt")
    p.add_argument("images", nargs="+", help="image files and/or folders")
    p.add_argument("--method", choices=METHODS, default="gradcam")
    p.add_argument("--target", help="the class whose evidence to show (default: each image's predicted class)")
    p.add_argument("--layer", help="the layer to take the map at (default: the last convolutional stage)")
    p.add_argument("--out", help="folder for the pictures (default: RUN/explain)")
    p.add_argument("--overwrite", action="store_true", help="replace pictures already there")
    p.add_argument("--batch-size", type=int, default=16)
    p.set_defaults(func=cmd_explain)
