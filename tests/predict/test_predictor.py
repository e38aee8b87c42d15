from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from celltune.data.images import load_input
from celltune.data.transforms import NormalizeBatch, eval_transform
from celltune.errors import ConfigError
from celltune.metrics import conformal
from celltune.models.factory import create_model
from celltune.predict.predictor import Prediction, Predictor, batch_probs, inputs_under, predict_probs

from conftest import random_checkpoint


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


def test_multilabel_rows_list_the_labels_at_or_above_their_thresholds():
    pred = Prediction(path=Path("x.png"), probs=[0.9, 0.2, 0.55, 0.5])
    assert pred.above(["a", "b", "c", "d"], [0.5, 0.5, 0.6, 0.5]) == [("a", 0.9), ("d", 0.5)]


def test_folders_are_read_without_their_hidden_files(tmp_path):
    for name in ("a/1.png", "a/.DS_169665.png", "a/._1.png", "__MACOSX/a/._1.png", ".thumbs/1.png", "b/2.tif"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in inputs_under(tmp_path)] == ["a/1.png", "b/2.tif"]


def test_predictor_rescales_by_the_cards_temperature_unless_told_not_to(tiny_data, tmp_path):
    names = [str(i) for i in range(6)]
    checkpoint = random_checkpoint(tmp_path / "best.pt", names, temperature=[3.0], conformal_scores=[0.5] * 30)
    paths = list(inputs_under(tiny_data / "test"))[:4]
    raw = Predictor(checkpoint, device=torch.device("cpu"), calibrate="none")
    assert raw.card.temperature is None and raw.card.conformal_scores is None
    scaled = Predictor(checkpoint, device=torch.device("cpu"))
    raw_probs = np.array([p.probs for p in raw.predict_paths(paths)])
    got = np.array([p.probs for p in scaled.predict_paths(paths)])
    by_hand = np.exp(np.log(raw_probs) / 3.0)
    assert got == pytest.approx(by_hand / by_hand.sum(1, keepdims=True), abs=1e-5)
    assert (got.argmax(1) == raw_probs.argmax(1)).all() and got.max() < raw_probs.max()
    with pytest.raises(ConfigError, match="celltune calibrate RUN_DIR --data DATA_DIR"):
        raw.set_limit(0.95)  # --calibrate none: no scores to make sets with


def test_prediction_set_at_a_limit():
    pred = Prediction(path=Path("x.png"), probs=[0.2, 0.5, 0.3])
    u = conformal.draw([pred.path])[0]
    # Scores as if each class were the true one, most probable first: 0.5u, 0.5 + 0.3u, 0.8 + 0.2u.
    assert pred.prediction_set(["a", "b", "c"], 0.5 + 0.3 * u) == ["b", "c"]
    assert pred.prediction_set(["a", "b", "c"], 0.0) == ["b"]
