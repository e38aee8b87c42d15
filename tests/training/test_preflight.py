"""What a run checks before it builds anything (``training/preflight.py``, through ``prepare`` and ``fit``)."""

import json

import pytest

from celltune.errors import ConfigError, DataError, MissingError, ModelNotFoundError
from celltune.training.fit import fit, prepare

from conftest import quick_config

slow = pytest.mark.slow


def _with_bad_files(tiny_data, root):
    import shutil

    shutil.copytree(tiny_data, root)
    (root / "train" / "golgi" / "cut.png").write_bytes((root / "train" / "golgi" / "golgi_0000.png").read_bytes()[:60])
    (root / "val" / "speckled" / "zero.png").write_bytes(b"")
    return root


def test_what_cannot_run_fails_before_any_work(tiny_data, tmp_path):
    with pytest.raises(ConfigError, match="balance: sampler"):
        prepare(quick_config(tiny_data, tmp_path, balance="loss", augment={"mixup": 0.8}))
    with pytest.raises(ConfigError, match="give --data"):
        prepare(quick_config("", tmp_path))
    with pytest.raises(ConfigError, match="give one of them"):
        prepare(quick_config(tiny_data, tmp_path, freeze_backbone=True, freeze_stride=4))
    with pytest.raises(ModelNotFoundError, match="resnet18"):
        prepare(quick_config(tiny_data, tmp_path, model="resnet81"))
    with pytest.raises(MissingError, match="nothing to resume"):
        prepare(quick_config(tiny_data, tmp_path), resume=tmp_path)
    assert not (tmp_path / "t").exists()


def test_training_checks_the_data_first_and_reports_every_problem_at_once(tiny_data, tmp_path):
    data = _with_bad_files(tiny_data, tmp_path / "d")
    with pytest.raises(DataError, match="data checks found 1 problem") as err:
        prepare(quick_config(data, tmp_path / "runs"))
    assert "train/golgi/cut.png" in str(err.value) and "val/speckled/zero.png" in str(err.value)
    assert not (tmp_path / "runs").exists()


@slow
def test_skip_unreadable_trains_without_the_bad_files_and_lists_them(tiny_data, tmp_path):
    data = _with_bad_files(tiny_data, tmp_path / "d")
    run = fit(quick_config(data, tmp_path / "runs", skip_unreadable=True, epochs=1))
    assert (run / "skipped_files.txt").read_text().split() == [str(data / "train" / "golgi" / "cut.png"),
                                                                str(data / "val" / "speckled" / "zero.png")]
    checks = json.loads((run / "data_checks.json").read_text())
    assert checks["errors"] == 0 and "unreadable" not in {f["code"] for f in checks["findings"]}
    page = (run / "report.html").read_text()
    assert "<h2>Data checks</h2>" in page
    assert json.loads((run / "dataset.json").read_text())["totals"]["train"] == 36  # the cut file left out
