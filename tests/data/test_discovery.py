import csv
import re
from pathlib import Path

import pytest
from PIL import Image

from celltune.data.discovery import MaskFinder, discover, summarize
from celltune.data.images import read_image
from celltune.data.layouts import read_label_names
from celltune.data.samples import multi_hot
from celltune.data.synthetic import label_structure, make_multilabel_dataset
from celltune.errors import ConfigError, DataError

from conftest import SHARED_HEP2, png, require


def test_split_trees_are_read_per_split(tiny_data):
    found = discover(tiny_data)
    assert found.class_names == sorted(d.name for d in (tiny_data / "train").iterdir())
    assert {k: len(v) for k, v in found.splits.items()} == {"train": 36, "val": 18, "test": 18}
    sample = found.splits["val"][0]
    assert found.class_names[sample.label] == sample.path.parent.name


def test_single_tree_gets_a_seeded_stratified_split(tmp_path):
    for cls, n in (("a", 20), ("b", 40)):
        for i in range(n):
            png(tmp_path / cls / f"{i}.png")
    found = discover(tmp_path, val_fraction=0.25, test_fraction=0.25, seed=7)
    counts = found.counts()
    assert counts["train"] == {"a": 10, "b": 20}
    assert counts["val"] == {"a": 5, "b": 10} and counts["test"] == {"a": 5, "b": 10}
    paths = [s.path for split in found.splits.values() for s in split]
    assert len(paths) == len(set(paths)) == 60
    again = discover(tmp_path, val_fraction=0.25, test_fraction=0.25, seed=7)
    other = discover(tmp_path, val_fraction=0.25, test_fraction=0.25, seed=8)
    assert again.splits["val"] == found.splits["val"]
    assert other.splits["val"] != found.splits["val"]


def _icpr(root: Path) -> Path:
    (root / "gt_training.csv").write_text("Image ID,Image class\n1,Homogeneous\n2,Speckled\n3,Speckled\n"
                                          "4,Homogeneous\n10,Golgi\n")
    png(root / "training" / "00001.png")
    png(root / "training" / "00002.png", size=(30, 30))
    png(root / "validation" / "00003.png")
    png(root / "test" / "00004.png")
    png(root / "test" / "00010.png")
    return root


def test_icpr_layout_maps_unpadded_ids_to_padded_files(tmp_path):
    found = discover(_icpr(tmp_path))
    assert found.class_names == ["Golgi", "Homogeneous", "Speckled"]
    assert [(s.path.name, found.class_names[s.label]) for s in found.splits["train"]] == [
        ("00001.png", "Homogeneous"), ("00002.png", "Speckled")]
    assert [found.class_names[s.label] for s in found.splits["test"]] == ["Homogeneous", "Golgi"]
    summary = summarize(found)
    assert summary["counts"]["train"] == {"Golgi": 0, "Homogeneous": 1, "Speckled": 1}
    assert summary["totals"] == {"train": 2, "val": 1, "test": 2}
    assert summary["image_sizes"]["min"] == [20, 16] and summary["image_sizes"]["max"] == [30, 30]


def test_icpr_image_without_a_label_row_names_the_file(tmp_path):
    _icpr(tmp_path)
    stray = png(tmp_path / "training" / "00099.png")
    with pytest.raises(DataError, match=re.escape(str(stray))):
        discover(tmp_path)


def test_unknown_class_in_val_is_an_error_naming_the_folder(tiny_data, tmp_path):
    root = tmp_path / "d"
    for split in ("train", "val"):
        for cls in ("a", "b"):
            png(root / split / cls / "x.png")
    png(root / "val" / "zebra" / "y.png")
    with pytest.raises(DataError, match="zebra"):
        discover(root)


