"""Durations as options give them: --time-budget, --checkpoint-every, --trial-budget, `celltune cache --older-than`."""

from __future__ import annotations

import re
from datetime import timedelta

from celltune.errors import ConfigError


def parse_duration(text: str, *, flag: str) -> timedelta:
    """'10m', '30s', '1.5h', '30d' (a plain number: minutes) -> timedelta; ConfigError naming ``flag`` otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if match is None or float(match.group(1)) <= 0:
        raise ConfigError(f"{flag} {text!r}: give a duration such as 10m, 30s, 1.5h or 30d")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "": "minutes"}[match.group(2)]
    return timedelta(**{unit: float(match.group(1))})
