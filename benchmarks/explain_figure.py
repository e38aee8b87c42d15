"""The README's Grad-CAM picture: ``celltune explain`` on one test cell of each of a few classes of a HEp-2 run.

    python benchmarks/explain_figure.py RUN [--classes Centromere Golgi NuMem Speckled] [--out docs/explain_hep2.png]

Takes the first test image of each class (in the run's own split of its data), explains it with the run's best
model (Grad-CAM at the automatically found layer; the class explained is the predicted one) and stacks the pictures,
drawn as ``celltune explain`` draws them, into one PNG.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import torch
from PIL import Image

from celltune.config.recipes import load_config
from celltune.data.discovery import discover_as_trained
from celltune.explain.heatmaps import draw, explain_batch
from celltune.models.checkpoint import read_checkpoint, resolve_checkpoint
from celltune.predict.predictor import Predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--classes", nargs="+", default=["Centromere", "Golgi", "NuMem", "Speckled"])
    parser.add_argument("--method", default="gradcam")
    parser.add_argument("--out", type=Path, default=Path("docs/explain_hep2.png"))
    args = parser.parse_args()
    checkpoint = resolve_checkpoint(args.run)
    saved = read_checkpoint(checkpoint)
    config = load_config(checkpoint.parent / "config.yaml")
    found = discover_as_trained(config.data.root, saved, defaults=config.data, label_names=config.data.label_names)
    names = found.class_names
    picked = [next(s.path for s in found.splits["test"] if s.label == names.index(c)) for c in args.classes]
    predictor = Predictor(args.run, device=torch.device("cpu"))
    model = predictor.model.float().to(memory_format=torch.contiguous_format)
    inputs = torch.stack([predictor.input_for(p) for p in picked])  # type: ignore[misc]
    explained, layer = explain_batch(model, predictor.card, inputs, method=args.method)
    pictures = []
    for path, truth, (image, heat, top, target) in zip(picked, args.classes, explained, strict=True):
        print(f"{path.name}: true {truth}; {', '.join(f'{c} {p:.3f}' for c, p in top)}; layer {layer}")
        png = draw(image, heat, top, target=target, method=args.method, title=f"{path.name}, true {truth}")
        pictures.append(Image.open(io.BytesIO(png)).convert("RGB"))
    sheet = Image.new("RGB", (max(p.width for p in pictures), sum(p.height for p in pictures)), "white")
    y = 0
    for picture in pictures:
        sheet.paste(picture, (0, y))
        y += picture.height
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
