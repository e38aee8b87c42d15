"""celltune's own error types: each message names the file or option at fault and what to do about it.

The CLI turns exactly these into one ``celltune: error:`` line and exit status 2; any other exception is a bug and
keeps its traceback. Each also derives from the built-in type a caller would expect (``ValueError``,
``FileNotFoundError`` ...), so ``except ValueError`` still catches a bad option.
"""

from __future__ import annotations


class CelltuneError(Exception):
    """Base class: a problem with the user's input, options or files, not with celltune."""


class ConfigError(CelltuneError, ValueError):
    """An option, a combination of options or a config file that cannot work."""


class TooShortError(ConfigError):
    """A time budget that holds not one epoch (with the final scoring); ``needed_seconds``: the budget that would."""

    def __init__(self, message: str, needed_seconds: float | None = None) -> None:
        super().__init__(message)
        self.needed_seconds = needed_seconds


class DataError(CelltuneError, ValueError):
    """Bad input data; the message names the file and what to do about it."""


class GroupSplitError(DataError):
    """A split or folds that whole groups cannot make; the message lists the groups and what works."""


class ModelNotFoundError(CelltuneError, ValueError):
    """A model name neither torchvision nor timm knows."""


class WeightsUnavailableError(CelltuneError, RuntimeError):
    """Pretrained or given weights that cannot be loaded."""


class CheckpointError(CelltuneError, ValueError):
    """A file that is not a celltune checkpoint."""


class MissingError(CelltuneError, FileNotFoundError):
    """A file or run directory that should exist and does not."""


class ExistsError(CelltuneError, FileExistsError):
    """An output that exists already and would be overwritten."""


class WriteError(CelltuneError, OSError):
    """An output that could not be written (a full disk, a read-only folder); what was there before is kept."""


class ExportError(CelltuneError, RuntimeError):
    """An export that could not be written, or that does not compute what the PyTorch model computes."""
