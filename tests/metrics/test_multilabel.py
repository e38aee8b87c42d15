import numpy as np
import pytest

from celltune.metrics.multilabel import multilabel_metrics, tune_thresholds


def test_multilabel_metrics_by_hand():
    y = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    probs = np.array([[0.9, 0.2], [0.4, 0.8], [0.6, 0.3], [0.1, 0.1]])
    m = multilabel_metrics(y, probs, ["a", "b"])  # at 0.5: a predicted for rows 0, 2; b for row 1
    a, b = m.per_class
    assert (a.precision, a.recall) == (0.5, 0.5) and (b.precision, b.recall) == (1.0, 0.5)
    assert m.macro_f1 == pytest.approx((0.5 + 2 / 3) / 2)
    assert m.micro_f1 == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))  # tp 2, fp 1, fn 2
    assert m.exact_match == pytest.approx(2 / 4)  # rows 0 and 3
    assert a.frequency == 0.5 and a.roc_auc == pytest.approx(0.75) and a.threshold == 0.5


def test_thresholds_are_tuned_per_label_for_f1():
    y = np.array([[1, 0], [1, 0], [0, 1], [0, 0]])
    probs = np.array([[0.3, 0.9], [0.25, 0.1], [0.1, 0.95], [0.05, 0.92]])
    t = tune_thresholds(y, probs)
    assert 0.1 < t[0] <= 0.25  # label a: positives at 0.3 and 0.25, negatives at 0.1 and 0.05
    assert t[1] == 0.95  # label b: only the 0.95 image is positive
    assert tune_thresholds(np.zeros((3, 1)), np.full((3, 1), 0.7)) == [0.5]
