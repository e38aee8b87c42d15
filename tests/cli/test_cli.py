import subprocess
import sys

import pytest

from celltune.cli import main

from conftest import class_tree

slow = pytest.mark.slow


def test_bad_input_exits_2_with_the_file_named(tmp_path, capsys):
    class_tree(tmp_path / "d", {"a": 3, "b": 3}, size=(8, 8))
    (tmp_path / "d" / "a" / "bad.png").write_bytes(b"garbage")
    assert main(["summarize", str(tmp_path / "d")]) == 2
    assert "bad.png" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "d"), "--model", "resnet81", "--no-pretrained"]) == 2
    assert "resnet18" in capsys.readouterr().err
    assert main(["train", "--recipe", "nope"]) == 2
    assert "alexnet_classic" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "celltune", "recipes"], capture_output=True, text=True, check=True)
    assert "timm_modern" in done.stdout


