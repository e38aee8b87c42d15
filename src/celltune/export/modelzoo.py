"""BioImage Model Zoo packages (spec 0.5 zip) of a run, for Fiji/deepImageJ, ilastik, QuPath and napari.

The package holds ONNX weights and a state dict with the architecture's source (``architecture.py``: torchvision or
timm plus celltune's own head and stem code, so it rebuilds the model without celltune), the run's per-channel
mean/std as ``fixed_zero_mean_unit_variance`` preprocessing, softmax (sigmoid for multi-label) postprocessing, test
tensors from images of the run, a cover and documentation whose "# Validation" section holds the run's test metrics.
It is written, then validated by ``bioimageio.spec`` and run by ``bioimageio.core``'s ``test_model``, offline: a
failure of either is an error. No ``github_user`` and no web addresses are written, since those make validation
reach the network.
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from celltune.errors import ConfigError, ExportError
from celltune.export.modelzoo_files import identifiers, run_metrics, write_parts
from celltune.models import factory as models
from celltune.models.checkpoint import ModelCard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackageInfo:
    """What the zoo asks of a package's makers; each one missing is a validation warning, not an error."""

    license: str | None = None  # an SPDX id: MIT, CC-BY-4.0 ...
    authors: tuple[str, ...] = ()
    cite_doi: str | None = None  # the paper to cite for the model, e.g. 10.1109/CVPR.2018.00474

    def __post_init__(self) -> None:  # a mistyped license or DOI is told before minutes of export, not after
        if self.license or self.cite_doi:
            from bioimageio.spec.model import v0_5 as spec

            if self.license:
                _checked(spec.LicenseId, self.license, "--license", "an SPDX license id such as MIT or CC-BY-4.0")
            if self.cite_doi:
                _checked(spec.Doi, self.cite_doi, "--cite-doi", "a DOI such as 10.1109/CVPR.2018.00474")


def describe(card: ModelCard, parts: dict[str, Path], onnx_path: Path, names: list[str], info: PackageInfo):
    """The spec 0.5 model description of the package's files."""
    from bioimageio.spec.model import v0_5 as spec

    _, bare = models.resolve_name(card.model_name)
    channel_names = identifiers(card.channels or (["gray"] if card.in_chans == 1 else ["red", "green", "blue"]))
    size = card.image_size
    post = (spec.SigmoidDescr() if card.multilabel else
            spec.SoftmaxDescr(kwargs=spec.SoftmaxKwargs(axis=spec.AxisId("channel"))))
    name = re.sub(r"[^A-Za-z0-9_+\- ()]", " ", f"celltune {bare} {len(card.class_names)}-class classifier")[:64]
    cite = [spec.CiteEntry(text=f"The {bare} architecture", doi=spec.Doi(info.cite_doi))] if info.cite_doi else []
    return spec.ModelDescr(
        name=name.strip(),
        description=(f"{bare} fine-tuned by celltune to classify {size}x{size} cell images of {card.in_chans} "
                     f"channel(s) into: {', '.join(card.class_names)}")[:1024],
        covers=[spec.FileDescr(source=parts["cover"])],
        authors=[spec.Author(name=a) for a in info.authors],
        cite=cite,
        license=spec.LicenseId(info.license) if info.license else None,
        documentation=spec.FileDescr(source=parts["documentation"]),
        tags=["classification", "2d", "celltune", "pytorch", "onnx", bare.replace("_", "-")],
        version=spec.Version("0.1.0"),
        inputs=[spec.InputTensorDescr(
            id=spec.TensorId("image"), description="image intensities in 0..1, resized (see the documentation)",
            axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=channel_names),
                  spec.SpaceInputAxis(id=spec.AxisId("y"), size=size),
                  spec.SpaceInputAxis(id=spec.AxisId("x"), size=size)],
            test_tensor=spec.FileDescr(source=parts["test_input"]),
            sample_tensor=spec.FileDescr(source=parts["sample_input"]),
            data=spec.IntervalOrRatioDataDescr(type="float32"),
            preprocessing=[spec.FixedZeroMeanUnitVarianceDescr(kwargs=spec.FixedZeroMeanUnitVarianceAlongAxisKwargs(
                axis=spec.AxisId("channel"), mean=list(card.mean), std=list(card.std)))])],
        outputs=[spec.OutputTensorDescr(
            id=spec.TensorId("probabilities"), description="probability of each class",
            axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=list(names))],
            test_tensor=spec.FileDescr(source=parts["test_output"]),
            sample_tensor=spec.FileDescr(source=parts["sample_output"]),
            data=spec.IntervalOrRatioDataDescr(type="float32"),
            postprocessing=[post])],
        weights=spec.WeightsDescr(
            pytorch_state_dict=spec.PytorchStateDictWeightsDescr(
                source=parts["weights"],
                architecture=spec.ArchitectureFromFileDescr(
                    source=parts["architecture"], callable=spec.Identifier("build_model"),
                    kwargs={"name": bare, "num_classes": len(card.class_names), "in_chans": card.in_chans}),
                pytorch_version=spec.Version(torch.__version__.split("+")[0]),
                dependencies=spec.FileDescr(source=parts["environment"])),
            onnx=spec.OnnxWeightsDescr(source=onnx_path, opset_version=_opset(onnx_path),
                                       parent="pytorch_state_dict")),
    )


