from __future__ import annotations

import json
import logging

import pytest

from celltune.cli import main as celltune
from celltune.config import DataConfig
from celltune.data.class_choice import ClassChoice
from celltune.data.discovery import discover, discover_as_trained, discover_pool, split_record, summarize
from celltune.errors import ConfigError, DataError
from celltune.reports.html import left_out_html
from celltune.training.crossval import plan_folds

from conftest import class_tree

# The white-blood-cell case: 5 classes, one of them a single image.
COUNTS = {"basophil": 1, "eosinophil": 12, "lymphocyte": 14, "monocyte": 11, "neutrophil": 13}


@pytest.fixture
def blood(tmp_path):
    return class_tree(tmp_path / "blood", COUNTS)


def test_cv_names_the_class_too_small_for_the_folds_and_min_class_images_leaves_it_out(blood, caplog):
    pool = discover_pool(blood)
    with pytest.raises(DataError, match=r"basophil \(1 image\); leave them out with --exclude-classes basophil or "
                       r"--min-class-images 5$"):
        plan_folds(pool, folds=5, seed=0, val_fraction=0.2)

    with caplog.at_level(logging.WARNING, logger="celltune.data.class_choice"):
        pool = discover_pool(blood, choice=ClassChoice(min_images=5))
    assert "leaving out 1 class(es) with fewer than --min-class-images 5 images: basophil (1 image)" in caplog.text
    assert pool.class_names == ["eosinophil", "lymphocyte", "monocyte", "neutrophil"]
    assert pool.left_out_classes == {"basophil": {"images": 1, "why": "fewer than --min-class-images 5"}}
    folds = plan_folds(pool, folds=5, seed=0, val_fraction=0.2)
    held_out = [p for fold in folds for p in fold["test"]]
    assert sorted(held_out) == sorted(str(s.path) for s in pool.samples)  # every kept image held out once
    assert not any("basophil" in p for p in held_out)


def test_chosen_classes_are_relabelled_in_the_data_order_in_every_split(blood):
    found = discover(blood, choice=ClassChoice(only=("neutrophil", "eosinophil", "monocyte"),
                                               exclude=("monocyte",)))
    assert found.class_names == ["eosinophil", "neutrophil"]
    for samples in found.splits.values():
        for s in samples:
            assert s.path.parent.name == found.class_names[s.label]
    assert sum(len(v) for v in found.splits.values()) == COUNTS["eosinophil"] + COUNTS["neutrophil"]
    assert found.left_out_classes == {
        "basophil": {"images": 1, "why": "not in --classes"}, "lymphocyte": {"images": 14, "why": "not in --classes"},
        "monocyte": {"images": 11, "why": "--exclude-classes"}}
    assert summarize(found)["classes_left_out"] == found.left_out_classes


def test_a_class_name_that_is_not_there_is_named_with_the_close_matches(blood):
    with pytest.raises(ConfigError, match=r"--exclude-classes basofil: .* has no class of that name; did you mean "
                       r"basophil\? \(its classes: basophil, eosinophil, lymphocyte, monocyte, neutrophil\)"):
        discover(blood, choice=ClassChoice(exclude=("basofil",)))
    with pytest.raises(DataError, match=r"1 class\(es\) left \(lymphocyte\) once basophil \(1 image: fewer than "
                       r"--min-class-images 14\), .* are left out; a classifier needs two"):
        discover(blood, choice=ClassChoice(min_images=14))


def test_evaluation_finds_the_run_s_classes_again_from_its_split_record(blood, tmp_path):
    data = DataConfig(root=str(blood), seed=3, exclude_classes=["basophil"], min_class_images=12)
    trained = discover(blood, seed=3, choice=ClassChoice.of(data))
    # as a checkpoint keeps it: the split record beside the model's class names
    saved = json.loads(json.dumps({**split_record(data), "class_names": trained.class_names}))
    again = discover_as_trained(blood, saved)
    assert again.class_names == trained.class_names == ["eosinophil", "lymphocyte", "neutrophil"]
    assert {k: [s.path for s in v] for k, v in again.splits.items()} == \
        {k: [s.path for s in v] for k, v in trained.splits.items()}
    assert discover_as_trained(blood, {"split_seed": 3}).class_names == list(COUNTS)  # older runs: every class
    # Other data, without the excluded class and with a few images of its classes only: no error, the model's classes.
    other = class_tree(tmp_path / "other", {"eosinophil": 4, "lymphocyte": 4, "neutrophil": 4, "monocyte": 4})
    assert discover_as_trained(other, saved).class_names == ["eosinophil", "lymphocyte", "neutrophil"]


def test_multi_label_data_refuses_class_choice_with_the_way_out(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train.csv").write_text("Id,Target\na,0 1\nb,1\n")
    from conftest import png

    for name in "ab":
        png(tmp_path / "train" / f"{name}.png")
    with pytest.raises(ConfigError, match=r"multi-label data; .* drop the label ids from the CSV's Target column"):
        discover(tmp_path, choice=ClassChoice(exclude=("0",)))


def test_check_and_summarize_take_the_class_flags_and_the_report_names_what_was_left_out(blood, capsys):
    assert celltune(["summarize", str(blood), "--exclude-classes", "basophil,monocyte"]) == 0
    out = capsys.readouterr().out
    assert "3 classes" in out and "basophil" not in out.split("\n", 1)[1].split("classes left out")[0]
    assert "classes left out: basophil (1 image: --exclude-classes), monocyte (11 images: --exclude-classes)" in out
    assert celltune(["check", str(blood), "--min-class-images", "5"]) in (0, 1)
    assert "4 classes" in capsys.readouterr().out
    html = left_out_html({"basophil": {"images": 1, "why": "fewer than --min-class-images 5"}})
    assert "basophil (1 image: fewer than --min-class-images 5)" in html
    assert left_out_html({}) == ""
