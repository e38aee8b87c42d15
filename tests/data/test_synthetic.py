import numpy as np
from PIL import Image

from celltune.data.synthetic import CLASSES, draw_cell, make_dataset


def test_make_dataset_writes_labelled_class_folders(tmp_path):
    root = make_dataset(tmp_path / "syn", per_class=(2, 1, 1), size=40, seed=3)
    for split, n in (("train", 2), ("val", 1), ("test", 1)):
        assert sorted(d.name for d in (root / split).iterdir()) == sorted(CLASSES)
        assert all(len(list((root / split / c).glob("*.png"))) == n for c in CLASSES)
    assert "SYNTHETIC" in (root / "README.txt").read_text()
    img = Image.open(next((root / "train" / "golgi").glob("*.png")))
    assert img.size == (40, 40) and img.mode == "L"


def test_draw_cell_is_seeded_and_patterns_differ():
    a = draw_cell("speckled", size=48, rng=np.random.default_rng(0))
    b = draw_cell("speckled", size=48, rng=np.random.default_rng(0))
    assert np.array_equal(a, b)
    ring = draw_cell("nuclear_membrane", size=48, rng=np.random.default_rng(0)).astype(float)
    flat = draw_cell("homogeneous", size=48, rng=np.random.default_rng(0)).astype(float)
    # A membrane cell is dim in its centre compared with its rim; a homogeneous cell is not.
    assert ring[22:26, 22:26].mean() < 0.5 * ring.max()
    assert flat[22:26, 22:26].mean() > 0.5 * flat.max()
