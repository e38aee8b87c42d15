import json

import numpy as np
import pytest

from celltune.metrics.classification import classification_metrics, confusion_matrix
from celltune.metrics.results import labelled, result_from_dict
from celltune.metrics.stats import bootstrap_intervals


def test_confusion_matrix_rows_true_columns_predicted():
    cm = confusion_matrix([0, 0, 1, 2], [0, 1, 1, 1], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]


def test_metrics_on_a_hand_worked_example():
    # class 0: 3 of 4 right; class 1: 1 of 1; class 2: 0 of 1 -> accuracy 4/6, ACA (0.75 + 1 + 0) / 3
    y_true = [0, 0, 0, 0, 1, 2]
    y_pred = [0, 0, 0, 1, 1, 1]
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m.accuracy == pytest.approx(4 / 6)
    assert m.mean_class_accuracy == pytest.approx((0.75 + 1 + 0) / 3)
    a, b, c = m.per_class
    assert (b.name, b.precision, b.recall) == ("b", pytest.approx(1 / 3), 1.0)
    assert b.f1 == pytest.approx(2 * (1 / 3) / (1 / 3 + 1))
    assert c.f1 == 0.0 and a.support == 4
    assert m.macro_f1 == pytest.approx(np.mean([r.f1 for r in m.per_class]))
    assert m.confusion_matrix[0] == [3, 1, 0]
    assert m.roc_auc_macro is None and m.expected_calibration_error is None  # no probabilities given


def test_weighted_f1_by_hand_with_its_interval_and_from_older_files():
    # true  [a a a b b], predicted [a a b b c]; c is predicted once but has no true image
    # a: P 2/2, R 2/3 -> F1 2 * 1 * 2/3 / (1 + 2/3) = 0.8;  b: P 1/2, R 1/2 -> F1 0.5;  c: F1 0, weight 0
    # weighted F1 = (3 * 0.8 + 2 * 0.5 + 0 * 0) / 5 = 3.4 / 5 = 0.68 (sklearn f1_score(average="weighted") gives the
    # same); macro-F1 leaves c out: (0.8 + 0.5) / 2 = 0.65
    y_true, y_pred = np.array([0, 0, 0, 1, 1]), np.array([0, 0, 1, 1, 2])
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m.weighted_f1 == pytest.approx(0.68)
    assert m.macro_f1 == pytest.approx(0.65)
    # the first hand-worked example: F1 a 6/7 (4 images), b 1/2 (1), c 0 (1) -> (4 * 6/7 + 1/2) / 6 = 55/84
    assert classification_metrics([0, 0, 0, 0, 1, 2], [0, 0, 0, 1, 1, 1], ["a", "b", "c"]).weighted_f1 == \
        pytest.approx(55 / 84)
    assert "weighted_f1" not in m.headline()  # reported, not tracked per epoch
    assert ("weighted_f1", "weighted F1", m.weighted_f1) in labelled(m)
    low, high = bootstrap_intervals(y_true, y_pred, num_classes=3, resamples=200)["weighted_f1"]
    assert low <= m.weighted_f1 <= high
    # metrics.json and checkpoints written before weighted F1 existed: the same number from the per-class rows
    older = {k: v for k, v in json.loads(json.dumps(m.to_dict())).items() if k != "weighted_f1"}
    assert result_from_dict(older).weighted_f1 == pytest.approx(0.68)


def test_aca_ignores_classes_absent_from_the_split():
    m = classification_metrics([0, 0, 1], [0, 0, 0], ["a", "b", "c"])
    assert m.mean_class_accuracy == pytest.approx(0.5)  # (1 + 0) / 2; c has no samples
    assert m.per_class[2].support == 0


def test_probability_metrics_auc_and_calibration():
    y = np.array([0, 0, 1, 1, 2, 2])
    perfect = np.eye(3)[y] * 0.9 + 0.1 / 3
    m = classification_metrics(y, perfect.argmax(1), ["a", "b", "c"], probs=perfect)
    assert m.roc_auc_macro == pytest.approx(1.0)
    assert m.per_class[1].roc_auc == pytest.approx(1.0)
    # Every prediction right at confidence 0.9333: the calibration gap is 1 - 0.9333.
    assert m.expected_calibration_error == pytest.approx(1 - (0.9 + 0.1 / 3), abs=1e-5)
    # Class c's scores ranked backwards: its AUC is 0.
    flipped = perfect.copy()
    flipped[:, 2] = 1 - flipped[:, 2]
    assert classification_metrics(y, y, ["a", "b", "c"], probs=flipped).per_class[2].roc_auc == 0.0


def test_auc_is_none_for_a_class_without_positives_and_most_confused_pairs():
    y_true = np.array([0, 0, 0, 1, 1])
    y_pred = np.array([1, 1, 0, 1, 0])
    probs = np.array([[0.4, 0.5, 0.1], [0.3, 0.6, 0.1], [0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"], probs=probs)
    assert m.per_class[2].roc_auc is None
    assert m.roc_auc_macro == pytest.approx(np.mean([m.per_class[0].roc_auc, m.per_class[1].roc_auc]))
    top = m.most_confused[0]
    assert (top.true, top.predicted, top.count, top.fraction_of_true) == ("a", "b", 2, 2 / 3)
    assert m.most_confused[1].true == "b" and len(m.most_confused) == 2
    assert m.mean_class_accuracy == pytest.approx((1 / 3 + 1 / 2) / 2)
