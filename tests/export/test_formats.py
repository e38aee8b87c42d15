"""Exports leave celltune only after they computed what the PyTorch model computes, on images of the run."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from celltune.cli import main
from celltune.config.recipes import save_config
from celltune.data.synthetic import HPA_CHANNELS
from celltune.errors import CheckpointError, MissingError
from celltune.export.formats import OPSET, TOLERANCE, ExportError, export_run
from celltune.models.checkpoint import load_checkpoint
from celltune.predict.onnx_model import CARD_KEY, read_onnx_card
from celltune.predict.predictor import Predictor, inputs_under
from celltune.predict.to_csv import predict_to_csv

from conftest import quick_config, random_checkpoint

NAMES = ["centromere", "golgi", "homogeneous", "nucleolar", "numem", "speckled"]


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory):
    """A run directory as training leaves it: best.pt and the config.yaml that names the data."""
    run = tmp_path_factory.mktemp("run")
    random_checkpoint(run / "best.pt", NAMES, temperature=[1.7], conformal_scores=[0.2, 0.4, 0.6])
    save_config(quick_config(tiny_data, run.parent), run / "config.yaml")
    return run


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    """The run's ONNX export, written once for the tests that read it (the dynamo exporter takes seconds)."""
    return export_run(run, format="onnx", out=tmp_path_factory.mktemp("export") / "m.onnx")


def _logits(checkpoint, images: torch.Tensor) -> torch.Tensor:
    model, _, _ = load_checkpoint(checkpoint)
    with torch.inference_mode():
        return model(images)


@pytest.mark.slow  # bioimageio's test_model or the ONNX exporter: seconds each
@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_an_export_round_trips_with_its_card_and_any_batch_size(run, exported, fmt, tmp_path):
    check = exported if fmt == "onnx" else export_run(run, format=fmt, out=tmp_path / f"m.{fmt}")
    assert check.source == "test images" and check.images == 8 and check.max_abs_diff <= 1e-4
    images = torch.randn(5, 3, 32, 32)  # a batch size the export never saw
    expected = _logits(run, images)
    if fmt == "onnx":
        proto = onnx.load(str(check.path))
        assert proto.opset_import[0].version >= 17 and not any(
            t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)  # weights inside
        meta = {p.key: p.value for p in proto.metadata_props}
        assert json.loads(meta["class_names"]) == NAMES and json.loads(meta["mean"]) == [0.5] * 3
        assert meta["image_size"] == "32" and read_onnx_card(check.path).class_names == NAMES
        assert read_onnx_card(check.path).temperature == [1.7]  # the calibration travels with the model
        import onnxruntime as ort

        session = ort.InferenceSession(str(check.path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: images.numpy()})[0])
    else:
        extra = {f"{CARD_KEY}.json": ""}
        got = torch.export.load(check.path, extra_files=extra).module()(images)
        assert json.loads(extra[f"{CARD_KEY}.json"])["class_names"] == NAMES
        assert json.loads(extra[f"{CARD_KEY}.json"])["conformal_scores"] == [0.2, 0.4, 0.6]
    assert OPSET >= 17 and torch.allclose(got, expected, atol=1e-4, rtol=0)


@pytest.mark.slow  # bioimageio's test_model or the ONNX exporter: seconds each
def test_a_four_channel_model_without_its_data_is_checked_on_synthetic_images(tmp_path):
    checkpoint = random_checkpoint(tmp_path / "four" / "best.pt", ["a", "b"], channels=list(HPA_CHANNELS))
    check = export_run(checkpoint.parent, format="onnx")  # no config.yaml: the data is gone
    assert check.path == tmp_path / "four" / "best.onnx" and check.source == "synthetic"
    assert read_onnx_card(check.path).channels == list(HPA_CHANNELS)
    images = torch.randn(3, 4, 32, 32)
    got = Predictor(check.path).model(images)
    assert got.shape == (3, 2) and torch.allclose(got, _logits(checkpoint, images), atol=1e-4, rtol=0)


def test_an_export_that_computes_otherwise_is_an_error_not_a_silent_file(run, tmp_path, monkeypatch):
    import celltune.export.formats as export

    real = export._check_pt2
    monkeypatch.setattr(export, "_check_pt2", lambda path, inputs: real(path, inputs) + 0.01)
    with pytest.raises(ExportError, match=r"m\.pt2: the export's logits differ .* by up to 0\.01.*do not use it"):
        export_run(run, format="pt2", out=tmp_path / "m.pt2")


