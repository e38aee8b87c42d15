"""celltune: fine-tune ImageNet-pretrained CNNs (torchvision and timm) to classify cell, microscopy and medical
images, with honest metrics and a self-contained report.

    import celltune
    config = celltune.load_config("timm_modern", {"data": "cells/", "model": "mobilenet_v2"})
    run_dir = celltune.fit(config)
    predictor = celltune.Predictor(run_dir)

The names below load on first use, so ``import celltune`` (and ``celltune --help``) does not import torch.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from celltune import _moved

_moved.install()  # celltune 0.1's module paths (celltune.train, ...) still import, with a warning

try:
    __version__ = version("celltune")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

# public name -> the module that holds it
_EXPORTS = {
    "TrainConfig": "celltune.config.train_config",
    "load_config": "celltune.config.recipes",
    "config_from_dict": "celltune.config.train_config",
    "recipe_names": "celltune.config.recipes",
    "CelltuneError": "celltune.errors",
    "DataError": "celltune.errors",
    "discover": "celltune.data.discovery",
    "summarize": "celltune.data.discovery",
    "create_model": "celltune.models.factory",
    "available_models": "celltune.models.factory",
    "fit": "celltune.training.fit",
    "evaluate_checkpoint": "celltune.evaluation.evaluate",
    "load_checkpoint": "celltune.models.checkpoint",
    "Predictor": "celltune.predict.predictor",
    "predict_to_csv": "celltune.predict.to_csv",
    "export_run": "celltune.export.formats",
    "PackageInfo": "celltune.export.modelzoo",
    "explain_images": "celltune.explain.heatmaps",
    "classification_metrics": "celltune.metrics.classification",
    "multilabel_metrics": "celltune.metrics.multilabel",
}
__all__ = [
    "CelltuneError",
    "DataError",
    "PackageInfo",
    "Predictor",
    "TrainConfig",
    "__version__",
    "available_models",
    "classification_metrics",
    "config_from_dict",
    "create_model",
    "discover",
    "evaluate_checkpoint",
    "explain_images",
    "export_run",
    "fit",
    "load_checkpoint",
    "load_config",
    "multilabel_metrics",
    "predict_to_csv",
    "recipe_names",
    "summarize",
]

if TYPE_CHECKING:
    from celltune.config import TrainConfig, config_from_dict
    from celltune.config.recipes import load_config, recipe_names
    from celltune.data.discovery import discover, summarize
    from celltune.errors import CelltuneError, DataError
    from celltune.evaluation.evaluate import evaluate_checkpoint
    from celltune.explain.heatmaps import explain_images
    from celltune.export.formats import export_run
    from celltune.export.modelzoo import PackageInfo
    from celltune.metrics.classification import classification_metrics
    from celltune.metrics.multilabel import multilabel_metrics
    from celltune.models.checkpoint import load_checkpoint
    from celltune.models.factory import available_models, create_model
    from celltune.predict.predictor import Predictor
    from celltune.predict.to_csv import predict_to_csv
    from celltune.training.fit import fit


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'celltune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
