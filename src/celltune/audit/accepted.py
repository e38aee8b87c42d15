"""Training on data as it is: the data-check errors a user may accept (``--accept CODE``), and what accepting one
does. An accepted error is kept in the run's data checks as a warning that says it was accepted; for
``label-conflict``, the training copies of an image that also stands in a scored split (val, test) under another
label are left out of training, so the scored split stays as published and the model is not taught the other label
of an image it is scored on."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from celltune.audit.findings import Audit
from celltune.data.images import ChannelFiles
from celltune.data.samples import LabelledSplits
from celltune.errors import ConfigError

log = logging.getLogger(__name__)

# The data-check errors training can go on with; the others (unreadable files, masks missing, classes without
# images) leave nothing sensible to train on, and have their own ways on (--skip-unreadable, fewer classes).
ACCEPTABLE = ("label-conflict", "group-across-splits")


def check_codes(codes: list[str] | None) -> list[str]:
    unknown = [c for c in codes or [] if c not in ACCEPTABLE]
    if unknown:
        raise ConfigError(f"--accept {','.join(unknown)}: training can accept {', '.join(ACCEPTABLE)} only")
    return list(codes or [])


def accept(checks: Audit, codes: list[str]) -> Audit:
    """``checks`` with the errors of ``codes`` made warnings that say they were accepted."""
    findings = [replace(f, level="warning", message=f"{f.message}; accepted (--accept {f.code})")
                if f.level == "error" and f.code in codes else f for f in checks.findings]
    return Audit(checks.root, findings, checks.facts)


def conflicting_training_copies(found: LabelledSplits, checks: Audit) -> list[Path]:
    """Training images whose pixels also stand in a scored split under another label."""
    channel_files = ChannelFiles()
    by_pixels: dict[str, list[tuple[str, object, Path]]] = defaultdict(list)
    for split, samples in found.splits.items():
        for s in samples:
            facts = checks.facts.get((channel_files.of(s.path) or [s.path])[0])
            if facts is not None and facts.error is None:
                by_pixels[facts.sha1].append((split, s.label, s.path))
    left_out = []
    for members in by_pixels.values():
        scored = {label for split, label, _ in members if split != "train"}
        left_out += [path for split, label, path in members if split == "train" and scored - {label}]
    return sorted(left_out)


def without(found: LabelledSplits, paths: list[Path]) -> LabelledSplits:
    drop = set(paths)
    return replace(found, splits={k: [s for s in v if s.path not in drop] for k, v in found.splits.items()})
