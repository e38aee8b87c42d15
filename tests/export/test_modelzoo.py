"""BioImage Model Zoo packages: valid, passing bioimageio.core's test_model, offline, and faithful to the run."""

import ast
import hashlib
import io
import json
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from celltune.cli import main
from celltune.data.synthetic import HPA_CHANNELS
from celltune.errors import ConfigError
from celltune.export.formats import ExportError, export_run
from celltune.export.modelzoo import PackageInfo, verify
from celltune.export.modelzoo_files import documentation, identifiers
from celltune.models.checkpoint import ModelCard, load_checkpoint

from conftest import random_checkpoint

CLASSES = ["nuclear speckles", "2-cell", "golgi"]  # none is a Python identifier as it stands but the last


def _refuse(*args, **kwargs):
    raise AssertionError(f"network access attempted: {args[:2]}")


@pytest.fixture(scope="module")
def four_channel_run(tmp_path_factory):
    """A 4-channel run whose data is gone (synthetic check images), scored: metrics.json beside best.pt."""
    run = tmp_path_factory.mktemp("zoo_run")
    random_checkpoint(run / "best.pt", CLASSES, channels=list(HPA_CHANNELS))
    metrics = {"split": "test", "num_samples": 120, "accuracy": 0.9125, "mean_class_accuracy": 0.875,
               "macro_f1": 0.8571, "ci": {"accuracy": [0.85, 0.95]},
               "per_class": {c: {"precision": 0.9, "recall": 0.8, "f1": 0.8471, "support": 40} for c in CLASSES}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


@pytest.fixture(scope="module")
def four_channel_package(four_channel_run, tmp_path_factory):
    """Its package, written with every connection and name lookup refused: validation needs no network."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("connect", "connect_ex"):
            mp.setattr(socket.socket, name, _refuse)
        mp.setattr(socket, "getaddrinfo", _refuse)
        return export_run(four_channel_run, format="bioimageio", out=tmp_path_factory.mktemp("zoo") / "zoo.zip",
                          info=PackageInfo(license="MIT", authors=("A. Scientist",), cite_doi="10.1109/CVPR.2016.90"))


def test_channel_names_become_distinct_identifiers():
    assert identifiers(["NuMem", "cell wall", "2N", "cell-wall", "ER"]) == [
        "NuMem", "cell_wall", "c_2N", "cell_wall_2", "ER"]


@pytest.mark.slow  # bioimageio's test_model or the ONNX exporter: seconds each
def test_a_four_channel_package_validates_and_passes_test_model_offline(four_channel_run, four_channel_package):
    check = four_channel_package
    out = check.path
    assert (check.validation, check.tested, check.source) == ("valid-format", "passed", "synthetic")
    assert check.max_abs_diff <= 1e-4
    with zipfile.ZipFile(out) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        docs = z.read(rdf["documentation"]["source"]).decode()
        cover = Image.open(z.open(rdf["covers"][0]["source"]))
        architecture = z.read("architecture.py").decode()
        state = torch.load(z.open(rdf["weights"]["pytorch_state_dict"]["source"]), weights_only=True)
        test_in = np.load(z.open(rdf["inputs"][0]["test_tensor"]["source"]))
        test_out = np.load(z.open(rdf["outputs"][0]["test_tensor"]["source"]))
    model, card, _ = load_checkpoint(four_channel_run)
    # input: batch/channel (channel names)/y/x, the card's mean and std as preprocessing
    axes = rdf["inputs"][0]["axes"]
    assert [a["type"] for a in axes] == ["batch", "channel", "space", "space"]
    assert axes[1].get("id", "channel") == "channel"  # the spec leaves out the default id
    assert axes[1]["channel_names"] == list(HPA_CHANNELS) and axes[2]["size"] == axes[3]["size"] == 32
    (pre,) = [p for p in rdf["inputs"][0]["preprocessing"] if p["id"] == "fixed_zero_mean_unit_variance"]
    assert pre["kwargs"]["mean"] == card.mean
    assert pre["kwargs"]["std"] == card.std
    # output: class names as channel names, softmax; ONNX and state dict weights
    assert rdf["outputs"][0]["axes"][1]["channel_names"] == ["nuclear_speckles", "c_2_cell", "golgi"]
    assert "softmax" in [p["id"] for p in rdf["outputs"][0]["postprocessing"]]
    assert set(rdf["weights"]) == {"onnx", "pytorch_state_dict"} and rdf["weights"]["onnx"]["opset_version"] >= 17
    assert rdf["license"] == "MIT" and rdf["authors"] == [{"name": "A. Scientist"}]
    assert rdf["cite"][0]["doi"] == "10.1109/CVPR.2016.90"
    assert "github_user" not in json.dumps(rdf) and "http" not in json.dumps(rdf)
    # the test tensors: an input in 0..1 and the PyTorch model's softmax of it, normalised as the card says
    assert test_in.shape == (1, 4, 32, 32) and test_in.min() >= 0 and test_in.max() <= 1
    x = (torch.from_numpy(test_in) - torch.tensor(card.mean)[:, None, None]) / torch.tensor(card.std)[:, None, None]
    with torch.inference_mode():
        assert np.allclose(torch.softmax(model(x), 1).numpy(), test_out, atol=1e-5)
    # the documentation's Validation section holds the run's test metrics; the cover is 2:1
    validation = docs[docs.index("# Validation"):]
    assert "| accuracy | 0.9125 | 0.8500 .. 0.9500 |" in validation and "| macro-F1 | 0.8571 |" in validation
    assert "| nuclear speckles | 0.900 | 0.800 | 0.847 | 40 |" in validation
    assert cover.size[0] == 2 * cover.size[1]
    # the architecture rebuilds the network without celltune, and the state dict fills it exactly
    imports = {n.module or "" for n in ast.walk(ast.parse(architecture)) if isinstance(n, ast.ImportFrom)}
    imports |= {a.name for n in ast.walk(ast.parse(architecture)) if isinstance(n, ast.Import) for a in n.names}
    assert not any(name.startswith("celltune") for name in imports)
    namespace: dict = {}
    exec(compile(architecture, "architecture.py", "exec"), namespace)
    kwargs = rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]
    rebuilt = namespace["build_model"](**kwargs)
    rebuilt.load_state_dict(state, strict=True)
    images = torch.randn(2, 4, 32, 32)
    with torch.inference_mode():
        assert torch.equal(rebuilt.eval()(images), model(images))


def test_package_flags_are_checked_before_any_work():
    with pytest.raises(ConfigError, match=r"--license 'MITT': not an SPDX license id"):
        PackageInfo(license="MITT")
    with pytest.raises(ConfigError, match=r"--cite-doi 'arxiv:1512': not a DOI"):
        PackageInfo(cite_doi="arxiv:1512")


@pytest.mark.slow  # bioimageio's test_model or the ONNX exporter: seconds each
def test_export_bioimageio_from_the_command_line_names_what_the_zoo_still_asks(tmp_path, capsys):
    checkpoint = random_checkpoint(tmp_path / "gray" / "best.pt", ["a", "b"], channels=["0"])  # one channel
    assert main(["-q", "export", str(checkpoint.parent), "--format", "bioimageio", "--license", "CC-BY-4.0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"wrote {tmp_path}/gray/best.zip (bioimageio); checked on 8 synthetic")
    assert out[1:] == ["bioimageio.spec: valid-format; bioimageio.core test_model: passed",
                       "before publishing it on bioimage.io, give --author, --cite-doi"]
    with zipfile.ZipFile(tmp_path / "gray" / "best.zip") as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        docs = z.read("README.md").decode()
    assert rdf["inputs"][0]["axes"][1]["channel_names"] == ["c_0"] and rdf["license"] == "CC-BY-4.0"
    assert "# Validation\n\nThe run was not scored on a test split" in docs  # no metrics.json: said, not hidden


def _tampered(good: Path, out: Path, *, rehash: bool) -> Path:
    """``good`` with its expected test output moved one class over (and its checksum updated if ``rehash``)."""
    with zipfile.ZipFile(good) as src:
        rdf = yaml.safe_load(src.read("rdf.yaml"))
        buffer = io.BytesIO()
        np.save(buffer, np.roll(np.load(src.open("test_output.npy")), 1, axis=1))
        if rehash:
            rdf["outputs"][0]["test_tensor"]["sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
        with zipfile.ZipFile(out, "w") as dst:
            for item in src.infolist():
                data = {"test_output.npy": buffer.getvalue(), "rdf.yaml": yaml.safe_dump(rdf).encode()}.get(
                    item.filename, src.read(item))
                dst.writestr(item, data)
    return out


@pytest.mark.slow  # bioimageio's test_model or the ONNX exporter: seconds each
def test_a_tampered_package_or_one_whose_test_fails_is_an_error(four_channel_package, tmp_path):
    good = four_channel_package.path
    with pytest.raises(ExportError, match=r"edited\.zip: bioimageio\.spec finds the package invalid \(outputs\.0\."
                       r"test_tensor: .*SHA256 mismatch"):
        verify(_tampered(good, tmp_path / "edited.zip", rehash=False))
    with pytest.raises(ExportError, match=r"wrong\.zip: bioimageio\.core's test_model fails on the package"):
        verify(_tampered(good, tmp_path / "wrong.zip", rehash=True))


def test_the_package_documentation_gives_the_temperature():
    card = ModelCard("resnet18", ["a", "b"], [0.5] * 3, [0.25] * 3, 32, temperature=[1.25])
    docs = documentation(card, None, identifiers(card.class_names))
    assert "temperature fitted on validation (1.25)" in docs and "the log of the probabilities" in docs
    assert "temperature" not in documentation(ModelCard("resnet18", ["a", "b"], [0.5] * 3, [0.25] * 3, 32), None,
                                              ["a", "b"])
