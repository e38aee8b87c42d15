import numpy as np
import pytest

from celltune.metrics.calibration import (
    MIN_IMAGES,
    calibration_error,
    fit_temperature,
    reliability,
    uncalibrated,
    with_temperature,
)
from celltune.models.checkpoint import ModelCard


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_temperature_divides_the_logits_hand_worked():
    # softmax([2, 0]) = [0.8808, 0.1192]; at T = 2 it is softmax([1, 0]) = [0.7311, 0.2689].
    probs = np.array([[0.880797, 0.119203]], dtype=np.float32)
    assert with_temperature(probs, [2.0], multilabel=False) == pytest.approx(np.array([[0.731059, 0.268941]]), abs=1e-5)
    # The same numbers as two independent sigmoid labels: sigmoid(2) = 0.8808 -> sigmoid(1) = 0.7311, and
    # sigmoid(-2) = 0.1192 at T = 0.5 -> sigmoid(-4) = 0.0180.
    expected = np.array([[0.731059, 0.017986]])
    assert with_temperature(probs, [2.0, 0.5], multilabel=True) == pytest.approx(expected, abs=1e-5)
    assert with_temperature(probs, None, multilabel=False) is probs


def test_temperature_keeps_every_top_class():
    probs = _softmax(np.random.default_rng(0).normal(size=(200, 5)) * 3)
    for t in (0.3, 1.7, 8.0):
        assert (with_temperature(probs, [t], multilabel=False).argmax(1) == probs.argmax(1)).all()


def _overconfident(n=4000, classes=4, factor=2.5, seed=0):
    """Labels drawn from softmax(z); the model says softmax(factor * z): over-confident by ``factor``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, classes)) * 1.5
    truth = np.array([rng.choice(classes, p=p) for p in _softmax(z)])
    return _softmax(factor * z).astype(np.float32), truth


def test_fit_finds_a_known_over_confidence_and_halves_the_error():
    probs, truth = _overconfident(factor=2.5)
    (t,) = fit_temperature(probs, truth, multilabel=False)
    assert t == pytest.approx(2.5, rel=0.1)
    before = calibration_error(truth, probs)
    after = calibration_error(truth, with_temperature(probs, [t], multilabel=False))
    assert after <= before / 2


def test_fit_per_label_finds_over_and_under_confidence():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(4000, 2)) * 2
    truth = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(int)
    probs = 1 / (1 + np.exp(-z * np.array([3.0, 0.5])))  # label 0 over-confident, label 1 under-confident
    t0, t1 = fit_temperature(probs.astype(np.float32), truth, multilabel=True)
    assert t0 == pytest.approx(3.0, rel=0.1) and t1 == pytest.approx(0.5, rel=0.1)
    # A label with only one kind of answer on validation has nothing to fit: 1.0.
    truth[:, 1] = 0
    assert fit_temperature(probs.astype(np.float32), truth, multilabel=True)[1] == 1.0


def test_too_few_validation_images_fit_nothing():
    probs, truth = _overconfident(n=MIN_IMAGES - 1)
    assert fit_temperature(probs, truth, multilabel=False) is None


def test_reliability_and_calibration_error_hand_worked():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.7, 0.3]])
    truth = np.array([0, 1, 0])  # right at 0.9, wrong at 0.6, right at 0.7
    bins = reliability(truth, probs)
    # 15 bins of width 1/15, each (lower, upper]: 0.6 -> bin 8, 0.7 -> bin 10, 0.9 -> bin 13.
    expected = np.array([[8 / 15, 0.6, 0.0, 1], [10 / 15, 0.7, 1.0, 1], [13 / 15, 0.9, 1.0, 1]])
    assert np.array(bins) == pytest.approx(expected)
    assert calibration_error(truth, probs) == pytest.approx((0.6 + 0.3 + 0.1) / 3)
    # Multi-label: each label's sigmoid as a two-class problem, averaged over labels having both answers.
    ml_truth = np.array([[1, 0], [0, 0], [1, 0]])
    ml = calibration_error(ml_truth, probs[:, :1], multilabel=True)
    assert ml == pytest.approx(calibration_error(ml_truth[:, 0], np.c_[1 - probs[:, 0], probs[:, 0]]))
    assert calibration_error(truth[:0], probs[:0]) is None


def test_uncalibrated_card_drops_temperature_and_sets():
    card = ModelCard("resnet18", ["a", "b"], [0.5] * 3, [0.25] * 3, 32, temperature=[1.5], conformal_scores=[0.1])
    plain = uncalibrated(card)
    assert plain.temperature is None and plain.conformal_scores is None and plain.class_names == ["a", "b"]
