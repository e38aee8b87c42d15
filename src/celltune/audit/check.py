"""``celltune check``: every finding about a dataset at once, each with the files concerned and the fix.

Errors stop training: files that cannot be read, non-image files among the images, classes that are empty or too
small for the split, missing masks or masks of another size, groups that span pre-made splits, one image under two
labels. Warnings: duplicates and near-duplicates (across splits first: a leak), image properties or file names that
give the class away, class imbalance. Information: hidden files skipped (``celltune.data.imagefiles``). ``quick`` is
the part training runs before its first epoch: reading every image once, classes, masks, groups and exact duplicates.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from celltune.audit import confounds
from celltune.audit.duplicates import exact_groups, near_pairs
from celltune.audit.findings import Audit, Finding
from celltune.audit.groups import group_findings, source_name_findings
from celltune.config import DataConfig
from celltune.data.discovery import MaskFinder
from celltune.data.image_facts import ImageFacts, decoding_workers, inspect_image
from celltune.data.imagefiles import IMAGE_SUFFIXES, hidden_under, is_hidden
from celltune.data.images import ChannelFiles
from celltune.data.samples import LabelledSplits, Sample

_JUNK = {".ds_store", "thumbs.db", "desktop.ini"}


def _inspect_all(paths: list[Path], phash: bool) -> list[ImageFacts]:
    return [inspect_image(p, phash=phash) for p in paths]


def read_all(paths: Sequence[Path], *, workers: int | None = None, progress: Callable[[int], None] | None = None,
             phash: bool = True) -> dict[Path, ImageFacts]:
    """Every file decoded once, in worker processes (forked: they use PIL and numpy only) for large sets; ``phash``:
    with the perceptual hashes near-duplicate search needs."""
    workers = workers if workers is not None else decoding_workers()
    chunks = [list(paths[i : i + 128]) for i in range(0, len(paths), 128)]
    out: dict[Path, ImageFacts] = {}
    pool = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
            if workers > 1 and len(chunks) > 2 else None)
    try:
        flags = [phash] * len(chunks)
        for facts in (pool.map(_inspect_all, chunks, flags) if pool else map(_inspect_all, chunks, flags)):
            out.update((f.path, f) for f in facts)
            if progress:
                progress(len(facts))
    finally:
        if pool:
            pool.shutdown()
    return out


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


class _Checks:
    """The checks of one audit: each appends its findings."""

    def __init__(self, found: LabelledSplits, root: Path, facts: dict[Path, ImageFacts],
                 files: dict[Sample, list[Path]], fractions: tuple[float, float]) -> None:
        self.found, self.root, self.facts, self.files, self.fractions = found, root, facts, files, fractions
        self.findings: list[Finding] = []
        self.split_of = {s.path: split for split, samples in found.splits.items() for s in samples}

    def add(self, level: str, code: str, message: str, fix: str, items: list[str] | None = None) -> None:
        self.findings.append(Finding(level, code, message, fix, items or []))

    def unreadable(self) -> None:
        bad = [(p, f.error) for p, f in self.facts.items() if f.error is not None]
        if bad:
            self.add("error", "unreadable", f"{len(bad)} image file(s) cannot be read",
                     "replace or remove them, or train with --skip-unreadable",
                     [f"{_rel(p, self.root)}: {why}" for p, why in sorted(bad)])

    def frames(self) -> None:
        several = sorted((p, f.frames, f.format) for p, f in self.facts.items() if f.error is None and f.frames > 1)
        if several:
            self.add("warning", "several-frames", f"{len(several)} file(s) hold several pages or frames: training "
                     "reads multi-page TIFFs only with --channels naming the pages, and refuses animations",
                     "pass --channels 0,1,... for page-per-channel TIFFs; save one frame per file otherwise",
                     [f"{_rel(path, self.root)}: {n} {'pages' if fmt == 'TIFF' else 'frames'} ({fmt})"
                      for path, n, fmt in several])

    def non_images(self) -> None:
        folders = {p.parent for paths in self.files.values() for p in paths}
        strays = sorted(p for d in folders for p in d.iterdir() if p.is_file() and p.suffix.lower() not in
                        IMAGE_SUFFIXES and not is_hidden(p.name) and p.name.lower() not in _JUNK
                        and p.suffix.lower() != ".csv")
        if strays:
            self.add("error", "not-an-image", f"{len(strays)} file(s) among the images are no image celltune reads "
                     "(PNG, JPEG, TIFF, BMP): they are left out", "convert them to PNG or TIFF, or move them out",
                     [_rel(p, self.root) for p in strays])

    def hidden(self) -> None:
        found = hidden_under(self.root)
        if found:
            self.add("info", "hidden-files", f"{len(found)} hidden file(s) or folder(s) skipped as file browsers "
                     "skip them (names starting with a dot, such as .DS_Store and ._cell.png, and __MACOSX/); --json "
                     "lists them", "none needed", [_rel(p, self.root) + ("/" if p.is_dir() else "") for p in found])

    def classes(self) -> None:
        counts, names = self.found.counts(), self.found.class_names
        total = {c: sum(counts[s][c] for s in counts) for c in names}
        multilabel = self.found.multilabel
        for c in (c for c in names if total[c] == 0):
            self.add("warning" if multilabel else "error", "empty-class", f"class {c!r} has no images",
                     "add its images or remove the class (an empty folder, or an unused label id)")
        for c in (c for c in names if total[c] > 0):
            # An empty validation split is a run without validation (no group could be spared), not a small class.
            missing = [s for s in ("train", "val", "test") if s in counts and counts[s][c] == 0
                       and (s != "val" or any(counts[s].values()))]
            if not missing:
                continue
            parts = ", ".join(f"{s} {counts[s][c]}" for s in counts)
            if self.found.celltune_split:
                self.add("warning" if multilabel else "error", "class-too-small",
                         f"class {c!r}: {total[c]} image(s) leave none for {' and '.join(missing)} ({parts})",
                         "add images of it, or lower --val-fraction / --test-fraction (a class needs at least "
                         f"{needed_images(*self.fractions)} images)")
            else:
                level = "warning" if missing == ["test"] or multilabel else "error"
                self.add(level, "class-missing", f"class {c!r} has no {' or '.join(missing)} images ({parts})",
                         f"add {c!r} images to {' and '.join(missing)}")

    def masks(self, finder: MaskFinder, *, sizes: bool) -> None:
        missing, ambiguous, misfit = [], [], []
        mask_dir = finder.mask_dir
        for sample, paths in self.files.items():
            found = finder.candidates(sample.path)
            if not found:
                missing.append(_rel(sample.path, self.root))
            elif len(found) > 1:
                ambiguous.append(f"{_rel(sample.path, self.root)}: " + ", ".join(_rel(m, mask_dir) for m in found))
            elif sizes:
                mask = found[0]
                image, m = self.facts.get(paths[0]), self.facts.get(mask)
                if image and m and image.error is None and m.error is None and (m.width, m.height) != (
                        image.width, image.height):
                    misfit.append(f"{_rel(mask, mask_dir)}: {m.width}x{m.height}, its image {image.width}x"
                                  f"{image.height}")
        if missing:
            self.add("error", "mask-missing", f"{len(missing)} image(s) have no mask under {mask_dir}",
                     "add masks under the images' relative folders, named by their stems (any image "
                     "extension), or drop --mask-dir", missing)
        if ambiguous:
            self.add("error", "mask-ambiguous", f"{len(ambiguous)} image(s) have more than one mask",
                     "keep one mask per image (the same stem with two extensions is two masks)", ambiguous)
        if misfit:
            self.add("error", "mask-size", f"{len(misfit)} mask(s) differ in size from their image",
                     "save each mask at its image's size", misfit)

    def groups(self) -> None:
        if self.found.celltune_split or not any(s.group for s in self.found.samples):
            return
        where: dict[str, Counter[str]] = defaultdict(Counter)
        for split, samples in self.found.splits.items():
            for s in samples:
                where[str(s.group)][split] += 1
        spanning = {g: c for g, c in where.items() if len(c) > 1}
        if spanning:
            self.add("error", "group-across-splits", f"{len(spanning)} group(s) have images in more than one of the "
                     "pre-made splits: the model is scored on what it has seen", "move each group's images into "
                     "one split, or give celltune one class-folder tree to split by group (--accept "
                     "group-across-splits trains on the splits as they are)",
                     [f"{g}: " + ", ".join(f"{s} {n}" for s, n in c.items()) for g, c in sorted(spanning.items())])

    def _label(self, sample: Sample) -> str:
        label = sample.label
        return self.found.class_names[label] if isinstance(label, int) else str(label)

    def _pairs(self, pairs: Sequence[tuple[Sample, ...]], kind: str, how: str) -> None:
        leak = [p for p in pairs if len({self.split_of[s.path] for s in p}) > 1]
        within = [p for p in pairs if len({self.split_of[s.path] for s in p}) == 1]
        for found, level, where, fix in ((leak, "warning", "across splits (a leak: scored on images seen in "
                                          "training)", "keep one of each, or split so that copies stay together "
                                          "(--groups)"),
                                         (within, "warning", "within a split", "keep one of each")):
            if found:
                self.add(level, f"{kind}-{'leak' if found is leak else 'duplicate'}",
                         f"{len(found)} {how} {where}", fix,
                         [" = ".join(f"{_rel(s.path, self.root)} ({self.split_of[s.path]})" for s in p) for p in found])

    def duplicates(self, samples: list[Sample], facts: list[ImageFacts], *, near: bool, workers: int) -> None:
        groups = [[samples[i] for i in g] for g in exact_groups(facts)]
        conflicting = [g for g in groups if len({s.label for s in g}) > 1]
        if conflicting:
            self.add("error", "label-conflict", f"{len(conflicting)} image(s) occur under different labels",
                     "keep the copy with the right label, or train on the data as published with --accept "
                     "label-conflict", [" = ".join(f"{_rel(s.path, self.root)} ({self._label(s)})" for s in g)
                                        for g in conflicting])
        self._pairs([tuple(g) for g in groups if len({s.label for s in g}) == 1], "exact", "groups of identical images")
        if near:
            pairs = [(samples[i], samples[j]) for i, j, _ in near_pairs(facts, workers=workers)]
            disagree = [p for p in pairs if p[0].label != p[1].label]
            if disagree:
                self.add("warning", "near-label-conflict", f"{len(disagree)} pair(s) of near-duplicate images stand "
                         "under different labels: the same cell annotated twice, or two cells too alike to tell",
                         "look at each pair: keep the copy with the right label, or remove both", [" = ".join(
                             f"{_rel(s.path, self.root)} ({self._label(s)}, {self.split_of[s.path]})" for s in p)
                             for p in disagree])
            self._pairs([p for p in pairs if p[0].label == p[1].label], "near", "pairs of near-duplicate images "
                        "(resized, re-encoded, shifted or the same cell captured twice)")


def needed_images(val_fraction: float, test_fraction: float) -> int:
    """The fewest images of a class that the stratified split leaves at least one of in every part."""
    for n in range(1, 10_000):
        parts = [round(f * n) for f in (val_fraction, test_fraction) if f > 0]
        if min(parts, default=1) >= 1 and n - sum(parts) >= 1:
            return n
    raise ValueError("fractions leave no image for training")


def audit(found: LabelledSplits, root: str | Path, *, mask_dir: str | Path | None = None, quick: bool = False,
          fractions: tuple[float, float] = (DataConfig.val_fraction, DataConfig.test_fraction),
          workers: int | None = None, progress: Callable[[int], None] | None = None) -> Audit:
    """Check ``found`` (from ``discover`` with val/test ``fractions``); ``quick``: the part training runs (no
    near-duplicates, properties, names, imbalance, stray files or mask sizes)."""
    root = Path(root)
    channel_files = ChannelFiles()
    files = {s: channel_files.of(s.path) or [s.path] for s in found.samples}
    finder = MaskFinder(root, Path(mask_dir)) if mask_dir else None
    masks = [c[0] for s in files if finder and len(c := finder.candidates(s.path)) == 1]
    workers = workers if workers is not None else decoding_workers()
    facts = read_all([p for paths in files.values() for p in paths] + ([] if quick else masks), workers=workers,
                     progress=progress, phash=not quick)
    checks = _Checks(found, root, facts, files, fractions)
    checks.unreadable()
    checks.classes()
    checks.groups()
    if finder:
        checks.masks(finder, sizes=not quick)
    samples = list(files)
    first = [facts[files[s][0]] for s in samples]
    checks.duplicates(samples, first, near=not quick, workers=workers)
    if not quick:
        checks.non_images()
        checks.hidden()
        checks.frames()
        checks.findings += confounds.findings(found, samples, first, root)
        checks.findings += group_findings(found) + source_name_findings(found, root)
    order = {"error": 0, "warning": 1, "info": 2}
    # errors first; among warnings, leaks across splits first
    findings = sorted(checks.findings, key=lambda f: (order[f.level], not f.code.endswith("leak")))
    return Audit(root, findings, facts)
