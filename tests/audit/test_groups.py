from __future__ import annotations

import json

from celltune.audit.groups import group_findings, source_name_findings
from celltune.cli import main as celltune
from celltune.data.discovery import discover, discover_pool

from conftest import png


def tiles(root, slides):
    """root/CLASS/slideS_CLASS_i.png: ``slides`` maps each slide to its images per class."""
    for slide, per_class in slides.items():
        for c, (cls, n) in enumerate(per_class.items()):
            for i in range(n):
                png(root / cls / f"slide{slide}_{cls}_{i}.png", value=(60 * slide + 20 * c + i) % 256)
    return root


def test_groups_are_listed_with_their_classes_and_single_class_groups_named(tmp_path):
    root = tiles(tmp_path / "t", {0: {"stroma": 4, "tumour": 4}, 1: {"tumour": 3}, 2: {"stroma": 2, "tumour": 1}})
    info, one_class = group_findings(discover_pool(root, groups=r"(slide\d+)_"))
    assert (info.code, info.level) == ("groups", "info")
    assert info.message.startswith("3 groups of 3-8 images (median 3)")
    assert info.items == ["slide0: 8 images (stroma 4, tumour 4)", "slide1: 3 images (tumour 3)",
                          "slide2: 3 images (stroma 2, tumour 1)"]
    assert (one_class.code, one_class.level) == ("group-one-class", "warning")
    assert one_class.message.startswith("1 of 3 groups hold images of one class only")
    assert one_class.items == ["slide1: 3 images, all tumour"]
    assert group_findings(discover_pool(root)) == []  # no groups given: nothing to say


def test_check_audits_the_groups_when_whole_groups_cannot_make_the_split(tmp_path, capsys):
    root = tiles(tmp_path / "t", {0: {"stroma": 4, "tumour": 4}})
    report = tmp_path / "check.json"
    code = celltune(["check", str(root), "--groups", r"(slide\d+)_", "--json", str(report)])
    out = capsys.readouterr().out
    assert code == 1  # an error found, not a crash: every finding printed
    assert "ERROR   split: the train/val/test split cannot be made: 1 group(s) cannot give a 15% part with whole " \
           "groups (images per group: slide0 (8)); it needs 3" in out
    assert "INFO    groups: 1 group of 8 images" in out
    codes = [f["code"] for f in json.loads(report.read_text())["findings"]]
    assert codes[0] == "split" and "groups" in codes


def malaria(root, *, divided: bool):
    """train/ and valid/ class trees of cells named SOURCE_cell_N.png; ``divided``: each source has cells in both."""
    for c, cls in enumerate(("Parasitized", "Uninfected")):
        for src in range(4):
            for i in range(4):
                split = ("train", "valid")[i % 2] if divided else ("train" if src < 3 else "valid")
                png(root / split / cls / f"C{src}P{c}thinF_IMG_{src}_cell_{i}.png", value=(30 * src + 7 * i + c) % 256)
    return root


def test_check_warns_when_file_names_reveal_sources_that_the_split_divides(tmp_path):
    root = malaria(tmp_path / "m", divided=True)
    (finding,) = source_name_findings(discover(root), root)
    assert (finding.code, finding.level) == ("source-across-splits", "warning")
    assert finding.message.startswith("8 of 8 sources named in the file names (the part of the name before _cell_) "
                                      "have images in more than one split")
    assert "--groups '([^/]+?)_cell_'" in finding.fix
    assert finding.items[0] == "C0P0thinF_IMG_0: train 2, val 2"
    # The pattern given, the groups are the sources: the check of pre-made splits sharing groups takes over.
    grouped = discover(root, groups=r"([^/]+?)_cell_")
    assert {s.group for s in grouped.samples} == {f"C{s}P{c}thinF_IMG_{s}" for s in range(4) for c in range(2)}
    assert source_name_findings(grouped, root) == []
    kept_apart = malaria(tmp_path / "k", divided=False)
    assert source_name_findings(discover(kept_apart), kept_apart) == []
    assert source_name_findings(discover(tmp_path / "m"), tmp_path) != []  # paths relative to any root above
