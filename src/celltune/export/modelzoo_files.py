"""The files of a BioImage Model Zoo package besides its description: weights, the architecture's source, the
conda environment, documentation with the run's test metrics, a cover, and test tensors from images of the run."""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from celltune.data.images import PERCENTILES
from celltune.metrics.results import ClassificationResult, MultilabelResult
from celltune.models import factory as models
from celltune.models.checkpoint import ModelCard
from celltune.predict.predictor import batch_probs
from celltune.reports.pictures import composite, unnormalize


def identifier(name: str, taken: set[str]) -> str:
    """A Python identifier for a channel name ("NuMem" stays, "cell wall" -> "cell_wall", "2N" -> "c_2N")."""
    ident = re.sub(r"\W", "_", name) or "c"
    ident = f"c_{ident}" if not ident.isidentifier() else ident
    base, n = ident, 1
    while ident in taken:
        n += 1
        ident = f"{base}_{n}"
    taken.add(ident)
    return ident


def identifiers(names: list[str]) -> list[str]:
    taken: set[str] = set()
    return [identifier(n, taken) for n in names]


def architecture_source(library: str) -> str:
    """``architecture.py`` of the package: ``build_model`` makes the bare network, then celltune's own head and
    stem functions (their source copied here, so the package and celltune build the same shapes)."""
    builder = ("import timm\n    model = timm.create_model(name, pretrained=False)" if library == "timm" else
               "import torchvision\n    model = torchvision.models.get_model(name, weights=None)")
    functions = "\n\n".join(inspect.getsource(f) for f in
                            (models.head_name, models.replace_head, models.stem_name, models.adapt_stem))
    return f'''"""The network of a celltune classifier: {library}'s architecture with celltune's new head and stem."""

import torch
from torch import nn


def build_model(name: str, num_classes: int, in_chans: int = 3) -> nn.Module:
    {builder}
    if in_chans != 3:
        adapt_stem(model, in_chans)
    replace_head(model, num_classes)
    return model.eval()


{functions}'''


def environment_yaml(library: str) -> str:
    pip = f"  - pip:\n      - timm=={_version('timm')}\n" if library == "timm" else ""
    return (f"name: celltune-export\nchannels:\n  - conda-forge\n  - nodefaults\ndependencies:\n  - python=3.11\n"
            f"  - pytorch={torch.__version__.split('+')[0]}\n"
            f"  - torchvision={torchvision.__version__.split('+')[0]}\n  - pip\n{pip}")


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def documentation(card: ModelCard, metrics: dict | None, names: list[str]) -> str:
    channels = ", ".join(card.channels) if card.channels else "RGB"
    intensity = {"scale": "divided by the largest value of its type (255 for 8-bit, 65535 for 16-bit)",
                 "percentile": f"stretched per channel so its percentiles {PERCENTILES[0]:g} to {PERCENTILES[1]:g} "
                               "span 0..1 (clipped)",
                 "dataset": "divided by the largest value of its type"}.get(card.intensity, card.intensity)
    out = "sigmoid probability of each label" if card.multilabel else "softmax probability of each class"
    lines = [f"# {card.model_name} cell image classifier (celltune)", "",
             f"Classifies {card.image_size}x{card.image_size} images of {card.in_chans} channel(s) ({channels}) "
             f"into {len(card.class_names)} classes.", "",
             "## Input", "",
             f"`image`: float32, axes (batch, channel, y, x), {card.image_size}x{card.image_size}: each image "
             f"{intensity}, then its shorter side resized to {card.image_size} ({card.interpolation}, antialiased) and "
             f"the centre {card.image_size}x{card.image_size} square cut, as celltune does. The package's "
             "preprocessing subtracts the per-channel mean and divides by the std (values below).", "",
             f"- mean: {card.mean}", f"- std: {card.std}", "",
             "## Output", "", f"`probabilities`: (batch, class), the {out}:", "",
             "| output channel | class |", "|---|---|",
             *(f"| `{n}` | {c} |" for n, c in zip(names, card.class_names, strict=True))]
    if card.multilabel and card.thresholds:
        lines += ["", "Decision thresholds tuned on validation: "
                  + ", ".join(f"{c} {t:.2f}" for c, t in zip(card.class_names, card.thresholds, strict=True))]
    if card.temperature:
        values = ", ".join(f"{t:.4g}" for t in card.temperature)
        how = "each label's log-odds" if card.multilabel else "the log of the probabilities, then normalise to sum to 1"
        lines += ["", f"Calibration: the outputs above are the network's own. celltune divides {how} by the "
                  f"temperature fitted on validation ({values}) so that a probability means what it says; the "
                  "weights' `celltune_card` metadata holds it, and the validation scores of its prediction sets."]
    lines += ["", "# Validation", ""]
    if not metrics:
        return "\n".join([*lines, "The run was not scored on a test split (no metrics.json beside its best.pt): "
                          "score it with `celltune evaluate` before publishing this package.", ""])
    lines += [f"Scored by celltune on the run's {metrics.get('split', 'test')} split "
              f"({metrics.get('num_samples', '?')} images) after training; these images were not used to train "
              "or to choose the model.", "", "| metric | value | 95% interval |", "|---|---|---|"]
    ci = metrics.get("ci") or {}
    kind = MultilabelResult if metrics.get("multilabel") else ClassificationResult
    for key, label in ((f.name, f.metadata["label"]) for f in fields(kind) if "label" in f.metadata):
        if isinstance(metrics.get(key), float):  # the headline numbers; metrics/results.py names them
            interval = f"{ci[key][0]:.4f} .. {ci[key][1]:.4f}" if key in ci else ""
            lines.append(f"| {label} | {metrics[key]:.4f} | {interval} |")
    per_class = metrics.get("per_class") or {}
    if per_class:
        lines += ["", "| class | precision | recall | F1 | images |", "|---|---|---|---|---|"]
        lines += [f"| {c} | {r.get('precision', 0):.3f} | {r.get('recall', 0):.3f} | {r.get('f1', 0):.3f} | "
                  f"{r.get('support', '')} |" for c, r in per_class.items()]
    return "\n".join([*lines, ""])