def test_corrupt_image_is_reported_with_its_path(tmp_path):
    for cls in ("a", "b"):
        for i in range(4):
            png(tmp_path / cls / f"{i}.png")
    bad = tmp_path / "a" / "broken.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"broken\.png"):
        summarize(discover(tmp_path, val_fraction=0.25, test_fraction=0.25))
    with pytest.raises(DataError, match=r"broken\.png.*replace or remove"):
        read_image(bad)


def test_one_class_only_is_a_clear_error(tmp_path):
    png(tmp_path / "only" / "x.png")
    with pytest.raises(DataError, match="1 class"):
        discover(tmp_path)


def test_real_icpr2014_hep2_layout():
    require(SHARED_HEP2.is_dir(), "real HEp-2 data (../shared/data/hep2_icpr2014) not present")
    found = discover(SHARED_HEP2)
    assert found.class_names == ["Centromere", "Golgi", "Homogeneous", "NuMem", "Nucleolar", "Speckled"]
    assert {k: len(v) for k, v in found.splits.items()} == {"train": 8701, "val": 2175, "test": 2720}
    assert read_image(found.splits["test"][0].path).shape == (3, 78, 78)


def test_multi_hot_marks_each_images_label_ids():
    assert multi_hot([(0, 2), (), (1,)], 3).tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]


@pytest.fixture(scope="module")
def hpa(tmp_path_factory):
    return make_multilabel_dataset(tmp_path_factory.mktemp("hpa") / "d", n_images=60, size=32, num_labels=8, seed=2)


def test_multilabel_csv_with_channel_files_and_label_names(hpa):
    found = discover(hpa, label_names=hpa / "label_names.csv")
    assert found.multilabel and len(found.class_names) == 8
    assert found.class_names[5] == f"{label_structure(5)[0]}-size{label_structure(5)[1]}"
    assert read_label_names(hpa / "label_names.csv")[5] == found.class_names[5]
    rows = {r["Id"]: r["Target"] for r in csv.DictReader((hpa / "train.csv").open())}
    sample = found.splits["train"][0]
    assert sample.path.parent == hpa / "train" and not sample.path.exists()  # a stem of {Id}_red.png ...
    assert sample.label == tuple(sorted(int(t) for t in rows[sample.path.name].split()))
    assert sum(len(v) for v in found.splits.values()) == 60
    assert discover(hpa).class_names[:2] == ["0", "1"]  # without names, the ids


