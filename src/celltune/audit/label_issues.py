"""Labels that look wrong: every image of a cross-validation ranked by how likely its given label is wrong, from its
out-of-fold probabilities, with cleanlab's confident learning (Northcutt et al. 2021). An image is *flagged* where
confident learning counts it among the label errors; the ranking (label quality, lowest first) orders them all."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from celltune.audit.findings import Finding
from celltune.data import csvfiles
from celltune.errors import MissingError

LABEL_ISSUES = "label_issues.csv"


@dataclass(frozen=True)
class LabelIssue:
    path: str
    given: str
    suggested: str  # the class the out-of-fold probabilities favour
    quality: float  # cleanlab's label quality score: the probability given to the given label (self-confidence)
    flagged: bool  # counted among the label errors by confident learning


def rank_label_issues(paths: list[str], labels: np.ndarray, probs: np.ndarray,
                      class_names: list[str]) -> list[LabelIssue]:
    """Every image, most likely wrongly labelled first. ``labels``: (N,) class indices; ``probs``: (N, C)
    out-of-fold probabilities."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels, probs = np.asarray(labels), np.asarray(probs, dtype=float)
    quality = get_label_quality_scores(labels, probs, method="self_confidence")
    flagged = find_label_issues(labels, probs, filter_by="prune_by_noise_rate")
    order = np.argsort(quality, kind="stable")
    return [LabelIssue(paths[i], class_names[labels[i]], class_names[int(probs[i].argmax())], float(quality[i]),
                       bool(flagged[i])) for i in order]


def write_label_issues(path: Path, issues: list[LabelIssue]) -> None:
    with csvfiles.open_csv(path, "w") as f:
        writer = csvfiles.DictWriter(f, fieldnames=["rank", "path", "given", "suggested", "label_quality", "flagged"])
        writer.writeheader()
        writer.writerows({"rank": k, "path": i.path, "given": i.given, "suggested": i.suggested,
                          "label_quality": f"{i.quality:.6f}", "flagged": int(i.flagged)}
                         for k, i in enumerate(issues, start=1))


def read_label_issues(path: Path) -> list[LabelIssue]:
    with csvfiles.open_csv(path) as f:
        _, rows = csvfiles.read_dicts(f)
    return [LabelIssue(r["path"], r["given"], r["suggested"], float(r["label_quality"]), r["flagged"] == "1")
            for r in rows]


def label_issue_finding(cv_dir: Path) -> Finding | None:
    """The flagged images of a cross-validation's label_issues.csv as a finding of ``celltune check``."""
    path = Path(cv_dir) / LABEL_ISSUES
    if not path.is_file():
        raise MissingError(f"{path}: no label issues here; `celltune cv` writes them (single-label data)")
    flagged = [i for i in read_label_issues(path) if i.flagged]
    if not flagged:
        return None
    return Finding("warning", "label-issue", f"{len(flagged)} image(s) whose given label looks wrong to confident "
                   f"learning on the out-of-fold probabilities of {cv_dir}, most likely first",
                   "look at each: relabel it, or leave it out; cv.html shows the first ones",
                   [f"{i.path} (given {i.given}, suggested {i.suggested}, label quality {i.quality:.3f})"
                    for i in flagged])
