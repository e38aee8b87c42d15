import json

import numpy as np
import pytest

from celltune.metrics.classification import classification_metrics
from celltune.metrics.multilabel import multilabel_metrics
from celltune.metrics.results import ClassificationResult, MultilabelResult, RunMetrics, labelled, result_from_dict


def test_headline_numbers_and_their_tracking_names():
    m = classification_metrics([0, 1, 1], [0, 1, 0], ["a", "b"])
    assert m.headline() == {"accuracy": m.accuracy, "mean_class_accuracy": m.mean_class_accuracy,
                            "macro_f1": m.macro_f1}
    assert list(m.tracked("val")) == ["val_acc", "val_aca", "val_macro_f1"]
    assert m.score == m.mean_class_accuracy  # the best epoch is chosen by ACA
    ml = multilabel_metrics(np.array([[1, 0]]), np.array([[0.9, 0.1]]), ["x", "y"])
    assert list(ml.tracked("val")) == ["val_macro_f1", "val_micro_f1", "val_exact_match"]
    assert ml.score == ml.macro_f1
    assert [label for _, label, _ in labelled(m.per_class[0])] == ["precision", "recall", "F1", "ROC AUC", "images"]


@pytest.mark.parametrize("multilabel", [False, True])
def test_results_round_trip_through_plain_json(multilabel):
    y = np.array([0, 1, 1, 2])
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])
    result = (multilabel_metrics(np.eye(3)[y], probs, list("abc"), [0.3, 0.5, 0.4]) if multilabel
              else classification_metrics(y, probs.argmax(1), list("abc"), probs=probs))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["multilabel"] is multilabel and set(data["per_class"]) == {"a", "b", "c"}
    again = result_from_dict(data)
    assert again == result and isinstance(again, MultilabelResult if multilabel else ClassificationResult)
    run = RunMetrics(split="test", result=result, best_epoch=2, best_val=result.headline(), epochs_run=3,
                     train_seconds=1.5, fit_images_per_second=10.0)
    assert RunMetrics.from_dict(json.loads(json.dumps(run.to_dict()))) == run
    assert run.to_dict()["accuracy" if not multilabel else "micro_f1"] is not None  # flat, as metrics.json was
