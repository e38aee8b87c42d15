import numpy as np
import pytest

from celltune.metrics.classification import classification_metrics
from celltune.metrics.multilabel import multilabel_metrics
from celltune.metrics.stats import (
    bootstrap_intervals,
    mcnemar_exact,
    multilabel_scores,
    paired_differences,
    resample_counts,
    single_label_scores,
)


def test_mcnemar_exact_on_hand_computed_tables():
    # 2 against 8 discordant images: P(X <= 2) for X ~ Binomial(10, 1/2) is (1 + 10 + 45) / 1024, doubled.
    assert mcnemar_exact(2, 8) == pytest.approx(2 * 56 / 1024)
    assert mcnemar_exact(8, 2) == mcnemar_exact(2, 8)
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(4, 4) == 1.0 and mcnemar_exact(0, 0) == 1.0


def _predictions(n: int, accuracy: float, classes: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, n)
    wrong = (truth + rng.integers(1, classes, n)) % classes
    return truth, np.where(rng.random(n) < accuracy, truth, wrong)


def test_resampling_within_classes_keeps_every_class_count():
    truth = np.array([0, 0, 0, 1, 1, 2])
    counts = resample_counts(truth, 6, resamples=50, seed=1)
    assert counts.shape == (50, 6) and (counts[:, :3].sum(1) == 3).all() and (counts[:, 3:5].sum(1) == 2).all()
    assert (counts[:, 5] == 1).all() and len({tuple(r) for r in counts}) > 10


def test_one_draw_of_each_image_scores_as_the_point_metrics():
    truth, predicted = _predictions(300, 0.7, classes=5)
    scores = single_label_scores(np.ones((1, 300)), truth, predicted, 5)
    m = classification_metrics(truth, predicted, list("abcde"))
    assert scores["accuracy"][0] == pytest.approx(m.accuracy)
    assert scores["mean_class_accuracy"][0] == pytest.approx(m.mean_class_accuracy)
    assert scores["macro_f1"][0] == pytest.approx(m.macro_f1)
    y = (np.random.default_rng(2).random((40, 3)) < 0.4).astype(int)
    probs = np.random.default_rng(3).random((40, 3))
    ml = multilabel_metrics(y, probs, list("xyz"))
    scores = multilabel_scores(np.ones((1, 40)), y, (probs >= 0.5).astype(int))
    assert (scores["macro_f1"][0], scores["micro_f1"][0], scores["exact_match"][0]) == pytest.approx(
        (ml.macro_f1, ml.micro_f1, ml.exact_match))


def test_intervals_contain_the_estimate_and_narrow_as_the_sample_grows():
    widths = {}
    for n in (100, 2500):
        truth, predicted = _predictions(n, 0.8)
        point = classification_metrics(truth, predicted, list("abcd"))
        ci = bootstrap_intervals(truth, predicted, num_classes=4, resamples=1000, seed=0)
        for name, value in point.headline().items():
            low, high = ci[name]
            assert low <= value <= high, (n, name)
        widths[n] = ci["accuracy"][1] - ci["accuracy"][0]
    # The width falls as 1 / sqrt(n): 25 times the images, about a fifth of the width.
    assert 0.12 < widths[2500] / widths[100] < 0.3
    assert bootstrap_intervals(*_predictions(100, 0.8), num_classes=4, seed=5) == bootstrap_intervals(
        *_predictions(100, 0.8), num_classes=4, seed=5)


def test_paired_differences_of_one_model_with_itself_are_zero_and_of_a_better_one_positive():
    truth, worse = _predictions(500, 0.7)
    better = np.where(np.random.default_rng(9).random(500) < 0.5, truth, worse)  # half the mistakes fixed
    same = paired_differences(truth, worse, worse, num_classes=4)
    assert all(d == 0 and ci == [0.0, 0.0] for d, ci in same.values())
    gain = paired_differences(truth, better, worse, num_classes=4)
    diff, (low, high) = gain["accuracy"]
    assert diff == pytest.approx((better == truth).mean() - (worse == truth).mean())
    assert 0 < low <= diff <= high
