from pathlib import Path

import pytest
import yaml

from celltune.config import Augment, config_from_dict
from celltune.config.recipes import load_config, recipe_names, recipe_summary, save_config
from celltune.errors import ConfigError


def test_old_flat_recipe_files_keep_loading(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("model: alexnet\nfreeze_backbone: true\nimage_size: 224\nepochs: 25\noptimizer: sgd\n"
                   "scheduler: plateau\naugment:\n  hflip: false\n  affine_degrees: 20\n")
    config = load_config(old)
    assert (config.model.name, config.model.freeze_backbone, config.data.image_size, config.optim.epochs,
            config.optim.optimizer, config.optim.scheduler) == ("alexnet", True, 224, 25, "sgd", "plateau")
    assert config.augment == Augment(hflip=False, affine_degrees=20)


def test_unreadable_or_malformed_yaml_is_a_config_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: cannot read config"):
        load_config(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- epochs\n- 3\n")
    with pytest.raises(ConfigError, match="a mapping of option: value"):
        load_config(listed)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00epochs")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(binary)


def test_overrides_win_over_the_file_section_by_section(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"optim": {"epochs": 3, "lr": 0.1}, "augment": {"hflip": False, "mixup": 0.2}}))
    config = load_config(recipe, {"epochs": 1, "augment": {"mixup": 0.0}})
    assert (config.optim.epochs, config.optim.lr) == (1, 0.1)
    assert (config.augment.hflip, config.augment.mixup) == (False, 0.0)


def test_saved_config_loads_back_equal(tmp_path):
    config = config_from_dict({"data": "/d", "channels": ["red", "green"], "patience": 3, "devices": "auto",
                               "augment": {"rot90": True}})
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["optim"]["patience"] == 3


def test_recipes_ship_in_the_package_and_are_chosen_by_name(tmp_path):
    assert recipe_names() == ["alexnet_classic", "timm_modern", "vgg16_early_stopping"]
    assert "AlexNet" in recipe_summary("alexnet_classic")
    by_name = load_config("timm_modern", {"model": "mobilenet_v2"})
    assert by_name.model.name == "mobilenet_v2" and by_name.eval.tta == "dihedral"
    path = tmp_path / "mine.yaml"
    path.write_text("epochs: 2\n")
    assert load_config(path).optim.epochs == 2  # a path still works
    with pytest.raises(ConfigError, match="timm_modern"):
        load_config("timm_modren")
    assert not Path("timm_modern").exists()


def test_recipe_files_say_what_they_promise():
    alex = load_config("alexnet_classic")
    o = alex.optim
    assert (alex.model.name, alex.model.freeze_backbone, o.optimizer, o.lr, o.momentum, o.batch_size, o.scheduler,
            o.plateau_factor, o.plateau_patience, alex.data.image_size) == (
        "alexnet", True, "sgd", 0.001, 0.9, 4, "plateau", 0.1, 5, 224)
    assert (alex.augment.affine_degrees, alex.augment.affine_translate, alex.augment.affine_scale) == (20, 0.1, 0.1)
    modern = load_config("timm_modern")
    a = modern.augment
    assert (modern.optim.optimizer, modern.optim.scheduler, modern.optim.label_smoothing, a.mixup, a.cutmix) == (
        "adamw", "cosine", 0.1, 0.8, 1.0)
    assert a.randaugment_ops == 2 and a.random_erasing == 0.25 and a.hflip and a.vflip
    assert modern.optim.warmup_epochs == 2 and modern.eval.tta == "dihedral"
    vgg = load_config("vgg16_early_stopping")
    assert (vgg.model.name, vgg.optim.early_stop_monitor, vgg.optim.patience) == ("vgg16", "val_loss", 5)
