import numpy as np

from celltune.data import multi_hot
from celltune.splits import iterative_split, stratified_split


def test_stratified_split_keeps_every_index_once_and_each_class_in_proportion():
    labels = [0] * 20 + [1] * 40
    parts = stratified_split(labels, fractions=(0.5, 0.25, 0.25), seed=7)
    assert sorted(i for p in parts for i in p) == list(range(60))
    for part, share in zip(parts, (0.5, 0.25, 0.25), strict=True):
        assert [sum(labels[i] == c for i in part) for c in (0, 1)] == [20 * share, 40 * share]
    assert stratified_split(labels, fractions=(0.5, 0.25, 0.25), seed=7) == parts
    assert stratified_split(labels, fractions=(0.5, 0.25, 0.25), seed=8) != parts


def test_stratified_split_odd_sizes_give_the_remainder_to_the_first_part():
    labels = [0] * 7 + [1] * 3 + [2] * 11
    parts = stratified_split(labels, fractions=(0.6, 0.2, 0.2), seed=0)
    assert sorted(i for p in parts for i in p) == list(range(len(labels)))
    # class 0: round(1.4) = 1 each for val and test, 5 for train; class 1: round(0.6) = 1 each, 1 for train
    assert [sum(labels[i] == 1 for i in p) for p in parts] == [1, 1, 1]
    assert [sum(labels[i] == 0 for i in p) for p in parts] == [5, 1, 1]


def test_iterative_split_keeps_label_frequencies():
    rng = np.random.default_rng(0)
    labels = [tuple(np.flatnonzero(rng.random(6) < [0.5, 0.4, 0.3, 0.2, 0.1, 0.05]).tolist()) or (0,)
              for _ in range(600)]
    y = multi_hot(labels, 6)
    train, val, test = iterative_split(y, fractions=(0.7, 0.15, 0.15), seed=0)
    assert sorted(train + val + test) == list(range(600))
    assert abs(len(val) - 90) <= 10 and abs(len(test) - 90) <= 10  # iterative stratification sizes are approximate
    for part in (val, test):
        # Iterative stratification serves the rare labels first: their counts are within 2 of proportional.
        expected = y.sum(0) * len(part) / len(labels)
        assert np.all(np.abs(y[part].sum(0) - expected)[3:] <= 2)
        assert np.allclose(y[part].mean(0), y.mean(0), atol=0.08)
