"""celltune 0.1's flat modules, moved into subpackages: an old import path still works for one release, warns
(DeprecationWarning) and gives the module where it lives now, so code and pickles (Lightning's ``last.ckpt``) that
name an old path keep working.

Old modules whose name is now a subpackage's (``celltune.data``, ``celltune.metrics``, ...) are served by that
package's ``__getattr__`` (``forward``): a name the package does not hold is looked up where the old module's code
went.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

# old module -> the module that holds its code now
MOVED = {
    "celltune.flags": "celltune.config.flags",
    "celltune.recipes": "celltune.config.recipes",
    "celltune.weights": "celltune.models.weights",
    "celltune.checkpoint": "celltune.models.checkpoint",
    "celltune.imagefiles": "celltune.data.imagefiles",
    "celltune.csvfiles": "celltune.data.csvfiles",
    "celltune.images": "celltune.data.images",
    "celltune.samples": "celltune.data.samples",
    "celltune.layouts": "celltune.data.layouts",
    "celltune.class_choice": "celltune.data.class_choice",
    "celltune.splits": "celltune.data.splits",
    "celltune.dataset": "celltune.data.dataset",
    "celltune.cache": "celltune.data.cache",
    "celltune.sampling": "celltune.data.sampling",
    "celltune.transforms": "celltune.data.transforms",
    "celltune.synthetic": "celltune.data.synthetic",
    "celltune.duplicates": "celltune.audit.duplicates",
    "celltune.confounds": "celltune.audit.confounds",
    "celltune.findings": "celltune.audit.findings",
    "celltune.group_audit": "celltune.audit.groups",
    "celltune.leaks": "celltune.audit.leaks",
    "celltune.accepted": "celltune.audit.accepted",
    "celltune.label_issues": "celltune.audit.label_issues",
    "celltune.metrics_multilabel": "celltune.metrics.multilabel",
    "celltune.calibration": "celltune.metrics.calibration",
    "celltune.conformal": "celltune.metrics.conformal",
    "celltune.stats": "celltune.metrics.stats",
    "celltune.onnx_model": "celltune.predict.onnx_model",
    "celltune.predictions_csv": "celltune.predict.to_csv",
    "celltune.report": "celltune.reports.run_files",
    "celltune.report_html": "celltune.reports.html",
    "celltune.report_trust": "celltune.reports.trust",
    "celltune.pictures": "celltune.reports.pictures",
    "celltune.cam": "celltune.explain.cam",
    "celltune.evaluate": "celltune.evaluation.evaluate",
    "celltune.compare": "celltune.evaluation.compare",
    "celltune.train": "celltune.training.fit",
    "celltune.module": "celltune.training.module",
    "celltune.callbacks": "celltune.training.callbacks",
    "celltune.runtime": "celltune.training.runtime",
    "celltune.budget": "celltune.training.budget",
    "celltune.probe": "celltune.training.probe",
    "celltune.defaults": "celltune.training.defaults",
    "celltune.datamodule": "celltune.training.datamodule",
    "celltune.crossval": "celltune.training.crossval",
    "celltune.demo": "celltune.training.demo",
    "celltune.tune": "celltune.tuning.search",
    "celltune.tune_space": "celltune.tuning.space",
    "celltune.tune_study": "celltune.tuning.study",
    "celltune.tune_report": "celltune.tuning.report",
    "celltune.modelzoo": "celltune.export.modelzoo",
    "celltune.modelzoo_files": "celltune.export.modelzoo_files",
}


def _warn(old: str, new: str) -> None:
    warnings.warn(f"{old} moved to {new}; import it from there (the old path goes in the next release)",
                  DeprecationWarning, stacklevel=3)


class _Loader(importlib.abc.Loader):
    def create_module(self, spec: Any) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        # The import system returns whatever sys.modules holds under the old name once this returns: the module
        # itself, so its __spec__ and __name__ stay its own.
        new = MOVED[module.__name__]
        _warn(module.__name__, new)
        sys.modules[module.__name__] = importlib.import_module(new)


class _OldPaths(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, _Loader())


def install() -> None:
    if not any(isinstance(f, _OldPaths) for f in sys.meta_path):
        sys.meta_path.append(_OldPaths())  # last: a module that exists is always found first


def _submodule(package: str, name: str) -> bool:
    return hasattr(sys.modules.get(package), "__path__") and importlib.util.find_spec(f"{package}.{name}") is not None


def forward(package: str, *homes: str) -> Callable[[str], Any]:
    """A module's ``__getattr__``: a package's submodules as usual; another public name from ``homes`` (where the
    old module of that name, or part of it, went), with a warning."""

    def __getattr__(name: str) -> Any:
        if not name.startswith("_") and not _submodule(package, name):
            for home in homes:
                module = importlib.import_module(home)
                if hasattr(module, name):
                    _warn(f"{package}.{name}", f"{home}.{name}")
                    return getattr(module, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