@pytest.mark.slow  # bioimageio's test_model or the ONNX exporter: seconds each
def test_a_torn_export_or_a_run_without_best_pt_is_one_clear_error(exported, tmp_path):
    good = exported.path
    torn = tmp_path / "torn.onnx"
    torn.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"torn\.onnx: not a readable ONNX model"):
        Predictor(torn)
    stripped = onnx.load(str(good))
    del stripped.metadata_props[:]
    onnx.save(stripped, str(tmp_path / "foreign.onnx"))
    with pytest.raises(CheckpointError, match=r"foreign\.onnx: an ONNX model without celltune's metadata"):
        Predictor(tmp_path / "foreign.onnx")
    with pytest.raises(MissingError, match="no checkpoint here"):
        export_run(tmp_path / "empty_run", format="pt2")


def test_export_from_the_command_line(run, tmp_path, capsys):
    assert main(["-q", "export", str(run), "--format", "pt2", "--out", str(tmp_path / "m.pt2")]) == 0
    assert re.fullmatch(rf"wrote {tmp_path}/m\.pt2 \(pt2\); checked on 8 test images: max abs logit difference from "
                        r"the PyTorch model \d\.\d\de[+-]\d\d \(tolerance 0\.0001\)\n", capsys.readouterr().out)


@pytest.mark.slow  # bioimageio's test_model or the ONNX exporter: seconds each
def test_predict_on_the_onnx_export_equals_predict_on_the_run(run, exported, tiny_data, tmp_path, capsys):
    onnx_path = exported.path
    folder = tiny_data / "test"
    for model, out in ((run, tmp_path / "torch.csv"), (onnx_path, tmp_path / "onnx.csv")):
        predict_to_csv(Predictor(model, device=torch.device("cpu")), inputs_under(folder), out)
    a, b = (list(csv.DictReader(p.open())) for p in (tmp_path / "torch.csv", tmp_path / "onnx.csv"))
    assert [r["path"] for r in a] == [r["path"] for r in b] and [r["predicted"] for r in a] == [
        r["predicted"] for r in b]
    probs = [np.array([[float(r[f"p_{n}"]) for n in NAMES] for r in rows]) for rows in (a, b)]
    # The export's promise is on logits (TOLERANCE); softmax moves no probability by more than half the largest logit
    # change. 1e-6: the CSV's rounding to 6 decimals.
    assert np.abs(probs[0] - probs[1]).max() <= TOLERANCE / 2 + 1e-6
    # The export's card carries the validation scores of prediction sets: ceil(4 * 0.5) = the 2nd of 0.2, 0.4, 0.6.
    assert Predictor(onnx_path).set_limit(0.5) == Predictor(run, device=torch.device("cpu")).set_limit(0.5) == 0.4
    image = next(inputs_under(folder))
    assert main(["-q", "predict", str(onnx_path), str(image), "--topk", "2"]) == 0
    assert main(["-q", "predict", str(run), str(image), "--topk", "2"]) == 0
    by_onnx, by_torch = ([a.rsplit(" ", 1) for a in line.split(": ", 1)[1].split(", ")]
                         for line in capsys.readouterr().out.splitlines())
    assert [name for name, _ in by_onnx] == [name for name, _ in by_torch]
    for (_, p), (_, q) in zip(by_onnx, by_torch, strict=True):  # printed to 3 decimals: at most one unit apart
        assert abs(float(p) - float(q)) <= 1e-3 + 1e-9


@pytest.mark.slow  # bioimageio's test_model or the ONNX exporter: seconds each
def test_the_example_without_torch_predicts_as_celltune_does(exported, tiny_data, tmp_path):
    """examples/onnx_without_torch.py, run with torch made unimportable, on the run's test images plus a larger RGB
    and a 16-bit grey image (short side resized, centre crop): the same probabilities as celltune's predict."""
    rng = np.random.default_rng(3)
    extra = [tmp_path / "wide.png", tmp_path / "grey16.png"]
    Image.fromarray(rng.integers(0, 255, (50, 77, 3), dtype=np.uint8)).save(extra[0])
    Image.fromarray(rng.integers(0, 65535, (45, 40), dtype=np.uint16)).save(extra[1])
    images = [*list(inputs_under(tiny_data / "test"))[:6], *extra]
    script = Path(__file__).resolve().parents[2] / "examples" / "onnx_without_torch.py"
    blocked = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = sys.argv[1:]; "
               "runpy.run_path(sys.argv[0], run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", blocked, str(script), str(exported.path), *map(str, images),
                          "--topk", "6"], capture_output=True, text=True, check=True).stdout.splitlines()
    expected = Predictor(exported.path).predict_paths(images)
    for line, prediction in zip(out, expected, strict=True):
        path, _, answers = line.partition(": ")
        got = {name: float(p) for name, p in (a.rsplit(" ", 1) for a in answers.split(", "))}
        assert path == str(prediction.path)
        assert max(abs(got[n] - p) for n, p in zip(NAMES, prediction.probs, strict=True)) <= 2e-3  # 3 decimals
