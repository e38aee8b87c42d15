import pytest
import torch
from torch import nn

from celltune.errors import ConfigError
from celltune.models import create_model
from celltune.predict import batch_probs, predict_probs
from celltune.transforms import NormalizeBatch

from conftest import quick_config


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


@pytest.mark.slow
def test_streaming_csv_resumes_after_an_interruption(tiny_data, tmp_path):
    import csv

    from celltune.predict import Predictor, inputs_under, predict_to_csv
    from celltune.train import fit

    run = fit(quick_config(tiny_data, tmp_path, epochs=1, max_steps_per_epoch=1))
    predictor = Predictor(run)
    paths = list(inputs_under(tiny_data / "test"))
    full = tmp_path / "full.csv"
    assert predict_to_csv(predictor, iter(paths), full, batch_size=5) == 18
    reference = full.read_text().splitlines()

    # An interrupted run: 7 rows done and the 8th cut off mid-line.
    partial = tmp_path / "partial.csv"
    partial.write_text("\n".join(reference[:8]) + "\n" + reference[8][:15])
    assert predict_to_csv(predictor, iter(paths), partial, batch_size=5, resume=True) == 11
    assert partial.read_text().splitlines() == reference
    assert predict_to_csv(predictor, iter(paths), partial, batch_size=5, resume=True) == 0
    rows = list(csv.DictReader(full.open()))
    assert [r["path"] for r in rows] == [str(p) for p in paths]


def test_streaming_reads_paths_lazily(tiny_data, tmp_path, monkeypatch):
    """Only one batch of paths is taken from the iterator before its predictions are written."""
    from celltune.predict import Prediction, Predictor, inputs_under, predict_to_csv

    predictor = Predictor.__new__(Predictor)
    predictor.card = type("Card", (), {"multilabel": False, "class_names": ["a", "b"]})()
    taken = []
    calls = []

    def fake_predict(batch, batch_size):
        calls.append(len(batch))
        assert len(taken) <= 4 * len(calls)  # the stream is read one batch at a time, never further ahead
        return [Prediction(p, [0.25, 0.75]) for p in batch]

    def stream():
        for p in inputs_under(tiny_data / "test"):
            taken.append(p)
            yield p

    monkeypatch.setattr(predictor, "predict_paths", fake_predict, raising=False)
    monkeypatch.setattr(Predictor, "class_names", property(lambda self: ["a", "b"]))
    assert predict_to_csv(predictor, stream(), tmp_path / "s.csv", batch_size=4) == 18
    assert calls == [4, 4, 4, 4, 2]
