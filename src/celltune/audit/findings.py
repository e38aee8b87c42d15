"""What an audit of a dataset found: findings (each with its level, the files concerned and the fix) as plain data."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from celltune.data.image_facts import ImageFacts


@dataclass(frozen=True)
class Finding:
    level: str  # error | warning | info
    code: str
    message: str
    fix: str
    items: list[str] = field(default_factory=list)  # the files (or pairs of files) concerned, each once


@dataclass
class Audit:
    root: Path
    findings: list[Finding]
    facts: dict[Path, ImageFacts]  # every file read, by path

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def unreadable(self) -> set[Path]:
        return {p for p, f in self.facts.items() if f.error is not None}

    def without(self, code: str) -> Audit:
        return Audit(self.root, [f for f in self.findings if f.code != code], self.facts)

    def to_dict(self) -> dict:
        counts = Counter(f.level for f in self.findings)
        return {"root": str(self.root), "errors": counts["error"], "warnings": counts["warning"],
                "findings": [asdict(f) for f in self.findings]}


def format_findings(findings: list[Finding], *, shown: int = 8) -> str:
    """Each finding as text: level, message, fix, and its first ``shown`` items; an info finding in one line (its
    items are in ``Audit.to_dict``)."""
    lines = []
    for f in findings:
        lines.append(f"{f.level.upper():8}{f.code}: {f.message}")
        if f.level == "info":
            continue
        lines.append(f"{'':8}fix: {f.fix}")
        lines += [f"{'':10}{item}" for item in f.items[:shown]]
        if len(f.items) > shown:
            lines.append(f"{'':10}... and {len(f.items) - shown} more")
    return "\n".join(lines)
