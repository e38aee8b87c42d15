"""Every CSV celltune writes, and reads back, goes through here: no cell of it can become a spreadsheet formula.

File and class names are the user's, and a spreadsheet runs a cell that begins with ``=``, ``+``, ``-``, ``@``, a tab
or a carriage return as a formula (CSV injection: a folder holding ``=HYPERLINK("http://x","y").png`` would put a
link in a predictions table). As OWASP recommends, such a cell is written with a leading apostrophe, which
spreadsheets show as text. A cell that already begins with an apostrophe gets one more, so that reading strips exactly
one and gives back the original: ``predict --resume`` and ``cv`` read their own rows through ``reader`` and
``read_dicts``. Numbers (``-0.25``, ``1e-05``) are left as they are: a spreadsheet reads them as numbers, never as
formulas.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Paths are the file system's: a name that is no valid UTF-8 goes through as it came (surrogate escapes).
_ENCODING, _ERRORS = "utf-8", "surrogateescape"
_GUARD = "'"
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def open_csv(path: Path, mode: str = "r") -> IO[str]:
    """``path`` opened for the csv module: UTF-8, file names that are not UTF-8 kept as they came."""
    return path.open(mode, newline="", encoding=_ENCODING, errors=_ERRORS)


def decode(raw: bytes) -> str:
    """A line of a CSV read as bytes, as ``open_csv`` would have read it."""
    return raw.decode(_ENCODING, _ERRORS)


def guard(value: Any) -> Any:
    """``value`` as a cell no spreadsheet runs: text that begins like a formula (or with the guard itself) gets a
    leading apostrophe; numbers and everything else are unchanged."""
    if not isinstance(value, str) or not value.startswith((*FORMULA_STARTS, _GUARD)) or _NUMBER.fullmatch(value):
        return value
    return _GUARD + value


def unguard(cell: str) -> str:
    """The value ``guard`` was given, from the cell it wrote."""
    return cell[1:] if cell.startswith(_GUARD) else cell


class Writer:
    """``csv.writer`` whose cells are guarded."""

    def __init__(self, f: IO[str]) -> None:
        self._writer = csv.writer(f)

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow([guard(v) for v in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


class DictWriter:
    """``csv.DictWriter`` whose cells (and header) are guarded."""

    def __init__(self, f: IO[str], fieldnames: Sequence[str]) -> None:
        self.fieldnames = list(fieldnames)
        self._writer = Writer(f)

    def writeheader(self) -> None:
        self._writer.writerow(self.fieldnames)

    def writerows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self._writer.writerows([row.get(k, "") for k in self.fieldnames] for row in rows)


def reader(lines: Iterable[str]) -> Iterator[list[str]]:
    """The rows of a CSV celltune wrote, each cell as it was before guarding."""
    for row in csv.reader(lines):
        yield [unguard(cell) for cell in row]


def read_dicts(lines: Iterable[str]) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows as dicts) of a CSV celltune wrote, as they were before guarding."""
    rows = reader(lines)
    header = next(rows, [])
    return header, [dict(zip(header, row, strict=False)) for row in rows]
