"""Class activation maps: which part of an image drove the model's answer (pytorch-grad-cam).

The target layer is found by running the model once: the last module, in the order modules finish, whose output is
a (B, C, H, W) feature map with more than one pixel, which is the last convolutional stage of torchvision's and
timm's CNNs (ResNet ``layer4``, DenseNet and MobileNet ``features``, EfficientNet ``bn2``, ConvNeXt ``norm_pre``).
Models without one (vision transformers: tokens, not maps) need ``--layer`` and are told so.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from celltune.errors import ConfigError

# method name -> pytorch_grad_cam class name (keep celltune.cli.explaining.METHODS in step)
METHODS: dict[str, str] = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "eigencam": "EigenCAM"}


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ConfigError(f"unknown explanation method {method!r}; choose from {', '.join(METHODS)}")


def _pooling(module: nn.Module) -> bool:
    """An adaptive pooling layer resizes the last map (VGG's and AlexNet's avgpool): its input is the one to take."""
    return isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) or "AdaptivePool" in type(module).__name__


def find_target_layer(model: nn.Module, example: torch.Tensor) -> str:
    """The qualified name of the last module to output a spatial feature map on ``example`` (1, C, H, W): a
    (B, C, h, w) tensor of the input's batch size, h and w above 1 and in the image's proportions (a Swin's windows
    and (B, h, w, C) maps, attention's (B, heads, tokens, tokens) are not), with no token sequence (B, N, D) after
    it (a vision transformer's patch embedding is no map to explain its answer by)."""
    batch = example.expand(2, -1, -1, -1)  # two images, so that a window or head axis cannot pass for the batch
    height, width = batch.shape[-2:]
    events: list[tuple[str, str]] = []  # ("map" | "tokens", module name), in the order modules finish
    hooks = []
    for name, module in model.named_modules():
        if name and not _pooling(module):  # not the whole model

            def record(mod, args, output, name=name):
                if not isinstance(output, torch.Tensor) or output.shape[0] != 2:
                    return
                if output.ndim == 3 and output.shape[1] > 1:
                    events.append(("tokens", name))
                elif output.ndim == 4:
                    h, w = output.shape[-2:]
                    if h * w > 1 and h <= height and w <= width and abs(height / h - width / w) < 0.5:
                        events.append(("map", name))

            hooks.append(module.register_forward_hook(record))
    try:
        with torch.no_grad():
            model(batch)
    finally:
        for hook in hooks:
            hook.remove()
    maps = [i for i, (kind, _) in enumerate(events) if kind == "map"]
    if not maps or any(kind == "tokens" for kind, _ in events[maps[-1]:]):
        raise ConfigError(f"{type(model).__name__} ends in no (B, C, H, W) feature map to explain (a transformer?): "
                          "name a layer that outputs one with --layer")
    return events[maps[-1]][1]


def layer_named(model: nn.Module, name: str) -> nn.Module:
    names = [n for n, _ in model.named_modules() if n]
    if name not in names:
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; its layers: {', '.join(names[:8])} ..."
        raise ConfigError(f"--layer {name!r}: the model has no such layer{hint}")
    return model.get_submodule(name)


def heatmaps(model: nn.Module, inputs: torch.Tensor, targets: list[int], *, method: str = "gradcam",
             layer: str | None = None) -> tuple[np.ndarray, str]:
    """(N, H, W) maps in 0..1 (each image scaled to its own maximum) of how much each pixel of the normalised
    (N, C, H, W) ``inputs`` drove class ``targets[i]``, and the layer they were taken at."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    check_method(method)
    model = model.eval()
    name = layer or find_target_layer(model, inputs[:1])
    cam_class: Callable = getattr(pytorch_grad_cam, METHODS[method])
    with torch.enable_grad(), cam_class(model=model, target_layers=[layer_named(model, name)]) as cam:
        # An input that asks for its gradient lets the gradient reach the layer even through a frozen backbone.
        maps = cam(input_tensor=inputs.detach().clone().requires_grad_(True),
                   targets=[ClassifierOutputTarget(t) for t in targets])
    return np.nan_to_num(np.asarray(maps, dtype=np.float32)), name
