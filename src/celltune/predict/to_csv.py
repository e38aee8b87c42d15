"""Predictions as CSV tables: their columns and rows, a table written whole (``evaluate``), and a folder streamed into
one a batch at a time (``predict``) that ``--resume`` continues exactly.

Exact resume: oneDNN's CPU kernels (and cuDNN's) are chosen by the batch's size and give results that differ in their
last bits from one batch to another, so an image computed in another batch than before can print another sixth
decimal. Batches are therefore fixed by position: images ``[k * B, (k + 1) * B)`` of the sorted input form batch
``k``, and a resumed run keeps the rows of the batches the interrupted one finished and starts again at the first
batch holding an image without a row, rewriting that batch's rows. Every image is then computed in the same batch as
in a run never stopped, and the file has the same bytes, given the same images, checkpoint, ``batch_size``, TTA and
machine.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from celltune.data import csvfiles
from celltune.errors import ExistsError

if TYPE_CHECKING:
    from celltune.predict.predictor import Prediction, Predictor

log = logging.getLogger(__name__)


def header(class_names: list[str], with_truth: bool, with_error: bool = False, with_set: bool = False) -> list[str]:
    return (["path"] + (["true"] if with_truth else []) + ["predicted", "confidence"] + [f"p_{c}" for c in class_names]
            + (["set", "review"] if with_set else []) + (["error"] if with_error else []))


def row(pred: Prediction, class_names: list[str], thresholds: list[float] | None, truth=None,
        with_error: bool = False, limit: float | None = None) -> list[str]:
    """``path, [true label(s),] predicted label(s), confidence, probabilities[, set, review][, error]``. Multi-label
    (``thresholds``): labels are space-separated, the predicted ones those at or above their threshold. With the
    conformal ``limit`` (``Predictor.set_limit``), the image's prediction set, space-separated, and "yes" in review
    when it holds more than one class. An image that could not be read has empty label and probability cells and
    the reason in ``error``."""
    sets = [] if limit is None else ["", ""]
    if pred.error is not None:
        return [str(pred.path), "", "", *([""] * len(class_names)), *sets, pred.error]
    if limit is not None:
        chosen = pred.prediction_set(class_names, limit)
        sets = [" ".join(chosen), "yes" if len(chosen) > 1 else ""]
    if thresholds is None:
        best = int(np.argmax(pred.probs))
        predicted, confidence = class_names[best], pred.probs[best]
        true = [] if truth is None else [class_names[truth]]
    else:
        hits = pred.above(class_names, thresholds)
        predicted = " ".join(name for name, _ in hits)
        confidence = min((p for _, p in hits), default=max(pred.probs))
        true = [] if truth is None else [" ".join(class_names[i] for i in truth)]
    return [str(pred.path), *true, predicted, f"{confidence:.6f}", *(f"{p:.6f}" for p in pred.probs), *sets,
            *([""] if with_error else [])]


def write_predictions_csv(path: Path, predictions: list[Prediction], class_names: list[str],
                          labels: list | None = None, thresholds: list[float] | None = None) -> None:
    """One row per image (see ``row``), with the true label(s) when ``labels`` are given."""
    with csvfiles.open_csv(path, "w") as f:
        writer = csvfiles.Writer(f)
        writer.writerow(header(class_names, labels is not None))
        for i, pred in enumerate(predictions):
            writer.writerow(row(pred, class_names, thresholds, None if labels is None else labels[i]))


@dataclass(frozen=True)
class _Done:
    """The whole rows of an interrupted CSV, in order."""

    paths: list[str]  # the path of each row
    failed: list[bool]  # whether each row is an error row
    ends: list[int]  # the byte offset where each row ends; ``ends[0]``: the header's end (row i ends at ends[i + 1])


def _rows_done(path: Path, columns: list[str]) -> _Done:
    """What an interrupted ``path`` holds: its whole rows, up to the first that is cut off (a last line without its
    newline) or malformed."""
    paths: list[str] = []
    failed: list[bool] = []
    ends: list[int] = []
    consumed, whole = 0, True

    def lines(f: BinaryIO) -> Iterator[str]:
        nonlocal consumed, whole
        for raw in f:  # csv reads a line only when a row needs it, so ``consumed`` ends where the last row ended
            consumed += len(raw)
            whole = raw.endswith(b"\n")
            yield csvfiles.decode(raw)

    with path.open("rb") as f:
        rows = csvfiles.reader(lines(f))
        found = next(rows, None)
        if found != columns:
            raise ExistsError(f"{path}: its columns are not this model's (or not for this --coverage); choose "
                              "another --output")
        ends.append(consumed)
        for cells in rows:
            if not whole or len(cells) != len(columns):
                break
            paths.append(cells[0])
            failed.append(bool(cells[-1]))
            ends.append(consumed)
    return _Done(paths, failed, ends)


@dataclass(frozen=True)
class BatchOutcome:
    written: int  # rows written by this call, error rows included (a redone batch's rows too)
    failed: int  # error rows in the whole file, earlier runs' included
    skipped: int  # rows kept from an interrupted run


def _changed(out: Path, position: int, was: str, now: Path | None) -> ExistsError:
    image = f"image {position + 1} now is {now}" if now is not None else f"there are only {position} images now"
    return ExistsError(f"{out}: row {position + 1} is {was}, but {image}: the images changed since it was written "
                       "(or it is another job's). Resume with the same images, predict them all again with "
                       "--overwrite, or choose another --output")


def predict_to_csv(predictor: Predictor, paths: Iterable[Path], out: Path, *, batch_size: int = 64,
                   resume: bool = False, progress: Callable[[int], None] | None = None,
                   coverage: float | None = None) -> BatchOutcome:
    """Stream predictions for ``paths`` into ``out`` a batch at a time (memory bounded by one batch), flushing each.
    An image that cannot be read gets a row with its reason in the ``error`` column, and the job goes on.
    ``resume`` continues an interrupted ``out`` from the first batch holding an image without a row, so that the file
    ends byte for byte as an uninterrupted run's (module docstring); its rows must be the first of ``paths``, in
    order, or an ``ExistsError`` says which differs. ``progress`` is called with the number of images done
    (predicted or kept) as they are. With ``coverage``, each row has the image's prediction set (``row``)."""
    thresholds = predictor.thresholds if predictor.card.multilabel else None
    limit = None if coverage is None else predictor.set_limit(coverage)
    columns = header(predictor.class_names, False, with_error=True, with_set=limit is not None)
    appending = resume and out.exists() and out.stat().st_size > 0  # an empty file: killed before its header
    if not appending:
        with csvfiles.open_csv(out, "w") as f:
            csvfiles.Writer(f).writerow(columns)
    done = _rows_done(out, columns)
    written = skipped = failed = 0
    sink = None
    try:
        start, batch = 0, []
        for path in itertools.chain(_positions(paths, done, out), [None]):  # None flushes the last, partial batch
            if path is not None:
                batch.append(path)
            if not batch or (path is not None and len(batch) < batch_size):
                continue
            end = start + len(batch)
            if end <= len(done.paths):  # a batch the interrupted run finished: its rows are kept
                skipped += len(batch)
                failed += sum(done.failed[start:end])
            else:
                if sink is None:  # the first batch to compute: rows from its start on are rewritten
                    os.truncate(out, done.ends[start])
                    sink = csvfiles.open_csv(out, "a")
                    writer = csvfiles.Writer(sink)
                for pred in predictor.predict_paths(batch, batch_size=batch_size):
                    writer.writerow(row(pred, predictor.class_names, thresholds, with_error=True, limit=limit))
                    failed += pred.error is not None
                written += len(batch)
                sink.flush()
            if progress:
                progress(len(batch))
            start, batch = end, []
        if sink is None and appending and out.stat().st_size > done.ends[-1]:
            os.truncate(out, done.ends[-1])  # every image has its row: only a cut-off line follows them
    finally:
        if sink is not None:
            sink.close()
    if failed:
        log.info("%s: %d image(s) could not be read; their reasons are in its error column", out, failed)
    return BatchOutcome(written, failed, skipped)


def _positions(paths: Iterable[Path], done: _Done, out: Path) -> Iterator[Path]:
    """``paths``, each checked against the interrupted run's row at its position."""
    count = 0
    for count, path in enumerate(paths, start=1):
        position = count - 1
        if position < len(done.paths) and done.paths[position] != str(path):
            raise _changed(out, position, done.paths[position], path)
        yield path
    if count < len(done.paths):
        raise _changed(out, count, done.paths[count], None)
