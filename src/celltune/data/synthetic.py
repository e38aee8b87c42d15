"""SYNTHETIC HEp-2-like cells for the offline demo and the tests: procedurally drawn, not real data.

Each image is one grayscale "nucleus" with a staining pattern in the spirit of the six ICPR 2014 classes:
homogeneous (even fill), speckled (fine grain), nucleolar (a few large blobs), centromere (many sharp dots),
golgi (a cluster beside the nucleus) and nuclear membrane (a bright rim). Intensity, size, shape, position and noise
vary per cell, so a classifier has to learn the texture, not a fixed template.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("centromere", "golgi", "homogeneous", "nuclear_membrane", "nucleolar", "speckled")

_Grid = tuple[np.ndarray, np.ndarray]


def _spots(grid: _Grid, xs: np.ndarray, ys: np.ndarray, sigma: float, amps: np.ndarray) -> np.ndarray:
    """Sum of Gaussian spots; (H, W)."""
    x, y = grid
    d2 = (x[None] - xs[:, None, None]) ** 2 + (y[None] - ys[:, None, None]) ** 2  # (K, H, W)
    return (amps[:, None, None] * np.exp(-d2 / (2 * sigma**2))).sum(axis=0)


def _points_inside(rng: np.random.Generator, n: int, cell: dict, radius: float = 0.85) -> tuple[np.ndarray, ...]:
    """n points uniformly inside the nucleus ellipse (shrunk by ``radius``), in pixel coordinates."""
    r = radius * np.sqrt(rng.uniform(0, 1, n))
    t = rng.uniform(0, 2 * np.pi, n)
    u, v = r * np.cos(t) * cell["a"], r * np.sin(t) * cell["b"]
    c, s = np.cos(cell["angle"]), np.sin(cell["angle"])
    return cell["cx"] + u * c - v * s, cell["cy"] + u * s + v * c


def _homogeneous(rng, grid, cell):
    return cell["inside"] * rng.uniform(0.75, 0.95)


def _speckled(rng, grid, cell):
    n = rng.integers(120, 220)
    xs, ys = _points_inside(rng, n, cell, 0.95)
    return 0.2 * cell["inside"] + _spots(grid, xs, ys, 0.9, rng.uniform(0.3, 0.6, n))


def _nucleolar(rng, grid, cell):
    n = rng.integers(2, 6)
    xs, ys = _points_inside(rng, n, cell, 0.6)
    return 0.12 * cell["inside"] + _spots(grid, xs, ys, cell["a"] * rng.uniform(0.13, 0.18), rng.uniform(0.8, 1.0, n))


def _centromere(rng, grid, cell):
    n = rng.integers(25, 50)
    xs, ys = _points_inside(rng, n, cell, 0.9)
    return 0.06 * cell["inside"] + _spots(grid, xs, ys, 0.7, rng.uniform(0.9, 1.2, n))


def _golgi(rng, grid, cell):
    n = rng.integers(4, 9)
    side = rng.uniform(0, 2 * np.pi)
    t = side + rng.normal(0, 0.35, n)
    r = rng.uniform(0.9, 1.25, n)
    xs = cell["cx"] + r * cell["a"] * np.cos(t)
    ys = cell["cy"] + r * cell["b"] * np.sin(t)
    return 0.1 * cell["inside"] + _spots(grid, xs, ys, rng.uniform(1.2, 2.0), rng.uniform(0.6, 0.9, n))


def _nuclear_membrane(rng, grid, cell):
    width = rng.uniform(0.1, 0.16)
    return 0.1 * cell["inside"] + 0.85 * np.exp(-((cell["rho"] - 0.95) ** 2) / (2 * width**2))


_PATTERNS: dict[str, Callable] = {
    "centromere": _centromere, "golgi": _golgi, "homogeneous": _homogeneous,
    "nuclear_membrane": _nuclear_membrane, "nucleolar": _nucleolar, "speckled": _speckled,
}


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    radius = max(1, int(3 * sigma))
    k = np.exp(-(np.arange(-radius, radius + 1) ** 2) / (2 * sigma**2))
    k /= k.sum()
    image = np.apply_along_axis(np.convolve, 0, image, k, mode="same")
    return np.apply_along_axis(np.convolve, 1, image, k, mode="same")


def draw_cell(pattern: str, *, size: int = 64, rng: np.random.Generator) -> np.ndarray:
    """One (size, size) uint8 image of ``pattern``."""
    x, y = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64))
    a = size * rng.uniform(0.26, 0.36)
    cell = {"cx": size / 2 + rng.normal(0, size * 0.04), "cy": size / 2 + rng.normal(0, size * 0.04),
            "a": a, "b": a * rng.uniform(0.7, 1.0), "angle": rng.uniform(0, np.pi)}
    c, s = np.cos(cell["angle"]), np.sin(cell["angle"])
    u = ((x - cell["cx"]) * c + (y - cell["cy"]) * s) / cell["a"]
    v = (-(x - cell["cx"]) * s + (y - cell["cy"]) * c) / cell["b"]
    cell["rho"] = np.sqrt(u**2 + v**2)  # 1.0 on the nuclear rim
    cell["inside"] = 1.0 / (1.0 + np.exp((cell["rho"] - 1.0) * 25))  # soft-edged nucleus mask
    image = _PATTERNS[pattern](rng, (x, y), cell)
    image = _blur(image, rng.uniform(0.6, 1.0)) * rng.uniform(0.45, 1.0)  # optics, then staining intensity
    image += rng.normal(0.05, 0.03, image.shape)  # background and camera noise
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def make_dataset(root: str | Path, *, per_class: tuple[int, int, int] = (40, 12, 12), size: int = 64,
                 seed: int = 0) -> Path:
    """Write train/val/test class folders of synthetic cells under ``root``; returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "val", "test"), per_class, strict=True):
        for pattern in CLASSES:
            folder = root / split / pattern
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(draw_cell(pattern, size=size, rng=rng)).save(folder / f"{pattern}_{i:04d}.png")
    (root / "README.txt").write_text(
        "SYNTHETIC data made by celltune (celltune.data.synthetic): procedurally drawn HEp-2-like staining patterns.\n"
        "Not real cells; for demos and tests only.\n")
    return root


