import argparse
import subprocess
import sys
from dataclasses import fields

import pytest

from celltune.cli import build_parser
from celltune.config import TrainConfig, config_from_dict, flat_names, sections
from celltune.config.flags import add_config_flags, config_flags_of, given_options


def _train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    return parser


def test_every_config_field_is_a_kebab_case_flag_in_its_sections_group():
    parser = _train_parser()
    groups = {g.title: {a.dest for a in g._group_actions} for g in parser._action_groups}
    for section, cls in sections().items():
        title = (cls.__doc__ or "").strip()
        assert {flat for flat, (s, _) in flat_names().items() if s == section} == groups[title]
    flags = {opt for a in parser._actions for opt in a.option_strings}
    assert {"--batch-size", "--early-stop-monitor", "--data", "--model", "--hflip", "--no-hflip"} <= flags
    assert not any("_" in f for f in flags)
    assert set(groups) >= {"data", "model", "optimisation", "augmentation", "evaluation", "hardware", "output"}


def test_choices_come_from_literal_types_and_help_from_metadata():
    actions = {a.dest: a for a in _train_parser()._actions}
    assert tuple(actions["optimizer"].choices) == ("sgd", "adamw")
    assert tuple(actions["tta"].choices) == ("none", "flips", "dihedral")
    lr_field = next(f for f in fields(sections()["optim"]) if f.name == "lr")
    assert actions["lr"].help.startswith(lr_field.metadata["help"])
    assert f"(default: {lr_field.default})" in actions["lr"].help


def test_only_given_flags_become_options():
    args = _train_parser().parse_args(["--lr", "0.01", "--no-hflip", "--channels", "red,green", "--devices", "2"])
    given = given_options(args)
    assert given == {"lr": 0.01, "hflip": False, "channels": ["red", "green"], "devices": 2}
    config = config_from_dict(given)
    assert config.augment.hflip is False and config.augment.vflip is True  # untouched options keep defaults


def test_bad_flag_values_are_usage_errors(capsys):
    with pytest.raises(SystemExit):
        _train_parser().parse_args(["--epochs", "2.5"])
    assert "expected a whole number" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _train_parser().parse_args(["--optimizer", "adam"])


def test_config_flags_of_rebuild_the_config():
    config = config_from_dict({"data": "/d", "lr": 0.01, "hflip": False, "freeze_backbone": True,
                               "channels": ["red", "green"], "name": "x"})
    flags = config_flags_of(config)
    assert config_from_dict(given_options(_train_parser().parse_args(flags))) == config
    assert config_flags_of(TrainConfig()) == []


def test_help_imports_no_torch():
    """`celltune --help` and `celltune train --help` build the parser without torch, timm or torchvision."""
    code = ("import sys\nfrom celltune.cli import main\n"
            "for argv in (['--help'], ['train', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('torch', 'timm', 'torchvision', 'lightning') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().endswith("[]")
    assert "--early-stop-monitor" in done.stdout and "optimisation:" in done.stdout


def test_cli_train_parser_takes_recipe_resume_and_every_option():
    args = build_parser().parse_args(["train", "--recipe", "timm_modern", "--lr", "0.5"])
    assert args.recipe == "timm_modern" and given_options(args) == {"lr": 0.5}
    assert build_parser().parse_args(["train", "--config", "x.yaml"]).recipe == "x.yaml"  # the older name