def _checked(kind, value: str, flag: str, what: str):
    try:
        return kind(value)
    except ValueError:  # pydantic's ValidationError
        raise ConfigError(f"{flag} {value!r}: not {what}") from None


def _opset(path: Path) -> int:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _problems(summary) -> str:
    """The first errors of a bioimageio validation or test summary, on one line."""
    found = [f"{'.'.join(map(str, e.loc))}: {e.msg}" for d in summary.details for e in d.errors]
    found += [d.name for d in summary.details if d.status == "failed" and not d.errors]
    return "; ".join(found[:3]) or summary.status


def package(*, model: nn.Module, card: ModelCard, checkpoint: Path, inputs: torch.Tensor, out: Path,
            info: PackageInfo, write_onnx) -> tuple[str, str, list[str]]:
    """Write the package zip at ``out``; ``write_onnx(path)`` writes and checks its ONNX weights. Returns the
    validation status, the ``test_model`` status and the zoo's warnings (a missing license, author or citation)."""
    from bioimageio.spec import save_bioimageio_package

    names = identifiers(card.class_names)
    with tempfile.TemporaryDirectory(prefix="celltune-bioimageio-") as tmp:
        build = Path(tmp)
        parts = write_parts(build, model=model, card=card, inputs=inputs, metrics=run_metrics(checkpoint),
                            names=names)
        write_onnx(build / "weights.onnx")
        descr = describe(card, parts, build / "weights.onnx", names, info)
        out.unlink(missing_ok=True)
        save_bioimageio_package(descr, output_path=out)
    return verify(out)


def verify(path: Path) -> tuple[str, str, list[str]]:
    """Validate the package with ``bioimageio.spec`` and run ``bioimageio.core``'s ``test_model`` on it (its test
    input through every weight format, compared with its test output): (validation status, test status, the
    validation's warnings). A failure of either is an ``ExportError``."""
    from bioimageio.core import test_model
    from bioimageio.spec import load_description

    validation = load_description(path, perform_io_checks=True).validation_summary
    if validation.status == "failed":
        raise ExportError(f"{path}: bioimageio.spec finds the package invalid ({_problems(validation)}); the file "
                          "was kept for inspection, do not use it")
    tested = test_model(path, devices=["cpu"], stop_early=True)
    if tested.status != "passed":
        raise ExportError(f"{path}: bioimageio.core's test_model fails on the package ({_problems(tested)}); the "
                          "file was kept for inspection, do not use it")
    warnings = [f"{'.'.join(map(str, w.loc))}: {w.msg}" for d in validation.details for w in d.warnings]
    return validation.status, tested.status, warnings
