import io

import numpy as np
from PIL import Image

from celltune.audit.duplicates import near_pairs
from celltune.data.image_facts import inspect_image


def _disc(rng: np.random.Generator, *, cy: float, cx: float, r: float, noise: np.ndarray | None = None) -> np.ndarray:
    """The scale issue's generated cell: a smooth disc on a 32x32 grid plus Gaussian noise of sd 3."""
    yy, xx = np.mgrid[0:32, 0:32]
    noise = rng.normal(0, 3, (32, 32)) if noise is None else noise
    return (255 / (1 + np.exp(np.hypot(yy - cy, xx - cx) - r)) + noise).round().clip(0, 255).astype(np.uint8)


def _facts(tmp_path, images: list[np.ndarray], fmt: str = "PNG"):
    paths = []
    for i, image in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        path = tmp_path / f"{i:04d}.{fmt.lower()}"
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    return [inspect_image(p) for p in paths]


def test_distinct_smooth_discs_are_not_near_duplicates(tmp_path):
    """Round, featureless cells of about the same size share a hash and a sharp rim, never their noise: none of 300
    distinct discs is paired (the issue allows 1% of them)."""
    rng = np.random.default_rng(0)
    discs = [_disc(rng, cy=rng.uniform(12, 20), cx=rng.uniform(12, 20), r=rng.uniform(6, 10)) for _ in range(300)]
    assert near_pairs(_facts(tmp_path, discs)) == []


def test_a_disc_resized_or_re_encoded_is_still_found(tmp_path):
    rng = np.random.default_rng(1)
    original = _disc(rng, cy=16, cx=16, r=8)
    resized = np.asarray(Image.fromarray(original).resize((40, 40), Image.Resampling.BILINEAR))
    others = [_disc(rng, cy=16.2, cx=15.8, r=8.1) for _ in range(3)]  # the same shape, other noise
    png = _facts(tmp_path, [original, resized, *others])
    assert [(i, j) for i, j, _ in near_pairs(png)] == [(0, 1)]
    (tmp_path / "jpeg").mkdir()
    jpeg = _facts(tmp_path / "jpeg", [original], fmt="JPEG")
    assert [(i, j) for i, j, _ in near_pairs([png[0], jpeg[0], *png[2:]])] == [(0, 1)]


def test_hash_candidates_pair_hashes_within_the_radius_and_cap_look_alikes():
    """Hand-built 64-bit hashes: 0 and its copies with 3 and 10 bits set are within HASH_BITS (10) of each other
    except 3 bits vs 10 bits where the bits differ (13); 11 bits set is out of reach of 0."""
    from celltune.audit.duplicates import HASH_BITS, hash_candidates

    assert HASH_BITS == 10
    three, ten, eleven = (1 << 3) - 1, ((1 << 10) - 1) << 20, (1 << 11) - 1
    far = (1 << 64) - 1  # all 64 bits: no one's neighbour
    hashes = np.array([0, three, ten, eleven, far], dtype=np.uint64)
    # |three ^ eleven| = 8 bits, |ten ^ eleven| = 21, |three ^ ten| = 13
    assert hash_candidates(hashes).tolist() == [[0, 1], [0, 2], [1, 3]]
    # Forty identical look-alikes: each paired with its 3 closest only, never 40 * 39 / 2 pairs.
    same = hash_candidates(np.zeros(40, dtype=np.uint64), neighbours=3)
    assert 40 * 3 / 2 <= len(same) <= 40 * 3 and (same[:, 0] < same[:, 1]).all()
