import csv
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from celltune.errors import ConfigError, ExistsError
from celltune.images import load_input
from celltune.models import create_model
from celltune.predict import (
    BatchOutcome,
    Prediction,
    Predictor,
    batch_probs,
    inputs_under,
    predict_probs,
    predict_to_csv,
)
from celltune.transforms import NormalizeBatch, eval_transform

from conftest import bomb_png, random_checkpoint


class _Corner(nn.Module):
    """Logits from the top-left pixel only, so each flip/rotation view gives a different answer."""

    def forward(self, x):  # (B, 3, H, W) -> (B, 2)
        v = x[:, 0, 0, 0]
        return torch.stack([v, -v], dim=1)


def test_tta_averages_softmax_over_the_views():
    x = torch.zeros(1, 3, 4, 4)
    x[0, 0, 0, 0] = 2.0  # only the identity view (and the transpose-like ones keeping this corner) see it
    model = _Corner()
    none = batch_probs(model, x, "none")
    assert none[0, 0] == pytest.approx(torch.softmax(torch.tensor([2.0, -2.0]), 0)[0])
    flips = batch_probs(model, x, "flips")
    seen, unseen = torch.softmax(torch.tensor([2.0, -2.0]), 0), torch.softmax(torch.tensor([0.0, 0.0]), 0)
    assert torch.allclose(flips[0], (seen + 3 * unseen) / 4)
    dihedral = batch_probs(model, x, "dihedral")
    # Of the 8 symmetries of the square, 2 keep the top-left corner in place (identity and the diagonal mirror).
    assert torch.allclose(dihedral[0], (2 * seen + 6 * unseen) / 8)
    assert torch.allclose(dihedral.sum(1), torch.ones(1))


def test_inference_in_channels_last_gives_the_contiguous_results():
    torch.manual_seed(0)
    model, _ = create_model("resnet18", num_classes=4, pretrained=False)
    images = torch.randn(6, 3, 32, 32)
    with torch.inference_mode():
        expected = model.eval()(images).softmax(1)
    probs = predict_probs(model, [(images[:4],), (images[4:],)], device=torch.device("cpu"))
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(torch.from_numpy(probs), expected, atol=1e-5)
    model.train()(images).sum().backward()  # still trainable: no inference tensors left in the model


