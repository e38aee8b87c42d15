"""`celltune recipes` and `celltune models`."""


import pytest

from celltune.cli import main

slow = pytest.mark.slow


def test_recipes_and_models_are_listed(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["alexnet_classic", "timm_modern", "vgg16_early_stopping"]
    assert main(["models", "efficientnet_lite"]) == 0
    names = capsys.readouterr().out.split()
    assert "tf_efficientnet_lite0" in names and all("efficientnet_lite" in n for n in names)
