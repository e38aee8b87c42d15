import pytest

from celltune.config import TrainConfig, config_from_dict, flat_names
from celltune.errors import ConfigError


def test_flat_and_sectioned_options_give_the_same_config():
    flat = config_from_dict({"data": "/d", "model": "resnet18", "lr": 0.01, "hflip": False, "tta": "flips"})
    nested = config_from_dict({"data": {"root": "/d"}, "model": {"name": "resnet18"}, "optim": {"lr": 0.01},
                               "augment": {"hflip": False}, "eval": {"tta": "flips"}})
    assert flat == nested
    assert (flat.data.root, flat.model.name, flat.optim.lr, flat.augment.hflip, flat.eval.tta) == (
        "/d", "resnet18", 0.01, False, "flips")
    assert flat.optim.epochs == TrainConfig().optim.epochs  # the rest keeps its defaults


def test_every_option_has_one_flat_name_and_help():
    names = flat_names()
    assert names["data"][0] == "data" and names["model"][0] == "model" and names["lr"][0] == "optim"
    assert all(f.metadata.get("help") for _, f in names.values())
    assert "root" not in names and "name" in names  # data.root is --data; output.name is --name


def test_values_are_parsed_and_checked_at_the_edge():
    config = config_from_dict({"lr": "1e-3", "epochs": 3.0, "channels": "red, green", "devices": "auto",
                               "hflip": "no"})
    assert (config.optim.lr, config.optim.epochs, config.data.channels, config.hardware.devices,
            config.augment.hflip) == (0.001, 3, ["red", "green"], "auto", False)
    assert config_from_dict({"devices": 2}).hardware.devices == 2
    with pytest.raises(ConfigError, match=r"optimizer: choose from sgd, adamw; got 'adam'"):
        config_from_dict({"optimizer": "adam"})
    with pytest.raises(ConfigError, match="epochs: expected a whole number"):
        config_from_dict({"epochs": 2.5})
    with pytest.raises(ConfigError, match="lr: a value is required"):
        config_from_dict({"lr": None})


def test_unknown_options_name_close_matches():
    with pytest.raises(ConfigError, match=r"unknown option 'learning_rate'.*`celltune train --help`"):
        config_from_dict({"learning_rate": 0.1})
    with pytest.raises(ConfigError, match=r"unknown option 'epoch' \(did you mean epochs\?\)"):
        config_from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match=r"unknown option augment.hflips \(did you mean hflip, vflip\?\)"):
        config_from_dict({"augment": {"hflips": True}})


def test_updated_changes_options_by_flag_name():
    config = TrainConfig().updated(image_size=96, lr=0.5)
    assert (config.data.image_size, config.optim.lr) == (96, 0.5)
    assert config.updated(image_size=64).optim.lr == 0.5
