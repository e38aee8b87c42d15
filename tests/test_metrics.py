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


def test_probability_metrics_auc_and_calibration():
    y = np.array([0, 0, 1, 1, 2, 2])
    perfect = np.eye(3)[y] * 0.9 + 0.1 / 3
    m = classification_metrics(y, perfect.argmax(1), ["a", "b", "c"], probs=perfect)
    assert m["roc_auc_macro"] == pytest.approx(1.0)
    assert m["per_class"]["b"]["roc_auc"] == pytest.approx(1.0)
    # Every prediction right at confidence 0.9333: the calibration gap is 1 - 0.9333.
    assert m["expected_calibration_error"] == pytest.approx(1 - (0.9 + 0.1 / 3), abs=1e-5)
    # Class c's scores ranked backwards: its AUC is 0.
    flipped = perfect.copy()
    flipped[:, 2] = 1 - flipped[:, 2]
    assert classification_metrics(y, y, ["a", "b", "c"], probs=flipped)["per_class"]["c"]["roc_auc"] == 0.0


def test_auc_is_none_for_a_class_without_positives_and_most_confused_pairs():
    y_true = np.array([0, 0, 0, 1, 1])
    y_pred = np.array([1, 1, 0, 1, 0])
    probs = np.array([[0.4, 0.5, 0.1], [0.3, 0.6, 0.1], [0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"], probs=probs)
    assert m["per_class"]["c"]["roc_auc"] is None
    defined = [m["per_class"][c]["roc_auc"] for c in "ab"]
    assert m["roc_auc_macro"] == pytest.approx(np.mean(defined))
    assert m["most_confused"][0] == {"true": "a", "predicted": "b", "count": 2, "fraction_of_true": 2 / 3}
    assert m["most_confused"][1]["true"] == "b" and len(m["most_confused"]) == 2
    assert m["balanced_accuracy"] == m["mean_class_accuracy"] == pytest.approx((1 / 3 + 1 / 2) / 2)