def test_multilabel_row_without_image_names_it(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train.csv").write_text("Id,Target\nghost,0 1\n")
    with pytest.raises(DataError, match="ghost"):
        discover(tmp_path)


def test_multilabel_ids_that_leave_the_data_folder_are_refused(tmp_path):
    (tmp_path / "train").mkdir()
    png(tmp_path / "secret.png")  # outside train/, where the CSV's images are
    for bad in ("../secret", "../../../etc/passwd", "/etc/passwd"):
        (tmp_path / "train.csv").write_text(f"Id,Target\n{bad},0 1\n")
        with pytest.raises(DataError, match=rf"train\.csv:2: Id '{re.escape(bad)}' resolves outside the data folder"):
            discover(tmp_path)


def _mask(path: Path, size=(20, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, 255).save(path)
    return path


def test_masks_are_matched_by_stem_whatever_their_extension(tmp_path):
    data, masks = tmp_path / "data", tmp_path / "masks"
    images = [png(data / "cells" / "291.png"), data / "cells" / "292.bmp", data / "cells" / "293.tif"]
    Image.new("L", (20, 16), 9).save(images[1])
    Image.new("L", (20, 16), 9).save(images[2])
    found = [_mask(masks / "cells" / "291.tif"), _mask(masks / "cells" / "292.png"), _mask(masks / "293.JPG")]
    finder = MaskFinder(data, masks)
    assert [finder.of(p) for p in images] == found  # the same relative folder first, then the mask folder's top
    _mask(masks / "cells" / "292.bmp")  # the image's own file name wins over another extension
    assert MaskFinder(data, masks).of(images[1]) == masks / "cells" / "292.bmp"
    _mask(masks / "cells" / "291.bmp")  # two masks for 291.png, neither of its own name
    with pytest.raises(DataError, match=rf"291\.png: 2 masks fit it, {masks}/cells/291\.bmp and "
                                        rf"{masks}/cells/291\.tif; keep only one"):
        MaskFinder(data, masks).of(images[0])
    with pytest.raises(DataError, match=r"294\.png: no mask at .*cells/294\.<png\|tif\|bmp\|jpg>"):
        MaskFinder(data, masks).of(png(data / "cells" / "294.png"))


def test_valid_and_testing_folder_names_are_val_and_test(tmp_path):
    for split, name in (("train", "training"), ("val", "valid"), ("test", "testing")):
        for cls in ("a", "b"):
            png(tmp_path / name / cls / f"{split}.png")
    found = discover(tmp_path)
    assert found.layout == "class folders per split"
    assert {split: [s.path.parent.parent.name for s in v] for split, v in found.splits.items()} == {
        "train": ["training", "training"], "val": ["valid", "valid"], "test": ["testing", "testing"]}


def _patients(root: Path, n_patients=12, per=4) -> Path:
    for p in range(n_patients):
        for i in range(per):
            cls = "pos" if (p + i) % 2 else "neg"
            png(root / cls / f"patient{p:02d}_{i}.png", value=(p * 10 + i) % 256)
    return root


def test_groups_from_a_pattern_keep_every_patient_in_one_split(tmp_path):
    root = _patients(tmp_path / "d")
    found = discover(root, groups=r"(patient\d+)_", val_fraction=0.25, test_fraction=0.25)
    owners = {split: {s.group for s in samples} for split, samples in found.splits.items()}
    assert set.union(*owners.values()) == {f"patient{p:02d}" for p in range(12)}
    assert not (owners["train"] & owners["val"] or owners["train"] & owners["test"] or owners["val"] & owners["test"])
    assert "stratified group split, 12 groups" in found.layout and found.celltune_split
    assert summarize(found)["groups"] == {split: len(o) for split, o in owners.items()}
    plain = discover(root, val_fraction=0.25, test_fraction=0.25)
    assert plain.layout == "one class-folder tree, stratified split (seed 0)" and "groups" not in summarize(plain)


def test_groups_from_a_table_or_a_layout_column(tmp_path):
    root = _patients(tmp_path / "d", n_patients=8)
    table = tmp_path / "groups.csv"
    table.write_text("path,group\n" + "".join(f"{p.relative_to(root).as_posix()},slide{p.stem[7:9]}\n"
                                              for p in sorted(root.rglob("*.png"))))
    found = discover(root, groups_csv=str(table))
    assert {s.group for s in found.samples} == {f"slide{p:02d}" for p in range(8)}
    icpr = tmp_path / "icpr"
    icpr.mkdir()
    (icpr / "gt_training.csv").write_text("Image ID,Image class,Specimen\n" + "".join(
        f"{i},{'A' if i % 2 else 'B'},s{i // 4}\n" for i in range(1, 13)))
    for i in range(1, 13):
        png(icpr / ("training" if i <= 8 else "validation") / f"{i:05d}.png", value=i)
    by_column = discover(icpr, groups_csv="Specimen")
    assert [s.group for s in by_column.splits["val"]] == ["s2", "s2", "s2", "s3"]
    with pytest.raises(ConfigError, match=r"not a file nor a column of gt_training\.csv"):
        discover(icpr, groups_csv="Patient")


def test_images_without_a_group_are_named(tmp_path):
    root = _patients(tmp_path / "d", n_patients=4)
    png(root / "pos" / "unknown.png")
    with pytest.raises(DataError, match=r"unknown\.png: no group from the pattern.*\(1 of 17 images"):
        discover(root, groups=r"(patient\d+)_")
    with pytest.raises(ConfigError, match="not a regular expression"):
        discover(root, groups="(unclosed")
