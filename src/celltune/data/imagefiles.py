"""Which files are images: the suffixes celltune reads, and never a hidden file.

A class folder copied from a Mac holds ``.DS_Store``, AppleDouble files (``._cell.jpg``, the resource fork of
``cell.jpg``) and sometimes ``.DS_169665.jpg``-style leftovers; a zip made on a Mac adds a ``__MACOSX/`` folder of
them. None is a cell image, and reading one fails. As file browsers do, every name starting with a dot and every
``__MACOSX`` folder is skipped wherever celltune lists images; ``celltune check`` counts what was skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
_MAC_FOLDERS = frozenset({"__MACOSX"})


def is_hidden(name: str) -> bool:
    """A dot-file or dot-folder, or a Mac zip's ``__MACOSX`` folder: what file browsers hide."""
    return name.startswith(".") or name in _MAC_FOLDERS


def is_image_file(path: Path) -> bool:
    """A name celltune reads as an image (``path`` is not checked to exist)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not is_hidden(path.name)


def hidden_under(root: Path) -> list[Path]:
    """The hidden files and folders under ``root`` (a hidden folder counts once; nothing inside it is listed)."""
    found: list[Path] = []
    for directory, subdirs, names in os.walk(root):
        found += [Path(directory) / n for n in sorted([*subdirs, *names]) if is_hidden(n)]
        subdirs[:] = sorted(d for d in subdirs if not is_hidden(d))
    return found
