"""Classify images with a celltune ONNX export and nothing of celltune or PyTorch: numpy, Pillow and onnxruntime.

    python examples/onnx_without_torch.py best.onnx cell1.png cell2.tif ... [--topk 3]

The preprocessing comes from the export's metadata (``celltune_card``): the image at 0..1 (8-bit / 255, 16-bit /
65535), grey repeated to three channels for an RGB model, the short side resized to the training size (bilinear,
antialiased as torchvision does), the centre square, then the per-channel mean and std; the logits are divided by
the card's temperature before the softmax (or sigmoid), as celltune does. Single-file images only;
a model of other channel layouts (one file per channel, percentile intensity) is read by ``celltune predict``.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import onnxruntime as ort
from PIL import Image


def card_of(session: ort.InferenceSession) -> dict:
    return json.loads(session.get_modelmeta().custom_metadata_map["celltune_card"])


def preprocess(path: str, card: dict) -> np.ndarray:
    """(C, size, size) float32, normalised as the model was trained."""
    with Image.open(path) as img:
        if img.mode.startswith("I"):  # 16-bit grey
            array = np.asarray(img, dtype=np.float32)
            array /= 65535.0 if img.mode != "I" or array.max() > 255 else 255.0
            planes = [array]
        else:
            grey = card["in_chans"] == 1
            rgb = np.asarray(img.convert("L" if grey else "RGB"), dtype=np.float32) / 255.0
            planes = [rgb] if grey else list(rgb.transpose(2, 0, 1))
    if card["in_chans"] == 3 and len(planes) == 1:
        planes = planes * 3
    size = card["image_size"]
    height, width = planes[0].shape
    scale = size / min(height, width)  # the short side to ``size``, then the centre square
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    resized = [np.asarray(Image.fromarray(p, mode="F").resize(new, Image.Resampling.BILINEAR))
               [top:top + size, left:left + size] for p in planes]
    image = np.stack(resized)
    mean, std = np.asarray(card["mean"], np.float32), np.asarray(card["std"], np.float32)
    return ((image - mean[:, None, None]) / std[:, None, None]).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--topk", type=int, default=3)
    args = parser.parse_args()
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    card = card_of(session)
    batch = np.stack([preprocess(p, card) for p in args.images])
    logits = session.run(None, {session.get_inputs()[0].name: batch})[0]
    # The temperature celltune fitted on validation (one, or one per label): probabilities that mean what they say.
    logits = logits / np.asarray(card.get("temperature") or [1.0], dtype=np.float32)
    if card.get("multilabel"):
        probs = 1 / (1 + np.exp(-logits))
    else:
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
    for path, p in zip(args.images, probs, strict=True):
        order = np.argsort(p)[::-1][: args.topk]
        print(f"{path}: " + ", ".join(f"{card['class_names'][i]} {p[i]:.3f}" for i in order))


if __name__ == "__main__":
    main()
