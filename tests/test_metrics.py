import numpy as np
import pytest

from celltune.metrics import classification_metrics, confusion_matrix


def test_confusion_matrix_rows_true_columns_predicted():
    cm = confusion_matrix([0, 0, 1, 2], [0, 1, 1, 1], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]


def test_metrics_on_a_hand_worked_example():
    # class 0: 3 of 4 right; class 1: 1 of 1; class 2: 0 of 1 -> accuracy 4/6, ACA (0.75 + 1 + 0) / 3
    y_true = [0, 0, 0, 0, 1, 2]
    y_pred = [0, 0, 0, 1, 1, 1]
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["mean_class_accuracy"] == pytest.approx((0.75 + 1 + 0) / 3)
    b = m["per_class"]["b"]
    assert b["precision"] == pytest.approx(1 / 3) and b["recall"] == 1.0
    assert b["f1"] == pytest.approx(2 * (1 / 3) / (1 / 3 + 1))
    assert m["per_class"]["c"]["f1"] == 0.0
    f1s = [m["per_class"][c]["f1"] for c in "abc"]
    assert m["macro_f1"] == pytest.approx(np.mean(f1s))
    assert m["confusion_matrix"][0] == [3, 1, 0]


def test_aca_ignores_classes_absent_from_the_split():
    m = classification_metrics([0, 0, 1], [0, 0, 0], ["a", "b", "c"])
    assert m["mean_class_accuracy"] == pytest.approx(0.5)  # (1 + 0) / 2; c has no samples
    assert m["per_class"]["c"]["support"] == 0
