"""A run inside a time budget: the plan (image size, batch size, epochs) whose whole run, final scoring and report
included, ends within the budget, and the callback that keeps the run to it, cutting epochs (and laying the schedule
out again) when it falls behind.

The planner is arithmetic on measured speeds (``plan_run``); the speeds come from ``celltune.training.probe``, which
times the model alone on random batches, and the callback corrects for what the probe cannot see (data loading, logging,
a busy machine) from each epoch's measured time."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning as L
import torch

from celltune.config import TrainConfig
from celltune.data.samples import LabelledSplits
from celltune.data.transforms import TTA_VIEWS
from celltune.errors import TooShortError
from celltune.reports.run_files import write_json
from celltune.training.defaults import SIZE_STEP, SMALLEST

log = logging.getLogger(__name__)

MARGIN = 0.03  # of the budget, left free for what no estimate sees (start-up, writing checkpoints)
# The end of a run beyond its scoring passes (which the probe's speed times): plots, bootstrap intervals and the
# page; then the report's Grad-CAM pictures, which --no-heatmaps (and tune's trials) leave out. Over-estimated, they
# end every budgeted run early by the difference: a search's short fold runs lost a fifth of their time to it.
REPORT_SECONDS = 6.0
HEATMAP_SECONDS = 4.0
MIN_EPOCHS = 5  # below this many epochs at the data's size, the planner tries smaller images
MAX_EPOCHS = 100  # a generous budget on a small dataset plans at most this many (--epochs caps it lower)
# When all MAX_EPOCHS fit with time over, the planner grows the image up to GROWTH times the data's size while at
# least GROWN_EPOCHS still fit: the growth measured on the suite's datasets (docs/benchmarks/budget.md) went one
# step of 32 px from 64, no further, and the probe's estimate for a larger size runs slow (the keeper extends the run).
GROWTH = 1.5
GROWN_EPOCHS = MAX_EPOCHS // 2
RECENT = 3  # the epochs whose mean time predicts the next ones
PLAN = "plan.json"


def clock(seconds: float) -> str:
    """1234.5 -> '20:34' (hours shown when there are any)."""
    s = max(0, round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


@dataclass(frozen=True)
class Speed:
    """What the probe measured at one image size: images per second through a training step (forward, backward,
    optimizer) and through inference."""

    image_size: int
    train_images_per_second: float
    eval_images_per_second: float
    measured: bool = True  # False: estimated from another size's measurement
    batch_size: int | None = None  # the batch it was measured at (an estimate's: its measurement's)

    def scaled(self, image_size: int) -> Speed:
        """An estimate at another size: a CNN's work grows with the pixels."""
        factor = (self.image_size / image_size) ** 2
        return Speed(image_size, self.train_images_per_second * factor, self.eval_images_per_second * factor,
                     measured=False, batch_size=self.batch_size)


@dataclass(frozen=True)
class Workload:
    """The images one epoch trains on and validates, and what the end of the run scores."""

    train_images: int
    val_images: int
    test_images: int  # scored once at the end (the validation images when there is no test split)
    val_passes: int = 1  # 2 with --ema: raw and averaged weights are both validated
    test_views: int = 1  # test-time augmentation's views per image
    calibration_images: int = 0  # the validation images, scored again at the end to calibrate the best weights
    heatmaps: bool = True  # the report draws Grad-CAM pictures

    def epoch_seconds(self, speed: Speed) -> float:
        return (self.train_images / speed.train_images_per_second
                + self.val_passes * self.val_images / speed.eval_images_per_second)

    def finish_seconds(self, speed: Speed) -> float:
        return ((self.test_images + self.calibration_images) * self.test_views / speed.eval_images_per_second
                + REPORT_SECONDS + (HEATMAP_SECONDS if self.heatmaps else 0.0))


@dataclass(frozen=True)
class Plan:
    """plan.json: the budget, what was measured, and the run laid out to fit it (times in seconds)."""

    budget_seconds: float
    spent_seconds: float  # before training: data checks, model, probe, image cache
    image_size: int
    batch_size: int
    epochs: int
    epoch_seconds: float  # estimated: training plus validation
    finish_seconds: float  # estimated: scoring the best checkpoint and writing the report
    reason: str
    probe: list[Speed] = field(default_factory=list)
    adjustments: list[dict[str, Any]] = field(default_factory=list)  # what the run changed on the way

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def speed(self) -> Speed:
        """The measured speed at the planned size."""
        return next(s for s in reversed(self.probe) if s.image_size == self.image_size and s.measured)

    def summary(self) -> str:
        return (f"time budget {clock(self.budget_seconds)}: {self.epochs} epochs at {self.image_size} px, batch "
                f"{self.batch_size} (~{self.epoch_seconds:.0f} s an epoch, {self.finish_seconds:.0f} s to score and "
                f"report, {self.spent_seconds:.0f} s spent before training); {self.reason}")


