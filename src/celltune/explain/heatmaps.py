"""``celltune explain``: for each image a PNG of the image, its class activation map over it and the top-3 classes;
and the heatmaps of a run's report (its most confident mistakes and one correct image per class)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from celltune.errors import ConfigError, ExistsError
from celltune.explain.cam import check_method, heatmaps
from celltune.metrics.calibration import with_temperature
from celltune.models.checkpoint import ModelCard
from celltune.predict.predictor import Predictor, batch_probs, inputs_under, make_loader, require_inputs
from celltune.progress import bar
from celltune.reports.heatmap_picture import heatmap_png
from celltune.reports.html import worst_misclassified
from celltune.reports.pictures import unnormalize

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Explanation:
    path: Path  # the image
    png: Path | None  # the picture written; None when the image could not be read
    target: str  # the class whose evidence the map shows
    top: list[tuple[str, float]]  # the three most probable classes
    peak: tuple[float, float]  # (y, x) of the map's maximum, as fractions of the image's height and width
    layer: str = ""
    error: str | None = None


Explained = tuple[np.ndarray, np.ndarray, list[tuple[str, float]], str]


def outputs_for(inputs: Iterable[Path], out: Path, method: str, *, channels: list[str] | None = None,
                overwrite: bool = False) -> dict[Path, Path]:
    """image -> the PNG to write for it: ``out/{stem}.{method}.png``; images found under a folder keep their path
    below it, so two ``cell1.png`` in different class folders do not overwrite each other. An existing PNG is an
    ``ExistsError`` unless ``overwrite``."""
    planned: dict[Path, Path] = {}
    for given in inputs:
        found = [(p, p.relative_to(given)) for p in inputs_under(given, channels)] if given.is_dir() else [
            (given, Path(given.name))]
        for image, relative in found:
            planned[image] = out / relative.parent / f"{relative.stem}.{method}.png"
    clash = next((png for png in planned.values() if png.exists()), None)
    if clash is not None and not overwrite:
        raise ExistsError(f"{clash} exists; choose another --out or pass --overwrite")
    return planned


def _peak(heat: np.ndarray) -> tuple[float, float]:
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return float((y + 0.5) / heat.shape[0]), float((x + 0.5) / heat.shape[1])


def explain_batch(model: nn.Module, card: ModelCard, inputs: torch.Tensor, *, target: int | None = None,
                  method: str = "gradcam", layer: str | None = None) -> tuple[list[Explained], str]:
    """Per normalised (C, H, W) input of the batch: (the 0..1 image, its 0..1 map, top-3, explained class), and the
    layer the maps were taken at. The maps are of ``target`` (a class index) or, when None, of each image's most
    probable class."""
    probs = with_temperature(batch_probs(model, inputs, multilabel=card.multilabel).cpu().numpy(), card.temperature,
                             multilabel=card.multilabel)
    targets = [target if target is not None else int(i) for i in probs.argmax(axis=1)]
    maps, used = heatmaps(model, inputs, targets, method=method, layer=layer)
    out = []
    for x, heat, p, t in zip(inputs.cpu().numpy(), maps, probs, targets, strict=True):
        order = np.argsort(p)[::-1][:3]
        out.append((unnormalize(x, card.mean, card.std), heat,
                    [(card.class_names[i], float(p[i])) for i in order], card.class_names[t]))
    return out, used


def class_index(card: ModelCard, name: str | None) -> int | None:
    if name is None:
        return None
    if name not in card.class_names:
        raise ConfigError(f"--target {name!r} is not a class of this model; its classes: "
                          f"{', '.join(card.class_names)}")
    return card.class_names.index(name)


def explain_images(run: str | Path, inputs: list[Path], *, out: Path, method: str = "gradcam",
                   target: str | None = None, layer: str | None = None, overwrite: bool = False,
                   batch_size: int = 16) -> list[Explanation]:
    """Explain each image of ``inputs`` (files and folders) with ``run``'s best model, a PNG for each under ``out``
    (see ``outputs_for``). An image that cannot be read gets an ``Explanation`` with its ``error``, and the others
    are explained."""
    if Path(run).suffix.lower() == ".onnx":
        raise ConfigError(f"{run}: explain needs the run's PyTorch weights (its gradients), not an ONNX export; "
                          "give the run directory")
    check_method(method)  # before the model is read
    predictor = Predictor(run, device=torch.device("cpu"))
    model, card = predictor.model.float().to(memory_format=torch.contiguous_format), predictor.card
    wanted = class_index(card, target)
    require_inputs(inputs, card.channels)
    planned = outputs_for(inputs, out, method, channels=card.channels, overwrite=overwrite)
    results: list[Explanation] = []
    paths = list(planned)
    with bar(len(paths), "explaining") as progress:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            read = {p: predictor.input_for(p) for p in chunk}
            good = {p: x for p, x in read.items() if isinstance(x, torch.Tensor)}
            explained, used = explain_batch(model, card, torch.stack(list(good.values())), target=wanted,
                                            method=method, layer=layer) if good else ([], "")
            by_path = dict(zip(good, explained, strict=True))
            for p in chunk:
                if p not in by_path:
                    results.append(Explanation(p, None, "", [], (0.0, 0.0), error=str(read[p])))
                    continue
                image, heat, top, name = by_path[p]
                png = planned[p]
                png.parent.mkdir(parents=True, exist_ok=True)
                png.write_bytes(heatmap_png(image, heat, top, target=name, method=method, title=p.name))
                results.append(Explanation(p, png, name, top, _peak(heat), used))
            progress.update(len(chunk))
    return results


def report_heatmaps(model: nn.Module, card: ModelCard, samples: list, probs: np.ndarray, *,
                    masks: list[Path] | None = None, mistakes: int = 6) -> list[tuple[str, bytes]]:
    """(caption, PNG) for a report: Grad-CAM of the ``mistakes`` most confident single-label mistakes (evidence for
    the wrong answer) and of the most confident correct image of each class."""
    predicted = probs.argmax(axis=1)
    index = {id(s): i for i, s in enumerate(samples)}
    chosen = [(index[id(s)], f"{s.path.name}: true {card.class_names[t]}, predicted {card.class_names[p]} "
               f"{c:.2f}") for s, t, p, c in worst_misclassified(samples, probs, k=mistakes)]
    for k, name in enumerate(card.class_names):
        right = [i for i, s in enumerate(samples) if s.label == k and predicted[i] == k]
        if right:
            best = max(right, key=lambda i: probs[i, k])
            chosen.append((best, f"{samples[best].path.name}: {name}, correct {probs[best, k]:.2f}"))
    if not chosen:
        return []
    picked = [samples[i] for i, _ in chosen]
    loader = make_loader(picked, card, batch_size=len(picked),
                         masks=[masks[i] for i, _ in chosen] if masks is not None else None)
    model = model.float().eval()
    inputs = next(iter(loader))[0].to(next(model.parameters()).device)
    explained, _ = explain_batch(model, card, inputs)
    return [(caption, heatmap_png(image, heat, top, target=name, method="gradcam",
                                      title=caption.split(":")[0]))
            for (_, caption), (image, heat, top, name) in zip(chosen, explained, strict=True)]
