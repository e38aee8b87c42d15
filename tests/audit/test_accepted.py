from __future__ import annotations

import shutil

import pytest

from celltune.config import DataConfig
from celltune.data.discovery import discover
from celltune.errors import ConfigError, DataError
from celltune.training.preflight import check_data

from conftest import png


@pytest.fixture
def benchmark_split(tmp_path):
    """A published split whose test set holds a training image again under the other label, and one image that
    stands twice in training under both labels."""
    root = tmp_path / "bench"
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        for c, cls in enumerate(("a", "b")):
            for i in range(n):
                png(root / split / cls / f"{i}.png", value=10 + 100 * c + 10 * i + {"train": 0, "val": 3,
                                                                                    "test": 6}[split])
    shutil.copy(root / "train" / "a" / "0.png", root / "test" / "b" / "copy.png")  # the leak under another label
    shutil.copy(root / "train" / "a" / "1.png", root / "train" / "b" / "again.png")  # a conflict within training
    return root


def test_a_label_conflict_stops_training_and_names_the_flag_that_goes_on(benchmark_split):
    with pytest.raises(DataError, match="label-conflict: 2 image") as err:
        check_data(discover(benchmark_split), DataConfig(root=str(benchmark_split)))
    assert "--accept label-conflict" in str(err.value)


def test_accepting_it_leaves_out_only_training_copies_that_a_scored_split_labels_otherwise(benchmark_split):
    found, checks, skipped = check_data(discover(benchmark_split),
                                        DataConfig(root=str(benchmark_split), accept=["label-conflict"]))
    assert skipped == [benchmark_split / "train" / "a" / "0.png"]
    paths = {split: {s.path.relative_to(benchmark_split).as_posix() for s in samples}
             for split, samples in found.splits.items()}
    assert "train/a/0.png" not in paths["train"] and "test/b/copy.png" in paths["test"]  # test as published
    assert {"train/a/1.png", "train/b/again.png"} <= paths["train"]  # no scored twin: trained on as it is
    assert len(paths["train"]) == 8 and len(paths["test"]) == 5
    conflict = next(f for f in checks.findings if f.code == "label-conflict")
    assert conflict.level == "warning" and conflict.message.endswith("accepted (--accept label-conflict)")
    assert len(conflict.items) == 2 and not checks.errors


def test_only_errors_training_can_go_on_with_are_accepted():
    with pytest.raises(ConfigError, match="--accept unreadable: training can accept label-conflict, "
                                          "group-across-splits only"):
        from celltune.audit.accepted import check_codes

        check_codes(["label-conflict", "unreadable"])
