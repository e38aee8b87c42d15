from __future__ import annotations

import numpy as np

from celltune.audit.label_issues import (
    LABEL_ISSUES,
    label_issue_finding,
    rank_label_issues,
    read_label_issues,
    write_label_issues,
)
from celltune.cli import main as celltune

from conftest import class_tree


def _flipped(n=40, flips=(3, 17, 28)):
    """Out-of-fold probabilities that are confident and right (0.95 for the true class), and labels of which the
    images ``flips`` were given the other class."""
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, n)
    probs = np.where(np.eye(2)[truth] == 1, 0.95, 0.05)
    labels = truth.copy()
    labels[list(flips)] = 1 - truth[list(flips)]
    return [f"cell{i}.png" for i in range(n)], labels, probs, truth


def test_flipped_labels_come_first_and_are_the_ones_flagged(tmp_path):
    paths, labels, probs, truth = _flipped()
    issues = rank_label_issues(paths, labels, probs, ["golgi", "speckled"])
    # self-confidence: the probability of the given label, 0.05 for the three flipped images, 0.95 for the rest
    assert [i.path for i in issues[:3]] == ["cell3.png", "cell17.png", "cell28.png"]
    assert [i.quality for i in issues[:3]] == [0.05] * 3 and issues[3].quality == 0.95
    assert [i.flagged for i in issues] == [True] * 3 + [False] * 37
    assert issues[0].suggested == ["golgi", "speckled"][truth[3]] != issues[0].given
    write_label_issues(tmp_path / LABEL_ISSUES, issues)
    assert read_label_issues(tmp_path / LABEL_ISSUES) == issues


def test_check_lists_a_cross_validation_s_label_issues_beside_its_findings(tmp_path, capsys):
    data = class_tree(tmp_path / "d", {"golgi": 6, "speckled": 6})
    _, labels, probs, _ = _flipped(n=12, flips=(2,))
    paths = [str(p) for p in sorted(data.rglob("*.png"))]
    (tmp_path / "cv").mkdir()
    write_label_issues(tmp_path / "cv" / LABEL_ISSUES, rank_label_issues(paths, labels, probs, ["golgi", "speckled"]))
    finding = label_issue_finding(tmp_path / "cv")
    assert finding is not None and finding.code == "label-issue" and len(finding.items) == 1
    assert finding.items[0].startswith(f"{paths[2]} (given ")
    celltune(["check", str(data), "--label-issues", str(tmp_path / "cv")])
    out = capsys.readouterr().out
    assert "WARNING label-issue: 1 image(s) whose given label looks wrong to confident learning" in out
    assert paths[2] in out
