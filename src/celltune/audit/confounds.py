"""What gives the class away without looking at the cells: image properties that go with the class (size, mode, bit
depth, format, pages), class names written in file names, and how unequal the classes are."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from celltune.audit.findings import Finding
from celltune.data.image_facts import ImageFacts
from celltune.data.samples import LabelledSplits, Sample

PROPERTIES = {"width": lambda f: f.width, "height": lambda f: f.height, "mode": lambda f: f.mode,
              "bit depth": lambda f: f.bits, "format": lambda f: f.format, "pages": lambda f: f.frames}
GAIN = 0.10  # a property that predicts the class this much better than the largest class's share is reported
IMBALANCE = 3.0  # largest / smallest class from which imbalance is a warning


def property_findings(labels: Sequence[int], facts: Sequence[ImageFacts], names: list[str]) -> list[Finding]:
    """Per property: values common enough to matter (at least 5 images and 0.5%) each predict their majority class;
    when that beats the largest class's share by GAIN, the values found in only some classes are listed."""
    n, out = len(labels), []
    base = max(Counter(labels).values()) / n
    for prop, get in PROPERTIES.items():
        by_value: dict[object, Counter[int]] = defaultdict(Counter)
        for label, f in zip(labels, facts, strict=True):
            by_value[get(f)][label] += 1
        if len(by_value) < 2:
            continue
        common = {v: c for v, c in by_value.items() if sum(c.values()) >= max(5, 0.005 * n)}
        rest: Counter[int] = sum((c for v, c in by_value.items() if v not in common), Counter())
        predicted = sum(max(c.values()) for c in [*common.values(), rest] if c) / n
        if predicted - base < GAIN:
            continue
        partial = sorted(((v, c) for v, c in common.items() if len(c) < len(names)),
                         key=lambda vc: -sum(vc[1].values()))
        lines = [f"{prop} {v} occurs only in {', '.join(names[k] for k in sorted(c))} ({sum(c.values())} images)"
                 for v, c in partial[:5]]
        out.append(Finding("warning", "property-confound",
                            f"the {prop} predicts the class ({predicted:.0%} right from it alone, against "
                            f"{base:.0%} for always the largest class): a model can learn it instead of the cells",
                            f"bring every class to the same {prop} (e.g. resample or convert the images) or check how "
                            "each class was acquired", lines))
    return out


def _letters(name: str) -> str:
    """Lower-case letters and digits only: 'Nuclear_Membrane-01' -> 'nuclearmembrane01'."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def name_findings(samples: Sequence[Sample], names: list[str], root: Path) -> list[Finding]:
    """File names that contain their own class's name (names of 3 letters or more)."""
    hits = [s.path.relative_to(root).as_posix() if s.path.is_relative_to(root) else str(s.path) for s in samples
            if isinstance(s.label, int) and len(word := _letters(names[s.label])) >= 3
            and word in _letters(s.path.stem)]
    if not hits:
        return []
    return [Finding("warning", "class-in-name", f"{len(hits)} of {len(samples)} file names contain their class's "
                    "name: a sort, a split or a tool that reads names can leak the label",
                    "rename the files (ids only) if the names came from the labels", hits)]


def imbalance_findings(found: LabelledSplits) -> list[Finding]:
    """The largest class against the smallest non-empty one, in the training split."""
    counts = {c: n for c, n in found.counts().get("train", {}).items() if n > 0}
    if len(counts) < 2 or found.multilabel:
        return []
    big, small = max(counts, key=counts.__getitem__), min(counts, key=counts.__getitem__)
    if counts[big] == counts[small]:  # max and min would both name the first class
        return [Finding("info", "imbalance", f"classes balanced in train: {counts[big]} images each", "none needed")]
    ratio = counts[big] / counts[small]
    level = "warning" if ratio >= IMBALANCE else "info"
    return [Finding(level, "imbalance", f"class imbalance {ratio:.1f}:1 in train ({big} {counts[big]}, {small} "
                     f"{counts[small]})", "train with --balance sampler (or loss) and read ACA, not accuracy"
                     if level == "warning" else "none needed")]


def findings(found: LabelledSplits, samples: Sequence[Sample], facts: Sequence[ImageFacts],
             root: Path) -> list[Finding]:
    readable = [(s, f) for s, f in zip(samples, facts, strict=True) if f.error is None and isinstance(s.label, int)]
    out = property_findings([s.label for s, _ in readable], [f for _, f in readable],  # type: ignore[misc]
                            found.class_names) if readable and not found.multilabel else []
    return out + name_findings(samples, found.class_names, root) + imbalance_findings(found)