def planned_epochs(path: Path) -> int:
    """The epochs a run's ``plan.json`` ends at, after the changes made on the way."""
    plan = json.loads(path.read_text())
    return int(next((a["epochs"] for a in reversed(plan["adjustments"]) if "epochs" in a), plan["epochs"]))


def epochs_within(available: float, epoch_seconds: float, *, cap: int) -> int:
    return max(0, min(cap, math.floor(available / epoch_seconds)))


def plan_run(*, budget: float, spent: float, speeds: list[Speed], work: Workload, batch_size: int,
             size_fixed: bool, max_epochs: int | None = None, larger: Sequence[Speed] = ()) -> Plan:
    """The run that fits ``budget`` seconds, ``spent`` of them gone: as many epochs as fit after the final scoring
    and a safety margin, at the first of ``speeds`` (the data's size). When fewer than MIN_EPOCHS fit there and the
    size was not given, the smaller sizes of ``speeds`` are tried, largest first, for the first that holds
    MIN_EPOCHS (else the one holding the most). When all MAX_EPOCHS fit with time over and neither the size nor the
    epochs were given, the image grows instead: the largest of ``larger`` at which GROWN_EPOCHS still fit, so that
    the time a small dataset would leave unused buys resolution. ConfigError when not one epoch fits."""
    cap = min(max_epochs or MAX_EPOCHS, MAX_EPOCHS)
    available = budget * (1 - MARGIN) - spent

    def laid_out(speed: Speed, reason: str) -> Plan:
        epoch_s, finish_s = work.epoch_seconds(speed), work.finish_seconds(speed)
        epochs = epochs_within(available - finish_s, epoch_s, cap=cap)
        return Plan(budget, spent, speed.image_size, batch_size, epochs, epoch_s, finish_s, reason,
                    [*speeds, *larger])

    first = laid_out(speeds[0], "as many epochs as fit" + (f" (capped at {cap})" if cap < MAX_EPOCHS else ""))
    candidates = [first]
    if first.epochs < MIN_EPOCHS and not size_fixed:
        for speed in speeds[1:]:
            candidates.append(laid_out(speed, f"{first.epochs} epoch(s) fit at {speeds[0].image_size} px, "
                                              f"fewer than {MIN_EPOCHS}: smaller images"))
            if candidates[-1].epochs >= MIN_EPOCHS:
                break
    best = next((p for p in candidates if p.epochs >= MIN_EPOCHS), max(candidates, key=lambda p: p.epochs))
    if best.epochs == MAX_EPOCHS and max_epochs is None and not size_fixed:
        grown = [laid_out(speed, f"all {MAX_EPOCHS} epochs fit at {first.image_size} px with time over: larger "
                                 "images") for speed in larger]
        best = max((p for p in grown if p.epochs >= GROWN_EPOCHS), key=lambda p: p.image_size, default=best)
    if best.epochs < 1:
        need = (spent + best.finish_seconds + best.epoch_seconds) / (1 - MARGIN) + 1
        raise TooShortError(f"--time-budget {clock(budget)}: not one epoch fits (one takes ~{best.epoch_seconds:.0f} "
                            f"s at {best.image_size} px, scoring ~{best.finish_seconds:.0f} s, {spent:.0f} s already "
                            f"spent); give at least {clock(need)}, or fewer images", needed_seconds=need)
    return best


def smaller_sizes(size: int, *, smallest: int = SMALLEST) -> list[int]:
    """The sizes the planner may fall back to: ``size`` down to ``smallest`` in steps of 32."""
    return list(range(size - SIZE_STEP, smallest - 1, -SIZE_STEP))


def larger_sizes(size: int, *, largest: int) -> list[int]:
    """The sizes the planner may grow to, ascending: steps of 32 above ``size``, up to GROWTH times it and never
    past ``largest`` (the weights' native size)."""
    return list(range(size + SIZE_STEP, min(int(size * GROWTH), largest) + 1, SIZE_STEP))


