import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from celltune.data import DataError, discover, read_image, stratified_split, summarize

SHARED_HEP2 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "hep2_icpr2014"


def _png(path: Path, size=(20, 16), value=128, mode="L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)
    return path


def test_split_trees_are_read_per_split(tiny_data):
    found = discover(tiny_data)
    assert found.class_names == sorted(d.name for d in (tiny_data / "train").iterdir())
    assert {k: len(v) for k, v in found.splits.items()} == {"train": 36, "val": 18, "test": 18}
    sample = found.splits["val"][0]
    assert found.class_names[sample.label] == sample.path.parent.name


def test_single_tree_gets_a_seeded_stratified_split(tmp_path):
    for cls, n in (("a", 20), ("b", 40)):
        for i in range(n):
            _png(tmp_path / cls / f"{i}.png")
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


def test_stratified_split_keeps_every_index_once():
    labels = [0] * 7 + [1] * 3 + [2] * 11
    parts = stratified_split(labels, fractions=(0.6, 0.2, 0.2), seed=0)
    assert sorted(i for p in parts for i in p) == list(range(len(labels)))


def _icpr(root: Path) -> Path:
    (root / "gt_training.csv").write_text("Image ID,Image class\n1,Homogeneous\n2,Speckled\n3,Speckled\n"
                                          "4,Homogeneous\n10,Golgi\n")
    _png(root / "training" / "00001.png")
    _png(root / "training" / "00002.png", size=(30, 30))
    _png(root / "validation" / "00003.png")
    _png(root / "test" / "00004.png")
    _png(root / "test" / "00010.png")
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
    stray = _png(tmp_path / "training" / "00099.png")
    with pytest.raises(DataError, match=re.escape(str(stray))):
        discover(tmp_path)


def test_unknown_class_in_val_is_an_error_naming_the_folder(tiny_data, tmp_path):
    root = tmp_path / "d"
    for split in ("train", "val"):
        for cls in ("a", "b"):
            _png(root / split / cls / "x.png")
    _png(root / "val" / "zebra" / "y.png")
    with pytest.raises(DataError, match="zebra"):
        discover(root)


def test_corrupt_image_is_reported_with_its_path(tmp_path):
    for cls in ("a", "b"):
        for i in range(4):
            _png(tmp_path / cls / f"{i}.png")
    bad = tmp_path / "a" / "broken.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"broken\.png"):
        summarize(discover(tmp_path, val_fraction=0.25, test_fraction=0.25))
    with pytest.raises(DataError, match=r"broken\.png.*replace or remove"):
        read_image(bad)


def test_one_class_only_is_a_clear_error(tmp_path):
    _png(tmp_path / "only" / "x.png")
    with pytest.raises(DataError, match="1 class"):
        discover(tmp_path)


def test_read_image_grayscale_8_and_16_bit(tmp_path):
    gray = read_image(_png(tmp_path / "g.png", size=(5, 4), value=255))
    assert gray.shape == (3, 4, 5) and float(gray.max()) == 1.0
    deep = np.full((4, 5), 1000, dtype=np.uint16)
    deep[0, 0] = 65535
    Image.fromarray(deep).save(tmp_path / "d16.png")
    x = read_image(tmp_path / "d16.png")
    assert x.shape == (3, 4, 5)
    assert float(x[0, 0, 0]) == pytest.approx(1.0) and float(x[0, 1, 1]) == pytest.approx(1000 / 65535)
    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    rgb[..., 1] = 255
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=100)
    c = read_image(tmp_path / "c.jpg")
    assert float(c[1].mean()) > 0.9 and float(c[0].mean()) < 0.1


@pytest.mark.skipif(not SHARED_HEP2.is_dir(), reason="real HEp-2 data (../shared) not present")
def test_real_icpr2014_hep2_layout():
    found = discover(SHARED_HEP2)
    assert found.class_names == ["Centromere", "Golgi", "Homogeneous", "NuMem", "Nucleolar", "Speckled"]
    assert {k: len(v) for k, v in found.splits.items()} == {"train": 8701, "val": 2175, "test": 2720}
    assert read_image(found.splits["test"][0].path).shape == (3, 78, 78)


def test_channel_files_lists_each_folder_once(tmp_path, monkeypatch):
    from celltune.data import ChannelFiles

    for stem in ("a", "a_b", "c"):
        for channel in ("red", "green"):
            _png(tmp_path / f"{stem}_{channel}.png")
    plain = _png(tmp_path / "d.png")
    files = ChannelFiles()
    listings = []
    real_iterdir = type(tmp_path).iterdir
    monkeypatch.setattr(type(tmp_path), "iterdir", lambda self: listings.append(self) or real_iterdir(self))
    assert [p.name for p in files.of(tmp_path / "a")] == ["a_green.png", "a_red.png"]  # not a_b_red.png
    assert [p.name for p in files.of(tmp_path / "a_b")] == ["a_b_green.png", "a_b_red.png"]
    assert files.of(tmp_path / "c") and files.of(plain) == [plain] and files.of(tmp_path / "zz") == []
    assert listings == [tmp_path]
