import numpy as np
import pytest

from celltune.data.samples import multi_hot
from celltune.data.splits import grouped_split, iterative_split, kfold, stratified_split
from celltune.errors import DataError


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


def _grouped_labels(n_groups=30, seed=0):
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    for g in range(n_groups):
        for _ in range(int(rng.integers(2, 9))):
            labels.append(int(rng.integers(0, 3)))
            groups.append(f"patient{g}")
    return labels, groups


def test_grouped_split_never_splits_a_group_and_stays_near_its_fractions():
    labels, groups = _grouped_labels()
    parts = grouped_split(labels, groups, fractions=(0.7, 0.15, 0.15), seed=0)
    assert sorted(i for p in parts for i in p) == list(range(len(labels)))
    owners = [{groups[i] for i in p} for p in parts]
    assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
    for part, share in zip(parts[1:], (0.15, 0.15), strict=True):
        assert abs(len(part) / len(labels) - share) < 0.1
        assert len({labels[i] for i in part}) == 3  # every class in every part
    assert grouped_split(labels, groups, fractions=(0.7, 0.15, 0.15), seed=0) == parts
    with pytest.raises(DataError, match=r"1 group\(s\) cannot give a 25% part with whole groups \(images per group: "
                       r"a \(4\)\); it needs 3: give finer groups .* or --test-fraction 0"):
        grouped_split([0, 1, 0, 1], ["a", "a", "a", "a"], fractions=(0.5, 0.25, 0.25), seed=0)


def test_with_one_group_left_after_test_training_goes_without_validation(caplog):
    train, val, test = grouped_split([0, 1, 0, 1], ["a", "a", "b", "b"], fractions=(0.5, 0.25, 0.25), seed=0)
    assert val == [] and len(train) == len(test) == 2 and {0, 1} == {i // 2 for i in (train[0], test[0])}
    assert "none can be spared for validation" in caplog.text


def _slides(n_slides=5, tiles=(12, 11, 13, 10, 12)):
    """The issue's histology case: 58 tiles from 5 slides, two classes in every slide."""
    groups = [f"slide{g}" for g in range(n_slides) for _ in range(tiles[g])]
    labels = [i % 2 for i in range(len(groups))]
    return labels, groups


def test_too_few_groups_for_a_share_give_one_whole_group_the_nearest_share(caplog):
    labels, groups = _slides()
    with caplog.at_level("INFO", logger="celltune.data.splits"):
        parts = grouped_split(labels, groups, fractions=(0.7, 0.15, 0.15), seed=0)
    owners = [{groups[i] for i in p} for p in parts]
    assert [len(o) for o in owners] == [3, 1, 1]  # 15% of 5 slides is under one: one slide each for val and test
    assert sorted(i for p in parts for i in p) == list(range(len(labels)))
    assert "4 group(s) left cannot give a 15% part with whole groups: one group, about 25% of them" in caplog.text


def test_folds_of_one_group_each_hold_every_group_out_once():
    labels, groups = _slides()
    folds = kfold(labels, groups, folds=5, seed=0)
    assert sorted(len({groups[i] for i in f}) for f in folds) == [1] * 5
    assert sorted(groups[f[0]] for f in folds) == [f"slide{g}" for g in range(5)]
    with pytest.raises(DataError, match=r"5 group\(s\) cannot give 6 folds with whole groups \(images per group: "
                       r"slide0 \(12\), slide1 \(11\), .*\); it needs 6: .* or --folds groups"):
        kfold(labels, groups, folds=6, seed=0)


def test_multilabel_groups_stay_whole_and_labels_spread():
    rng = np.random.default_rng(1)
    groups = [f"g{g}" for g in range(40) for _ in range(5)]
    y = (rng.random((200, 4)) < [0.5, 0.3, 0.2, 0.1]).astype(int)
    parts = grouped_split(y, groups, fractions=(0.6, 0.2, 0.2), seed=3)
    owners = [{groups[i] for i in p} for p in parts]
    assert sum(len(o) for o in owners) == 40 and sorted(i for p in parts for i in p) == list(range(200))
    for part in parts[1:]:
        assert y[part].sum(0).min() > 0  # every label in val and test


def test_kfold_holds_every_image_out_once_with_groups_whole():
    labels, groups = _grouped_labels(n_groups=25)
    folds = kfold(labels, groups, folds=5, seed=0)
    assert sorted(i for f in folds for i in f) == list(range(len(labels)))
    owners = [{groups[i] for i in f} for f in folds]
    assert all(not (a & b) for k, a in enumerate(owners) for b in owners[k + 1 :])
    plain = kfold(labels, None, folds=5, seed=0)
    assert [len(f) for f in plain] == sorted((len(labels) // 5 + (k < len(labels) % 5) for k in range(5)),
                                             reverse=True)
    y = np.eye(3, dtype=int)[labels]
    assert sorted(i for f in kfold(y, groups, folds=5, seed=0) for i in f) == list(range(len(labels)))
    with pytest.raises(DataError, match=r"1 class\(es\) with fewer images than the 5 folds cannot appear in every "
                       r"fold: rare \(3 images\); leave them out with --exclude-classes rare or "
                       r"--min-class-images 5 or --folds 3"):
        kfold([0] * 3 + [1] * 30, None, folds=5, seed=0, class_names=["rare", "common"])
    with pytest.raises(DataError, match=r"single \(1 image\); leave them out with --exclude-classes single or "
                       r"--min-class-images 5$"):  # no number of folds helps a class of one image
        kfold([0] + [1] * 30, None, folds=5, seed=0, class_names=["single", "common"])
    with pytest.raises(DataError, match=r"3 group\(s\) cannot give 5 folds"):
        kfold(labels, ["a", "b", "c"] * (len(labels) // 3) + ["a"] * (len(labels) % 3), folds=5, seed=0)
