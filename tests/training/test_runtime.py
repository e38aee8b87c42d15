import pytest
import torch

from celltune.config import HardwareConfig, OutputConfig
from celltune.errors import ConfigError, ExistsError
from celltune.training.runtime import Hardware, default_num_workers, new_run_dir, open_run_dir, resolve_hardware


def test_runs_are_never_overwritten(tmp_path):
    first = new_run_dir(tmp_path, "same")
    (first / "best.pt").write_text("precious")
    second = new_run_dir(tmp_path, "same")
    assert second != first and second.name == "same-1"
    assert (first / "best.pt").read_text() == "precious"


def test_hardware_defaults_on_cpu():
    assert resolve_hardware(HardwareConfig(accelerator="cpu")) == Hardware("cpu", "32-true", True)
    forced = resolve_hardware(HardwareConfig(accelerator="cpu", precision="bf16-mixed", channels_last=False))
    assert forced == Hardware("cpu", "bf16-mixed", False)


@pytest.mark.parametrize(("bf16", "precision"), [(True, "bf16-mixed"), (False, "16-mixed")])
def test_hardware_defaults_on_a_gpu(monkeypatch, bf16, precision):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert resolve_hardware(HardwareConfig()) == Hardware("gpu", precision, True)
    assert resolve_hardware(HardwareConfig(accelerator="cpu")).precision == "32-true"  # asked for the CPU


def test_default_workers():
    assert default_num_workers(3, per_image=True, accelerator="cpu") == 3
    assert default_num_workers(None, per_image=False, accelerator="cpu") == 0
    assert default_num_workers(None, per_image=False, accelerator="gpu") == default_num_workers(
        None, per_image=True, accelerator="cpu") >= 0


def test_a_multi_process_launch_shares_one_named_run_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="needs --name"):
        open_run_dir(OutputConfig(out_dir=str(tmp_path)), model_name="m", resume=None)
    run = open_run_dir(OutputConfig(out_dir=str(tmp_path), name="shared"), model_name="m", resume=None)
    assert run == tmp_path / "shared" and run.is_dir()
    assert open_run_dir(OutputConfig(out_dir=str(tmp_path), name="shared"), model_name="m", resume=None) == run
    (run / "config.yaml").write_text("earlier run")
    with pytest.raises(ExistsError, match="holds an earlier run"):
        open_run_dir(OutputConfig(out_dir=str(tmp_path), name="shared"), model_name="m", resume=None)
