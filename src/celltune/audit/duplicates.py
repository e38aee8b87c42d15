"""Duplicate images: exact ones (the same decoded pixels, whatever the file) and near ones (the same image resized,
re-encoded or slightly shifted, or the same cell captured twice).

A near-duplicate pair has perceptual hashes (imagehash's pHash of the grey thumbnail, computed as each file is read)
within ``HASH_BITS`` of 64 bits, one image among the other's closest ``NEIGHBOURS``, confirmed by the fine detail of
the two thumbnails (each minus its blur) correlating at least ``DETAIL_CORRELATION`` at the best alignment within
``SHIFT`` pixels, away from the cells' outlines. The hash pairs any two cells of a similar shape, and so does the
detail of their outlines: two different round cells of the same size have the same sharp rim. What the same cell has
twice, and two cells never, is the texture inside and around it, or for a copy its very noise; so only the pixels off
both outlines are compared, and a pair with too few of them is not confirmed.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from celltune.data.image_facts import THUMB, ImageFacts

log = logging.getLogger(__name__)

HASH_BITS = 10
DETAIL_CORRELATION = 0.85
SHIFT = 2  # pixels of the thumbnail either way
OUTLINE = 0.35  # on an outline: the blurred thumbnail's gradient above this share of its largest (and next to it)
MIN_COMPARED = 0.2  # the share of the thumbnail that must lie off both outlines for a pair to be confirmed
NEIGHBOURS = 16  # each image's closest hashes within HASH_BITS that are confirmed (on HEp-2 a copy is among its 3)
SEARCH_BREADTH = 64  # candidates the graph index keeps while it searches (faiss efSearch): its recall


def exact_groups(facts: Sequence[ImageFacts]) -> list[list[int]]:
    """Indices of images with the same pixels, groups of two or more."""
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, f in enumerate(facts):
        if f.error is None:
            by_hash[f.sha1].append(i)
    return [members for members in by_hash.values() if len(members) > 1]


def hash_candidates(hashes: np.ndarray, *, neighbours: int = NEIGHBOURS) -> np.ndarray:
    """(P, 2) index pairs i < j of (N,) uint64 hashes within ``HASH_BITS`` of each other, each image paired with at
    most its ``neighbours`` closest: a graph index (faiss's binary HNSW) finds them in about N log N instead of
    comparing all N^2 / 2 pairs. Look-alike cells (small, smooth, round) can all stand within the hash radius of
    each other, so an exhaustive list would itself grow as N^2; a copy sits among its closest few hashes."""
    import faiss

    if len(hashes) < 2:
        return np.empty((0, 2), dtype=np.int64)
    codes = np.ascontiguousarray(hashes.astype(">u8").view(np.uint8).reshape(-1, 8))  # (N, 8) bytes, 64 bits
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # a graph built in one thread is the same on every machine
    try:
        index = faiss.IndexBinaryHNSW(64, 16)
        index.hnsw.efConstruction = 40
        index.add(codes)
    finally:
        faiss.omp_set_num_threads(threads)
    index.hnsw.efSearch = max(SEARCH_BREADTH, neighbours + 1)
    distances, found = index.search(codes, min(neighbours + 1, len(hashes)))  # (N, k): the image itself among them
    rows = np.repeat(np.arange(len(hashes))[:, None], found.shape[1], axis=1)
    other = (found >= 0) & (found != rows)  # among equal hashes the image itself need not come first
    keep = other & (np.cumsum(other, axis=1) <= neighbours) & (distances <= HASH_BITS)
    pairs = np.sort(np.stack([rows[keep], found[keep]], axis=1), axis=1)
    return np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)


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
    pixels that both (P, S, S) ``keep`` masks keep; -1 where fewer than ``MIN_COMPARED`` of them are kept.

    Each shift needs six sums over the pixels both keep (their count, each image's values and squares, the cross
    products), all read off one (P, 3, 3) product of [keep, value, value^2] stacks."""
    size, count = a.shape[-1], len(a)
    ka, kb = keep_a.astype(np.float32), keep_b.astype(np.float32)
    left = np.stack([ka, a * ka, a * a * ka], axis=1, dtype=np.float32)  # (P, 3, S, S)
    right = np.stack([kb, b * kb, b * b * kb], axis=1, dtype=np.float32)
    best = np.full(count, -1.0)
    for dy in range(-SHIFT, SHIFT + 1):
        for dx in range(-SHIFT, SHIFT + 1):
            ya, xa = slice(max(dy, 0), size + min(dy, 0)), slice(max(dx, 0), size + min(dx, 0))
            yb, xb = slice(max(-dy, 0), size + min(-dy, 0)), slice(max(-dx, 0), size + min(-dx, 0))
            sums = np.einsum("pin,pjn->pij", np.ascontiguousarray(left[:, :, ya, xa]).reshape(count, 3, -1),
                             np.ascontiguousarray(right[:, :, yb, xb]).reshape(count, 3, -1)).astype(np.float64)
            n, sa, sb, sab = sums[:, 0, 0], sums[:, 1, 0], sums[:, 0, 1], sums[:, 1, 1]
            n_ = np.maximum(n, 1)
            cov = sab - sa * sb / n_
            var_a, var_b = np.maximum(sums[:, 2, 0] - sa**2 / n_, 0), np.maximum(sums[:, 0, 2] - sb**2 / n_, 0)
            corr = np.where(n >= MIN_COMPARED * size * size, cov / (np.sqrt(var_a * var_b) + 1e-6), -1.0)
            best = np.maximum(best, corr)
    return best


_SHARED: dict[str, np.ndarray] = {}  # what forked confirmation workers read: details and masks, set before the fork


def _confirm(pairs: np.ndarray) -> np.ndarray:
    details, keep = _SHARED["details"], _SHARED["keep"]
    i, j = pairs[:, 0], pairs[:, 1]
    return _best_correlation(details[i], details[j], keep[i], keep[j])


def near_pairs(facts: Sequence[ImageFacts], *, chunk: int = 2048, workers: int = 1) -> list[tuple[int, int, float]]:
    """(i, j, detail correlation) of near-duplicate pairs that are not exact duplicates, i < j; the candidate pairs
    are confirmed in ``workers`` forked processes."""
    readable = [i for i, f in enumerate(facts) if f.error is None and f.thumb is not None]
    if len(readable) < 2:
        return []
    hashes = np.array([facts[i].phash for i in readable], dtype=np.uint64)
    pairs = hash_candidates(hashes)
    sha1 = np.array([facts[i].sha1 for i in readable])
    pairs = pairs[sha1[pairs[:, 0]] != sha1[pairs[:, 1]]]
    if not len(pairs):
        return []
    # Only the images in a candidate pair, a block at a time: the filters' temporaries are several times the result.
    used, pairs = np.unique(pairs, return_inverse=True)
    pairs = pairs.reshape(-1, 2)
    details = np.empty((len(used), THUMB, THUMB), dtype=np.float32)
    keep = np.empty((len(used), THUMB, THUMB), dtype=bool)
    for start in range(0, len(used), 4096):
        thumbs = np.stack([facts[readable[k]].thumb for k in used[start : start + 4096]])
        details[start : start + 4096], keep[start : start + 4096] = _details(thumbs), ~_outlines(thumbs)
    _SHARED.update(details=details, keep=keep)
    parts = [pairs[start : start + chunk] for start in range(0, len(pairs), chunk)]
    try:
        if workers > 1 and len(parts) > 1:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                corr = np.concatenate(list(pool.map(_confirm, parts)))
        else:
            corr = np.concatenate([_confirm(part) for part in parts])
    finally:
        _SHARED.clear()
    found = [(readable[used[i]], readable[used[j]], float(c)) for (i, j), c in zip(pairs, corr, strict=True)
             if c >= DETAIL_CORRELATION]
    log.info("near-duplicates: %d of %d candidate pairs confirmed among %d images", len(found), len(pairs),
             len(readable))
    return found
