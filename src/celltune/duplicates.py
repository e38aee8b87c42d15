"""Duplicate images: exact ones (the same decoded pixels, whatever the file) and near ones (the same image resized,
re-encoded or slightly shifted, or the same cell captured twice).

A near-duplicate pair has perceptual hashes (imagehash's pHash of the grey thumbnail) within ``HASH_BITS`` of 64 bits,
confirmed by the fine detail of the two thumbnails (each minus its blur) correlating at least ``DETAIL_CORRELATION``
at the best alignment within ``SHIFT`` pixels, away from the cells' outlines. The hash pairs any two cells of a
similar shape, and so does the detail of their outlines: two different round cells of the same size have the same
sharp rim. What the same cell has twice, and two cells never, is the texture inside and around it, or for a copy its
very noise; so only the pixels off both outlines are compared, and a pair with too few of them is not confirmed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from celltune.images import ImageFacts

HASH_BITS = 10
DETAIL_CORRELATION = 0.85
SHIFT = 2  # pixels of the thumbnail either way
OUTLINE = 0.35  # on an outline: the blurred thumbnail's gradient above this share of its largest (and next to it)
MIN_COMPARED = 0.2  # the share of the thumbnail that must lie off both outlines for a pair to be confirmed


def exact_groups(facts: Sequence[ImageFacts]) -> list[list[int]]:
    """Indices of images with the same pixels, groups of two or more."""
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, f in enumerate(facts):
        if f.error is None:
            by_hash[f.sha1].append(i)
    return [members for members in by_hash.values() if len(members) > 1]


def perceptual_hashes(thumbs: np.ndarray) -> np.ndarray:
    """(N,) uint64 pHash of (N, 32, 32) uint8 grey thumbnails, as imagehash.phash computes it."""
    import imagehash
    from PIL import Image

    return np.array([int(str(imagehash.phash(Image.fromarray(t))), 16) for t in thumbs], dtype=np.uint64)


def _details(thumbs: np.ndarray) -> np.ndarray:
    """(N, S, S) float32: each thumbnail minus its blur, the texture a cell's outline does not give."""
    from scipy.ndimage import gaussian_filter

    x = thumbs.astype(np.float32)
    return x - gaussian_filter(x, sigma=(0, 2, 2))


def _outlines(thumbs: np.ndarray) -> np.ndarray:
    """(N, S, S) bool: the pixels on or next to the outlines of (N, S, S) thumbnails, where their blur changes
    fastest."""
    from scipy.ndimage import gaussian_filter, maximum_filter

    smooth = gaussian_filter(thumbs.astype(np.float32), sigma=(0, 1.5, 1.5))
    gy, gx = np.gradient(smooth, axis=(1, 2))
    steep = np.hypot(gy, gx)
    band = steep > OUTLINE * np.maximum(steep.max(axis=(1, 2), keepdims=True), 1e-6)
    return maximum_filter(band, size=(1, 3, 3))


def _best_correlation(a: np.ndarray, b: np.ndarray, keep_a: np.ndarray, keep_b: np.ndarray) -> np.ndarray:
    """(P,) the highest correlation of each pair of (P, S, S) images over shifts of up to SHIFT pixels, over the
    pixels that both (P, S, S) ``keep`` masks keep; -1 where fewer than ``MIN_COMPARED`` of them are kept."""
    size = a.shape[-1]
    best = np.full(len(a), -1.0)
    for dy in range(-SHIFT, SHIFT + 1):
        for dx in range(-SHIFT, SHIFT + 1):
            ya, xa = slice(max(dy, 0), size + min(dy, 0)), slice(max(dx, 0), size + min(dx, 0))
            yb, xb = slice(max(-dy, 0), size + min(-dy, 0)), slice(max(-dx, 0), size + min(-dx, 0))
            keep = (keep_a[:, ya, xa] & keep_b[:, yb, xb]).reshape(len(a), -1)
            count = keep.sum(1)
            aa, bb = a[:, ya, xa].reshape(len(a), -1) * keep, b[:, yb, xb].reshape(len(b), -1) * keep
            aa = (aa - (aa.sum(1) / np.maximum(count, 1))[:, None]) * keep
            bb = (bb - (bb.sum(1) / np.maximum(count, 1))[:, None]) * keep
            norm = np.sqrt((aa * aa).sum(1) * (bb * bb).sum(1)) + 1e-6
            corr = np.where(count >= MIN_COMPARED * size * size, (aa * bb).sum(1) / norm, -1.0)
            best = np.maximum(best, corr)
    return best


def near_pairs(facts: Sequence[ImageFacts], *, chunk: int = 4096) -> list[tuple[int, int, float]]:
    """(i, j, detail correlation) of near-duplicate pairs that are not exact duplicates, i < j."""
    readable = [i for i, f in enumerate(facts) if f.error is None and f.thumb is not None]
    if len(readable) < 2:
        return []
    thumbs = np.stack([facts[i].thumb for i in readable])  # type: ignore[misc]
    hashes = perceptual_hashes(thumbs)
    candidates = []
    for k in range(len(hashes) - 1):  # (N^2 / 2 hash comparisons, vectorised per row)
        close = np.flatnonzero(np.bitwise_count(hashes[k] ^ hashes[k + 1 :]) <= HASH_BITS) + k + 1
        candidates += [(k, int(m)) for m in close if facts[readable[k]].sha1 != facts[readable[m]].sha1]
    if not candidates:
        return []
    details, keep = _details(thumbs), ~_outlines(thumbs)
    pairs = np.array(candidates)
    out = []
    for start in range(0, len(pairs), chunk):
        part = pairs[start : start + chunk]
        i, j = part[:, 0], part[:, 1]
        corr = _best_correlation(details[i], details[j], keep[i], keep[j])
        out += [(readable[i], readable[j], float(c)) for (i, j), c in zip(part, corr, strict=True)
                if c >= DETAIL_CORRELATION]
    return out