# --- multi-label, multi-channel (protein-atlas style) ---------------------------------------------------------

HPA_CHANNELS = ("red", "green", "blue", "yellow")
SIZE_BANDS = (0.8, 1.3, 1.9, 2.6, 3.4, 4.3, 5.3)  # blob sigma in pixels at 64 px; 7 bands x 4 channels = 28 labels


def label_structure(label: int) -> tuple[str, float]:
    """The known structure of a synthetic label: its channel and the size of its blobs."""
    return HPA_CHANNELS[label % len(HPA_CHANNELS)], SIZE_BANDS[label // len(HPA_CHANNELS)]


def label_frequencies(num_labels: int) -> np.ndarray:
    """Label prevalence falling from 0.25 to 0.04, like the long tail of protein localisations."""
    return np.linspace(0.25, 0.04, num_labels)


def draw_multilabel_cell(labels: tuple[int, ...], *, size: int = 64, rng: np.random.Generator,
                         peak: int = 4000) -> dict[str, np.ndarray]:
    """One 16-bit image per channel: every label adds 2-4 blobs of its size band to its channel, on noise.

    Counts stay far below 65535 (``peak``), as in a dim 16-bit acquisition: reading it as 8 bits would lose it.
    """
    x, y = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64))
    scale = size / 64
    planes = {c: rng.normal(0.08, 0.02, (size, size)) for c in HPA_CHANNELS}
    for label in labels:
        channel, sigma = label_structure(label)
        n = rng.integers(2, 5)
        margin = 3 * sigma * scale
        xs, ys = rng.uniform(margin, size - margin, n), rng.uniform(margin, size - margin, n)
        planes[channel] += _spots((x, y), xs, ys, sigma * scale, rng.uniform(0.6, 1.0, n))
    return {c: (np.clip(p, 0, 1.5) / 1.5 * peak).astype(np.uint16) for c, p in planes.items()}


def make_multilabel_dataset(root: str | Path, *, n_images: int = 200, size: int = 64, num_labels: int = 28,
                            seed: int = 0) -> Path:
    """``root/train.csv`` (Id,Target), ``root/train/{Id}_{red,green,blue,yellow}.png`` (16-bit) and
    ``root/label_names.csv``; each label's prevalence from ``label_frequencies``, at least one label per image."""
    if num_labels > len(HPA_CHANNELS) * len(SIZE_BANDS):
        raise ValueError(f"at most {len(HPA_CHANNELS) * len(SIZE_BANDS)} synthetic labels")
    root = Path(root)
    (root / "train").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    freq = label_frequencies(num_labels)
    rows = ["Id,Target"]
    for i in range(n_images):
        labels = tuple(int(k) for k in np.flatnonzero(rng.random(num_labels) < freq))
        labels = labels or (int(rng.choice(num_labels, p=freq / freq.sum())),)
        image_id = f"cell{i:05d}"
        for channel, plane in draw_multilabel_cell(labels, size=size, rng=rng).items():
            Image.fromarray(plane).save(root / "train" / f"{image_id}_{channel}.png")
        rows.append(f"{image_id},{' '.join(map(str, labels))}")
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    names = ["id,name"] + [f"{k},{label_structure(k)[0]}-size{label_structure(k)[1]}" for k in range(num_labels)]
    (root / "label_names.csv").write_text("\n".join(names) + "\n")
    (root / "README.txt").write_text(
        "SYNTHETIC multi-label data made by celltune (celltune.data.synthetic): label k adds blobs of size band\n"
        "k // 4 to channel k % 4. Not real cells; for tests and benchmarks only.\n")
    return root
