"""Which classes a run works on: every class the data holds, or those ``--classes`` names, less those
``--exclude-classes`` names and those with fewer than ``--min-class-images`` images in the whole data folder (left out
with a warning that names them and their counts).

The choice is made where the layout is read, before any split or fold, so every split, fold and score sees the same
classes; a run records it with its split (``celltune.data.discovery.split_record``), so that evaluation and export find
the same images again.
"""

from __future__ import annotations

import difflib
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from celltune.data.layouts import Found
from celltune.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CHOICE_FIELDS = ("classes", "exclude_classes", "min_class_images")  # the DataConfig fields that choose classes


@dataclass(frozen=True)
class ClassChoice:
    only: tuple[str, ...] | None = None  # --classes: these and no others
    exclude: tuple[str, ...] = ()  # --exclude-classes
    min_images: int = 0  # --min-class-images: 0 keeps every class
    strict: bool = True  # a name the data does not hold is an error (else: nothing to leave out)

    @classmethod
    def of(cls, saved: Any) -> ClassChoice:
        """The choice of a DataConfig, or of a mapping with its field names (a checkpoint's split record)."""
        get = saved.get if isinstance(saved, Mapping) else lambda name, default=None: getattr(saved, name, default)
        only, exclude = get("classes"), get("exclude_classes")
        return cls(tuple(only) if only else None, tuple(exclude or ()), int(get("min_class_images") or 0))

    def __bool__(self) -> bool:
        return self.only is not None or bool(self.exclude) or self.min_images > 0


EVERY_CLASS = ClassChoice()


def describe(left_out: Mapping[str, Mapping[str, Any]]) -> str:
    """``basophil (1 image: --exclude-classes), ...`` for the classes ``choose_classes`` left out."""
    return ", ".join(f"{name} ({v['images']} image{'s' * (v['images'] != 1)}: {v['why']})"
                     for name, v in left_out.items())


def _check_names(names: Iterable[str], known: list[str], flag: str, root: Path) -> None:
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            raise ConfigError(f"{flag} {name}: {root} has no class of that name"
                              + (f"; did you mean {' or '.join(close)}?" if close else "")
                              + f" (its classes: {', '.join(known)})")


def _why_left_out(name: str, images: int, choice: ClassChoice) -> str | None:
    if choice.only is not None and name not in choice.only:
        return "not in --classes"
    if name in choice.exclude:
        return "--exclude-classes"
    if images < choice.min_images:
        return f"fewer than --min-class-images {choice.min_images}"
    return None


def choose_classes(found: Found, choice: ClassChoice, *, root: Path) -> tuple[Found, dict[str, dict[str, Any]]]:
    """``found`` with only the chosen classes, relabelled in the data's class order, and the classes left out:
    {name: {"images": count, "why": reason}}."""
    if not choice:
        return found, {}
    samples = found.pool if found.pool is not None else [s for v in (found.splits or {}).values() for s in v]
    if any(isinstance(s.label, tuple) for s in samples):
        raise ConfigError(f"{root}: multi-label data; --classes, --exclude-classes and --min-class-images choose "
                          "among the classes of single-label data: leave them out, or drop the label ids from the "
                          "CSV's Target column")
    names = found.class_names
    if choice.strict:
        _check_names(choice.only or (), names, "--classes", root)
        _check_names(choice.exclude, names, "--exclude-classes", root)
    counts = Counter(s.label for s in samples)
    left_out: dict[str, dict[str, Any]] = {name: {"images": counts[i], "why": why} for i, name in enumerate(names)
                if (why := _why_left_out(name, counts[i], choice)) is not None}
    kept = [n for n in names if n not in left_out]
    if len(kept) < 2:
        raise DataError(f"{root}: {len(kept)} class(es) left ({', '.join(kept) or 'none'}) once {describe(left_out)} "
                        "are left out; "
                        "a classifier needs two: choose other classes, or a lower --min-class-images")
    small = {n: v["images"] for n, v in left_out.items() if v["why"].startswith("fewer")}
    if small:
        log.warning("leaving out %d class(es) with fewer than --min-class-images %d images: %s", len(small),
                    choice.min_images, ", ".join(f"{n} ({k} image{'s' * (k != 1)})" for n, k in small.items()))
    if len(small) < len(left_out):
        log.info("classes left out as asked: %s", ", ".join(n for n in left_out if n not in small))
    index = {names.index(n): i for i, n in enumerate(kept)}

    def relabelled(part: list | None) -> list | None:
        return None if part is None else [replace(s, label=index[s.label]) for s in part if s.label in index]

    # A split left with no image (its classes all left out) is no split: discover then says which one is missing.
    splits = None if found.splits is None else {k: part for k, v in found.splits.items() if (part := relabelled(v))}
    return replace(found, class_names=kept, pool=relabelled(found.pool), splits=splits), left_out
