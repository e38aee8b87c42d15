from pathlib import Path

from celltune.demo import demo_config


def test_demo_config_makes_synthetic_data(tmp_path):
    config = demo_config(data=None, workdir=tmp_path, epochs=1)
    assert (Path(config.data.root) / "README.txt").read_text().startswith("SYNTHETIC")
    assert config.model.pretrained and config.optim.epochs == 1
