"""The image cache's folder as a whole: what it holds and clearing it (``celltune cache``).

A cache is never overwritten, only built anew when a file or an option changes, so old ones stay until removed:
caches this version cannot read (the single ``.npy`` files of the first format, or an older ``FORMAT``), builds that
were killed (``*.partial``), and caches of data or sizes no longer trained on. Each cache's ``index.json`` is touched
on every use, so "unused for 30 days" is known. Only names celltune writes are listed or removed: a ``--cache-dir``
shared with other files keeps them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

FORMAT = 2  # of a cache directory (celltune.data.cache): shards of .npy and an index; 1 was a single .npy file
INDEX = "index.json"
# <24 hex> a cache; <24 hex>.npy the first format's cache; <24 hex>.<pid>.partial a build in progress or killed
_NAME = re.compile(r"[0-9a-f]{24}(?P<npy>\.npy)?(?P<partial>\.\d+\.partial)?")
ABANDONED_SECONDS = 3600.0  # a build writes its shards continuously: one untouched for an hour was killed


def default_cache_dir() -> Path:
    if env := os.environ.get("CELLTUNE_CACHE_DIR"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "celltune"


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    bytes: int
    last_used: float  # seconds since the epoch
    state: str  # "ready", "old format" (this version cannot read it) or "unfinished" (a build, running or killed)
    images: int | None = None
    shape: tuple[int, ...] | None = None  # (C, S, S)

    @property
    def usable(self) -> bool:
        return self.state == "ready"

    def abandoned(self, now: float) -> bool:
        return self.state == "unfinished" and now - self.last_used > ABANDONED_SECONDS


def _size_and_newest(path: Path) -> tuple[int, float]:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    stats = [f.stat() for f in files]
    return sum(s.st_size for s in stats), max((s.st_mtime for s in stats), default=path.stat().st_mtime)


def _entry(path: Path) -> CacheEntry | None:
    match = _NAME.fullmatch(path.name)
    if match is None or (match["npy"] is None and not path.is_dir()):
        return None
    size, newest = _size_and_newest(path)
    if match["partial"]:
        return CacheEntry(path, size, newest, "unfinished")
    if match["npy"]:
        return CacheEntry(path, size, newest, "old format")
    try:
        index = json.loads((path / INDEX).read_text())
    except (OSError, ValueError):
        return CacheEntry(path, size, newest, "old format")  # no readable index: nothing this version can use
    used = (path / INDEX).stat().st_mtime
    state = "ready" if index.get("format") == FORMAT else "old format"
    return CacheEntry(path, size, used, state, images=index.get("count"), shape=tuple(index.get("shape", ())) or None)


def cache_entries(directory: Path) -> list[CacheEntry]:
    """Every cache in ``directory``, the least recently used first; [] when the folder does not exist."""
    if not directory.is_dir():
        return []
    entries = [e for p in directory.iterdir() if (e := _entry(p)) is not None]
    return sorted(entries, key=lambda e: e.last_used)


def removable(entries: list[CacheEntry], *, older_than: float | None = None, everything: bool = False,
              now: float | None = None) -> list[CacheEntry]:
    """What clearing removes: caches this version cannot read and killed builds; with ``older_than`` (seconds) also
    the caches unused for that long; with ``everything``, all but builds still running."""
    now = time.time() if now is None else now
    return [e for e in entries
            if e.abandoned(now) or e.state == "old format"
            or (e.usable and (everything or (older_than is not None and now - e.last_used > older_than)))]


def remove(entries: list[CacheEntry]) -> int:
    """Delete ``entries``; the bytes freed. One that another process removed first is skipped."""
    freed = 0
    for e in entries:
        try:
            if e.path.is_dir():
                shutil.rmtree(e.path)
            else:
                e.path.unlink()
        except FileNotFoundError:
            continue
        freed += e.bytes
    return freed


def amount(n_bytes: int) -> str:
    """12 -> '12 bytes', 3_400 -> '3.4 kB', 5_090_000_000 -> '5.09 GB'."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= size:
            return f"{n_bytes / size:.2f} {unit}" if unit == "GB" else f"{n_bytes / size:.1f} {unit}"
    return f"{n_bytes} bytes"


def held(directory: Path) -> str:
    """What the folder holds, for a message about disk space: '' when nothing; else its size, what ``--clear`` would
    remove and how to see and clear it."""
    entries = cache_entries(directory)
    if not entries:
        return ""
    stale = sum(e.bytes for e in removable(entries))
    return (f" (older caches hold {amount(sum(e.bytes for e in entries))} of it"
            + (f", {amount(stale)} of which this version cannot read" if stale else "")
            + f": `celltune cache --cache-dir {directory}` lists them, `--clear --older-than 30d` removes the unused)")


def touch(path: Path) -> None:
    """Mark the cache at ``path`` used now; a read-only cache folder stays as it is."""
    with suppress(OSError):
        (path / INDEX).touch()
