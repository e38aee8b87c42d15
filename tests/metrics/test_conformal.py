import math

import numpy as np
import pytest

from celltune.errors import ConfigError
from celltune.metrics import conformal


def test_scores_hand_worked():
    probs = np.array([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
    # Image 0, true class 1 (second most probable), u = 0.5: 0.5 above it + 0.5 * 0.3 = 0.65.
    # Image 1, true class 0 (the top), u = 1: 0 above + 0.5 = 0.5. Image 2, true class 0 (last), u = 0: 0.9.
    truth, u = np.array([1, 0, 0]), np.array([0.5, 1.0, 0.0])
    assert conformal.scores(probs, truth, u, allow_empty=True) == pytest.approx([0.65, 0.5, 0.9])
    # celltune's sets always hold the top class: a true top class is covered whatever the threshold, and scores 0.
    assert conformal.scores(probs, truth, u) == pytest.approx([0.65, 0.0, 0.9])


def test_threshold_is_the_finite_sample_quantile():
    scores = np.arange(1, 20) / 20  # 19 scores: 0.05 ... 0.95
    assert conformal.threshold(scores, 0.95) == pytest.approx(0.95)  # ceil(20 * 0.95) = 19th smallest
    assert conformal.threshold(scores, 0.5) == pytest.approx(0.5)  # ceil(20 * 0.5) = 10th
    assert conformal.threshold(scores[:18], 0.95) == math.inf  # 18 scores cannot promise 95%: every class


def test_sets_are_the_classes_within_the_limit_and_never_empty():
    probs = np.array([[0.5, 0.3, 0.2]])
    u = np.array([0.5])
    # Scores as if each class were the true one: 0.25, 0.65, 0.9.
    assert conformal.prediction_sets(probs, 0.7, u) == [[0, 1]]
    assert conformal.prediction_sets(probs, 0.9, u) == [[0, 1, 2]]
    assert conformal.prediction_sets(probs, 0.1, u) == [[0]]  # the top class always
    assert conformal.prediction_sets(probs, 0.1, u, allow_empty=True) == [[]]  # the textbook procedure
    assert conformal.prediction_sets(probs, math.inf, u) == [[0, 1, 2]]


def test_draw_is_a_uniform_number_fixed_by_the_file_name():
    names = [f"img{i}.png" for i in range(20000)]
    u = conformal.draw(names)
    assert ((u >= 0) & (u < 1)).all() and abs(u.mean() - 0.5) < 0.01 and abs((u < 0.1).mean() - 0.1) < 0.01
    assert conformal.draw(["/a/b/img7.png"])[0] == u[7]  # the folder does not matter


def test_coverage_holds_for_exchangeable_images_whatever_the_model():
    """A poor model (its probabilities only loosely follow the labels): 90% and 95% sets still cover about 90% and
    95% of new images drawn like the validation ones, and a better model gets smaller sets."""
    rng = np.random.default_rng(0)
    covered = {0.9: [], 0.95: []}
    sizes = []
    for repeat in range(20):
        z = rng.normal(size=(3000, 5))
        truth = np.array([rng.choice(5, p=p) for p in np.exp(z) / np.exp(z).sum(1, keepdims=True)])
        noisy = z + rng.normal(size=z.shape) * 2.0
        probs = np.exp(noisy) / np.exp(noisy).sum(1, keepdims=True)
        names = [f"r{repeat}-{i}.png" for i in range(3000)]
        cal, test = slice(0, 1000), slice(1000, 3000)
        found = conformal.scores(probs[cal], truth[cal], conformal.draw(names[cal]))
        for coverage in covered:  # the model is right for about 40%: sets of one class are too few
            sets = conformal.prediction_sets(probs[test], conformal.threshold(found, coverage),
                                             conformal.draw(names[test]))
            summary = conformal.set_summary(sets, truth[test], list("abcde"), coverage)
            covered[coverage].append(summary["covered"])
            if coverage == 0.9:
                sizes.append(summary["mean_size"])
    assert np.mean(covered[0.9]) == pytest.approx(0.9, abs=0.01)
    assert np.mean(covered[0.95]) == pytest.approx(0.95, abs=0.01)
    assert 1 < np.mean(sizes) < 5


def test_set_summary_hand_worked():
    sets = [[0], [0, 1], [1], [2, 0]]
    truth = np.array([0, 1, 0, 2])
    s = conformal.set_summary(sets, truth, ["a", "b", "c"], 0.9)
    assert s["covered"] == 0.75 and s["mean_size"] == 1.5 and s["to_review"] == 0.5
    assert s["sizes"] == {"1": 2, "2": 2}
    assert s["per_class"] == {"a": {"images": 2, "covered": 0.5, "mean_size": 1.0},
                              "b": {"images": 1, "covered": 1.0, "mean_size": 2.0},
                              "c": {"images": 1, "covered": 1.0, "mean_size": 2.0}}


@pytest.mark.parametrize("bad", [0, 1, 95, -0.1])
def test_coverage_must_be_a_share(bad):
    with pytest.raises(ConfigError, match=r"between 0 and 1, such as 0\.95"):
        conformal.check_coverage(bad)


def test_a_model_right_more_often_than_asked_gets_sets_of_one_class():
    """90% of top classes right, 80% asked: every set is the top class alone, covering those 90%; the textbook
    procedure would leave some sets empty to come down to 80%."""
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(4), size=2000)
    top = probs.argmax(1)
    truth = np.where(rng.random(2000) < 0.9, top, (top + 1) % 4)
    names = [f"{i}.png" for i in range(2000)]
    u = conformal.draw(names)
    limit = conformal.threshold(conformal.scores(probs[:1000], truth[:1000], u[:1000]), 0.8)
    sets = conformal.prediction_sets(probs[1000:], limit, u[1000:])
    assert all(len(s) == 1 for s in sets)
    textbook = conformal.threshold(conformal.scores(probs[:1000], truth[:1000], u[:1000], allow_empty=True), 0.8)
    empty = conformal.prediction_sets(probs[1000:], textbook, u[1000:], allow_empty=True)
    covered = np.mean([t in s for s, t in zip(empty, truth[1000:], strict=True)])
    assert covered == pytest.approx(0.8, abs=0.03) and any(not s for s in empty)
