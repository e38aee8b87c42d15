"""An exported ONNX model read back: its model card from the file's metadata (``celltune_card``, JSON) and the model
run by onnxruntime behind the PyTorch module interface, so ``celltune predict`` takes a ``.onnx`` as it takes a
checkpoint. ``celltune.export.formats`` writes these files; this module only reads them."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from celltune.errors import CheckpointError
from celltune.models.checkpoint import ModelCard

CARD_KEY = "celltune_card"


def card_json(card: ModelCard) -> str:
    return json.dumps(asdict(card))


def card_from_json(text: str) -> ModelCard:
    return ModelCard(**json.loads(text))


def read_onnx_card(path: Path) -> ModelCard:
    import onnx

    try:
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    except Exception as err:  # a torn or foreign file: onnx raises DecodeError, ValueError ...
        raise CheckpointError(f"{path}: not a readable ONNX model ({err}); export it again with celltune export") \
            from None
    if CARD_KEY not in props:
        raise CheckpointError(f"{path}: an ONNX model without celltune's metadata ({CARD_KEY}); export it with "
                              "celltune export RUN --format onnx")
    return card_from_json(props[CARD_KEY])


def onnx_session(path: Path):
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:
        raise CheckpointError(f"{path}: onnxruntime cannot load it ({str(err).splitlines()[0]}); export it "
                              "again with celltune export") from None


class OnnxModule(nn.Module):
    """An exported ONNX model run by onnxruntime, called like the PyTorch one: (B, C, H, W) -> (B, classes) logits."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.session = onnx_session(path)
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])
