"""`celltune summarize` and `check` from the command line."""

import re

import pytest

from celltune.cli import main

from conftest import bomb_png, class_tree

slow = pytest.mark.slow


def test_summarize_prints_counts_per_class_and_split(tiny_data, capsys):
    assert main(["summarize", str(tiny_data)]) == 0
    out = capsys.readouterr().out
    assert "6 classes" in out and "32x32" in out
    golgi = next(x for x in out.splitlines() if x.startswith("golgi"))
    assert golgi.split()[1:] == ["6", "3", "3"]


def test_a_decompression_bomb_is_one_line_in_summarize_and_a_finding_in_check(tmp_path, capsys):
    class_tree(tmp_path / "d", {"a": 3, "b": 3}, size=(8, 8))
    bomb_png(tmp_path / "d" / "a" / "huge.png")
    assert main(["summarize", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and re.fullmatch(r"celltune: error: .*huge\.png: 900,000,000 pixels, above the "
                                                 r"limit of 89,478,485 .*raise --max-image-pixels", err)
    # The flag reaches the reader: with the limit lifted, the header alone is read and summarize counts the file.
    assert main(["summarize", str(tmp_path / "d"), "--max-image-pixels", "0"]) == 0
    assert "30000x30000" in capsys.readouterr().out
    assert main(["check", str(tmp_path / "d"), "--workers", "1"]) == 1
    assert "huge.png: 900,000,000 pixels" in capsys.readouterr().out
