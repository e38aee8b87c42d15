"""What ``fit`` checks and finds before it builds anything: a config that can run, the data's splits, labels and
validation split that suit it, and the data checks (``audit(quick=True)``) every run passes first."""

from __future__ import annotations

import logging
from pathlib import Path

from celltune.audit import accepted
from celltune.audit.check import audit
from celltune.audit.findings import Audit, format_findings
from celltune.config import DataConfig, TrainConfig
from celltune.config.durations import parse_duration
from celltune.data.class_choice import ClassChoice
from celltune.data.discovery import discover
from celltune.data.images import ChannelFiles
from celltune.data.samples import LabelledSplits
from celltune.errors import ConfigError, DataError, MissingError
from celltune.metrics.results import ClassificationResult, MultilabelResult
from celltune.models.factory import resolve_name
from celltune.progress import bar
from celltune.training.callbacks import LAST
from celltune.training.runtime import launched_externally

log = logging.getLogger(__name__)


def check(config: TrainConfig, resume: str | Path | None) -> TrainConfig:
    """Fail before any work on what cannot run; data and mask paths made absolute, so the saved config.yaml (and
    --resume) work from any directory."""
    resolve_name(config.model.name)  # a misspelt model fails before the dataset is scanned
    if not config.data.root:
        raise ConfigError("give --data DIR (or data: in the recipe)")
    accepted.check_codes(config.data.accept)
    if config.data.balance == "loss" and (config.augment.mixup or config.augment.cutmix):
        raise ConfigError("balance: loss does not combine with Mixup/CutMix soft targets; use balance: sampler")
    if config.model.freeze_backbone and config.model.freeze_stride:
        raise ConfigError(f"--freeze-backbone already freezes every layer but the head, so --freeze-stride "
                          f"{config.model.freeze_stride} would do nothing; give one of them")
    if config.output.checkpoint_every:
        parse_duration(config.output.checkpoint_every, flag="--checkpoint-every")
    if config.optim.time_budget:
        parse_duration(config.optim.time_budget, flag="--time-budget")
        if launched_externally() or str(config.hardware.devices) not in ("1",) or config.hardware.num_nodes > 1:
            raise ConfigError("--time-budget plans a run on one device for now; leave it out for multi-device runs")
    if config.optim.ema is not None and not 0 <= config.optim.ema < 1:
        raise ConfigError(f"--ema {config.optim.ema}: give a decay between 0 and 1, such as 0.999 (0: off)")
    if resume is not None and not (Path(resume) / LAST).is_file():
        raise MissingError(f"{Path(resume) / LAST}: nothing to resume; the run never finished an epoch")
    return config.updated(data=str(Path(config.data.root).resolve()),
                          mask_dir=str(Path(config.data.mask_dir).resolve()) if config.data.mask_dir else None)


def find_data(data: DataConfig) -> LabelledSplits:
    """The data folder's splits as ``data`` asks: its own, or made by celltune (fractions, seed, groups)."""
    return discover(data.root, val_fraction=data.val_fraction, test_fraction=data.test_fraction, seed=data.seed,
                    label_names=data.label_names, groups=data.groups, groups_csv=data.groups_csv,
                    choice=ClassChoice.of(data))


def check_labels(config: TrainConfig, *, multilabel: bool) -> None:
    """Fail on what the data's kind of labels cannot train with: soft-target mixing and balancing for multi-label
    data, an early-stopping monitor it does not track."""
    if multilabel and (config.augment.mixup or config.augment.cutmix or config.data.balance != "none"):
        raise ConfigError("multi-label data: Mixup/CutMix and --balance are single-label only; turn them off")
    tracked = ["val_loss", *(MultilabelResult if multilabel else ClassificationResult).tracked_names()]
    if config.optim.patience is not None and config.optim.early_stop_monitor not in tracked:
        raise ConfigError(f"--early-stop-monitor {config.optim.early_stop_monitor} is not tracked for "
                          f"{'multi' if multilabel else 'single'}-label data; choose from {', '.join(tracked)}")


def check_validation(config: TrainConfig, found: LabelledSplits) -> bool:
    """Whether the run validates: not when its split has no validation images (no group could be spared), and then
    nothing may need it: early stopping, the plateau schedule. Runs on as many epochs as given either way."""
    if found.splits.get("val"):
        return True
    needs = [flag for flag, used in (("--patience", config.optim.patience is not None),
                                     ("--scheduler plateau", config.optim.scheduler == "plateau")) if used]
    if needs:
        raise ConfigError(f"{config.data.root}: no validation images (no group could be spared for them), but "
                          f"{' and '.join(needs)} watch the validation loss; leave them out (the cosine schedule "
                          "needs no validation), or give finer groups")
    log.warning("no validation split: training runs %s epochs without validation and keeps the last epoch's weights",
                config.optim.epochs or "its")
    return False


def check_data(found: LabelledSplits, data: DataConfig) -> tuple[LabelledSplits, Audit, list[Path]]:
    """The checks training runs before its first epoch (``audit(quick=True)``): every error stops the run, all of
    them in one message; warnings are logged. With ``skip_unreadable`` unreadable images are dropped instead, and
    errors whose code ``accept`` names are warnings (``celltune.audit.accepted``): (found, the audit, the dropped
    images)."""
    with bar(len(found.samples), "checking images") as progress:
        checks = audit(found, data.root, mask_dir=data.mask_dir, quick=True,
                       fractions=(data.val_fraction, data.test_fraction), progress=progress.update)
    skipped: list[Path] = []
    if data.skip_unreadable and checks.unreadable:
        channel_files = ChannelFiles()
        bad = {s.path for s in found.samples if any(p in checks.unreadable for p in channel_files.of(s.path) or
                                                    [s.path])}
        skipped = sorted(bad)
        found = accepted.without(found, skipped)
        checks = checks.without("unreadable")
        log.warning("leaving out %d unreadable image(s), listed in skipped_files.txt", len(skipped))
    codes = accepted.check_codes(data.accept)
    if "label-conflict" in codes and any(f.code == "label-conflict" for f in checks.errors):
        conflicting = accepted.conflicting_training_copies(found, checks)
        if conflicting:  # conflicts within one split are trained on (or scored) as they are
            found = accepted.without(found, conflicting)
            skipped += conflicting
            log.warning("--accept label-conflict: leaving out %d training image(s) that stand under another label "
                        "in a scored split, listed in skipped_files.txt", len(conflicting))
    checks = accepted.accept(checks, codes)
    if checks.errors:
        raise DataError(f"{data.root}: the data checks found {len(checks.errors)} problem(s); `celltune check` "
                        f"lists every finding\n{format_findings(checks.errors)}")
    for finding in checks.findings:
        log.warning("data check: %s (%d item(s); see data_checks.json)", finding.message, len(finding.items))
    return found, checks, skipped