def test_uint8_batches_are_prepared_on_the_device_as_the_float_ones_predict():
    torch.manual_seed(0)
    model, _ = create_model("resnet18", num_classes=4, pretrained=False)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    normalize = NormalizeBatch((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    expected = predict_probs(model, [(normalize(images),)], device=torch.device("cpu"))
    probs = predict_probs(model, [(images[:4],), (images[4:],)], device=torch.device("cpu"), prepare=normalize)
    assert probs.shape == (6, 4) and torch.allclose(torch.from_numpy(probs), torch.from_numpy(expected), atol=1e-5)


def test_unknown_tta_is_rejected():
    with pytest.raises(ConfigError, match="dihedral"):
        batch_probs(_Corner(), torch.zeros(1, 3, 2, 2), "spin")


def test_predictor_applies_the_cards_preprocessing(tiny_data, tmp_path):
    predictor = Predictor(random_checkpoint(tmp_path / "best.pt", [str(i) for i in range(6)]),
                          device=torch.device("cpu"))
    path = next(inputs_under(tiny_data / "test"))
    image = eval_transform(image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)(load_input(path))
    with torch.inference_mode():
        expected = predictor.model(image[None]).softmax(1)[0]
    (pred,) = predictor.predict_paths([path])
    assert pred.path == path and torch.allclose(torch.tensor(pred.probs), expected, atol=1e-5)
    assert pred.topk(predictor.class_names, 2)[0][1] == pytest.approx(float(expected.max()), abs=1e-5)


def test_streaming_csv_resumes_after_an_interruption(tiny_data, tmp_path):
    predictor = Predictor(random_checkpoint(tmp_path / "best.pt", [str(i) for i in range(6)]))
    paths = list(inputs_under(tiny_data / "test"))
    full = tmp_path / "full.csv"
    assert predict_to_csv(predictor, iter(paths), full, batch_size=5).written == 18
    reference = full.read_text().splitlines()

    # An interrupted run: 7 rows done and the 8th cut off mid-line.
    partial = tmp_path / "partial.csv"
    partial.write_text("\n".join(reference[:8]) + "\n" + reference[8][:15])
    resumed = predict_to_csv(predictor, iter(paths), partial, batch_size=5, resume=True)
    assert resumed == BatchOutcome(written=11, failed=0, skipped=7)
    assert partial.read_text().splitlines() == reference
    assert predict_to_csv(predictor, iter(paths), partial, batch_size=5, resume=True).written == 0
    rows = list(csv.DictReader(full.open()))
    assert [r["path"] for r in rows] == [str(p) for p in paths]
    other = Predictor(random_checkpoint(tmp_path / "other.pt", ["a", "b"]))
    with pytest.raises(ExistsError, match="columns are not this model's"):
        predict_to_csv(other, iter(paths), partial, resume=True)


def test_streaming_reads_paths_one_batch_ahead_at_most(tiny_data, tmp_path, monkeypatch):
    """Only one batch of paths is taken from the iterator before its predictions are written."""
    predictor = Predictor(random_checkpoint(tmp_path / "best.pt", [str(i) for i in range(6)]))
    taken: list = []
    batches: list[int] = []
    real_predict = predictor.predict_paths

    def spy(batch, batch_size):  # the real prediction, watched
        batches.append(len(batch))
        assert len(taken) <= sum(batches)  # the stream was read no further than this batch
        return real_predict(batch, batch_size)

    def stream():
        for p in inputs_under(tiny_data / "test"):
            taken.append(p)
            yield p

    monkeypatch.setattr(predictor, "predict_paths", spy)
    out = tmp_path / "s.csv"
    assert predict_to_csv(predictor, stream(), out, batch_size=4).written == 18
    assert batches == [4, 4, 4, 4, 2] and len(list(csv.DictReader(out.open()))) == 18


def test_multilabel_rows_list_the_labels_at_or_above_their_thresholds():
    pred = Prediction(path=Path("x.png"), probs=[0.9, 0.2, 0.55, 0.5])
    assert pred.above(["a", "b", "c", "d"], [0.5, 0.5, 0.6, 0.5]) == [("a", 0.9), ("d", 0.5)]


def _damaged_copy(source: Path, target: Path) -> dict[str, str]:
    """``source``'s images under ``target`` with four of them damaged: truncated, zero bytes, text, a bomb header.
    Returns {damaged path: the words its error must hold}."""
    shutil.copytree(source, target)
    files = sorted(target.rglob("*.png"))
    truncated, empty, text, bomb = files[1], files[6], files[7], files[12]
    truncated.write_bytes(truncated.read_bytes()[:60])
    empty.write_bytes(b"")
    text.write_text("not an image")
    bomb_png(bomb)
    return {str(truncated): "cannot read image", str(empty): "cannot read image", str(text): "cannot read image",
            str(bomb): "900,000,000 pixels"}


def test_a_damaged_folder_gets_every_good_row_and_a_reason_for_each_bad_one(tiny_data, tmp_path):
    predictor = Predictor(random_checkpoint(tmp_path / "best.pt", [str(i) for i in range(6)]))
    clean_csv, damaged_csv = tmp_path / "clean.csv", tmp_path / "damaged.csv"
    predict_to_csv(predictor, inputs_under(tiny_data / "test"), clean_csv, batch_size=4)
    damaged = _damaged_copy(tiny_data / "test", tmp_path / "damaged")
    outcome = predict_to_csv(predictor, inputs_under(tmp_path / "damaged"), damaged_csv, batch_size=4)
    assert outcome == BatchOutcome(written=18, failed=4, skipped=0)
    rows, clean = list(csv.DictReader(damaged_csv.open())), list(csv.DictReader(clean_csv.open()))
    assert len(rows) == 18
    for row, reference in zip(rows, clean, strict=True):
        if row["path"] in damaged:
            assert damaged[row["path"]] in row["error"] and row["predicted"] == row["confidence"] == row["p_0"] == ""
        else:  # the same probabilities as in the undamaged folder: a bad neighbour in the batch changes nothing
            assert row["error"] == "" and {k: v for k, v in row.items() if k.startswith("p_")} == {
                k: v for k, v in reference.items() if k.startswith("p_")}
    # Resuming skips every row written, error rows included: nothing is predicted again.
    lines = damaged_csv.read_text().splitlines()
    damaged_csv.write_text("\n".join(lines[:10]) + "\n")
    assert predict_to_csv(predictor, inputs_under(tmp_path / "damaged"), damaged_csv, batch_size=4,
                          resume=True) == BatchOutcome(written=9, failed=4, skipped=9)
    assert damaged_csv.read_text().splitlines() == lines