class BudgetKeeper(L.Callback):
    """Keeps a run to its plan: after each epoch, the epochs still fitting before ``deadline`` (a
    ``time.monotonic()`` value) at the mean time of the last ``RECENT`` epochs, with ``finish_seconds`` left for
    scoring; fewer than planned cut the run and the module lays its schedule out for the new end. It may also grow
    the run when it is faster than planned: in the first half of the run (and always after its first epoch), and at
    any time back up to the planned epochs after a cut, so that a busy spell (another job, a first epoch filling
    caches) does not shorten the run for good; later growth past the plan would only stretch a cosine already low.
    Inside an epoch, the run stops when one more validation would leave no time to finish (only after a first
    validation has saved a checkpoint)."""

    def __init__(self, plan: Plan, *, deadline: float, max_epochs: int, path: Path | None = None) -> None:
        self.plan, self.deadline, self.max_epochs, self.path = plan, deadline, max_epochs, path
        self._epoch_start = self._val_start = 0.0
        self.val_seconds = 0.0
        self.epoch_seconds: list[float] = []  # each epoch so far, training and validation
        self.validated = False

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def _adjust(self, change: dict[str, Any]) -> None:
        self.plan = replace(self.plan, adjustments=[*self.plan.adjustments, change])
        log.warning("time budget: %s", change["why"])
        if self.path is not None:  # on disk at once: --resume continues to the epochs as changed
            write_json(self.path, self.plan.to_dict())

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._epoch_start = time.monotonic()

    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._val_start = time.monotonic()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        last_batch = batch_idx + 1 >= trainer.num_training_batches
        if self.validated and not last_batch and not trainer.should_stop and (
                self.left() < self.val_seconds + self.plan.finish_seconds):
            trainer.should_stop = True
            self._adjust({"epoch": trainer.current_epoch + 1, "stopped_at_batch": batch_idx + 1,
                          "why": f"stopped inside epoch {trainer.current_epoch + 1}: {self.left():.0f} s left, "
                                 f"not enough for another validation and the final scoring"})

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.limit_val_batches == 0:  # a run without validation: the epoch's end is where it is kept
            self._kept(trainer, module, val_seconds=0.0)

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._kept(trainer, module, val_seconds=time.monotonic() - self._val_start)

    def _kept(self, trainer: L.Trainer, module: L.LightningModule, *, val_seconds: float) -> None:
        """An epoch ended and its weights are kept: the epochs still fitting, the plan changed if they differ."""
        self.val_seconds, self.validated = val_seconds, True
        self.epoch_seconds.append(time.monotonic() - self._epoch_start)
        # The mean of the last few epochs: one slow epoch does not cut the run alone, and a busy spell is forgotten
        # once it is over.
        recent = self.epoch_seconds[-RECENT:]
        epoch_seconds = sum(recent) / len(recent)
        done = trainer.current_epoch + 1
        fit = epochs_within(self.left() - self.plan.finish_seconds, epoch_seconds, cap=self.max_epochs - done)
        planned = trainer.fit_loop.max_epochs or done
        total = done + fit
        if total > planned and done > 1:
            # Growing after the first epoch keeps one epoch in hand, so that the next epoch's noise does not cut the
            # run straight back (each change lays the schedule out again).
            total -= 1
        if planned < self.plan.epochs and done > 1 and 2 * done > planned:  # late in a cut run: back to the plan
            total = min(total, self.plan.epochs)
            grows = total > planned
        else:
            grows = total > planned and (done == 1 or 2 * done <= planned)
        if total < planned or grows:
            trainer.fit_loop.max_epochs = total
            relay = getattr(module, "relay_schedule", None)
            if relay is not None and total > done:
                relay(total)
            if total == done:
                trainer.should_stop = True
            self._adjust({"epoch": done, "epochs": total, "epoch_seconds": round(epoch_seconds, 1),
                          "why": f"the last {len(recent)} epoch(s) took {epoch_seconds:.0f} s each (planned "
                                 f"{self.plan.epoch_seconds:.0f}): {'cut to' if total < planned else 'extended to'} "
                                 f"{total} epochs"})


def workload(config: TrainConfig, found: LabelledSplits) -> Workload:
    """What one epoch and the final scoring process, for the time budget's plan."""
    train = len(found.splits["train"])
    if config.optim.max_steps_per_epoch:
        train = min(train, config.optim.max_steps_per_epoch * (config.optim.batch_size or 1))
    val = len(found.splits.get("val", []))
    return Workload(train_images=train, val_images=val, test_images=len(found.splits.get("test") or []) or val,
                    val_passes=2 if config.optim.ema else 1,
                    test_views=len(TTA_VIEWS[config.eval.tta](torch.zeros(1, 1, 2, 2))), calibration_images=val,
                    heatmaps=config.eval.heatmaps)