def draw_cover(path: Path, images: np.ndarray, probs: np.ndarray, class_names: list[str]) -> None:
    """A 2:1 cover: up to eight input images (composites of their channels) in two rows of four, each labelled
    with the model's answer; images of different answers first."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    answers = probs.argmax(axis=1)
    firsts = [int(np.flatnonzero(answers == a)[0]) for a in dict.fromkeys(answers.tolist())]
    order = firsts + [i for i in range(len(images)) if i not in firsts]
    fig = Figure(figsize=(8, 4), dpi=80)
    FigureCanvasAgg(fig)
    for slot, i in enumerate(order[:8]):
        ax = fig.add_axes(((slot % 4) / 4, 0.5 - (slot // 4) / 2, 0.25, 0.5))
        ax.imshow(composite(images[i]), interpolation="nearest", aspect="auto")
        ax.text(0.03, 0.03, f"{class_names[answers[i]]} {probs[i][answers[i]]:.2f}", transform=ax.transAxes,
                color="white", fontsize=12, bbox={"facecolor": "black", "alpha": 0.6, "edgecolor": "none"})
        ax.set_axis_off()
    fig.savefig(path, format="png")  # no bbox_inches="tight": it would break the 2:1 ratio the zoo asks for


def write_parts(build: Path, *, model: nn.Module, card: ModelCard, inputs: torch.Tensor, metrics: dict | None,
                names: list[str]) -> dict[str, Path]:
    """Every file of the package but the ONNX weights, in ``build``. ``inputs``: normalised (N, C, H, W)."""
    import tifffile

    library, _ = models.resolve_name(card.model_name)
    parts = {"weights": build / "weights.pt", "architecture": build / "architecture.py",
             "environment": build / "environment.yaml", "documentation": build / "README.md",
             "cover": build / "cover.png", "test_input": build / "test_input.npy",
             "test_output": build / "test_output.npy", "sample_input": build / "sample_input.tif",
             "sample_output": build / "sample_output.tif"}
    torch.save(model.state_dict(), parts["weights"])
    parts["architecture"].write_text(architecture_source(library))
    parts["environment"].write_text(environment_yaml(library))
    parts["documentation"].write_text(documentation(card, metrics, names))
    raw = unnormalize(inputs.numpy(), card.mean, card.std).astype(np.float32)  # (N, C, H, W) in 0..1
    probs = batch_probs(model, inputs, multilabel=card.multilabel).numpy()  # (N, classes) float32
    np.save(parts["test_input"], raw[:1])
    np.save(parts["test_output"], probs[:1])
    tifffile.imwrite(parts["sample_input"], raw[0])  # (C, H, W)
    tifffile.imwrite(parts["sample_output"], probs[:1])  # (1, classes)
    draw_cover(parts["cover"], raw, probs, card.class_names)
    return parts


def run_metrics(checkpoint: Path) -> dict | None:
    path = checkpoint.parent / "metrics.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
