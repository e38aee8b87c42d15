"""Defaults chosen from the data: the image size follows the images, between 64 px and the weights' native size."""

import logging

import pytest

from celltune.defaults import image_size_for
from celltune.train import prepare

from conftest import quick_config


@pytest.mark.parametrize(("sides", "native", "size", "reason"), [
    ([(30, 30)] * 3, 224, 64, "median shorter image side 30 px, raised to 64"),
    ([(50, 50)] * 3, 224, 64, "median shorter image side 50 px, rounded up to a multiple of 32"),
    ([(78, 78), (80, 76), (90, 70)], 224, 96, "median shorter image side 76 px, rounded up to a multiple of 32"),
    ([(128, 300)], 224, 128, "median shorter image side 128 px, rounded up"),  # already a multiple: kept
    ([(1000, 800), (2048, 1536)], 224, 224, "median shorter image side 1168 px, above the weights' native size 224"),
    ([(300, 300)], 384, 320, "rounded up to a multiple of 32"),  # a timm model of native size 384
    ([], 224, 224, "the weights' native size: no image sizes known"),
])
def test_the_image_size_follows_the_data(sides, native, size, reason):
    chosen = image_size_for(sides, native)
    assert chosen.value == size and reason in chosen.reason


def test_training_without_image_size_takes_it_from_the_data_and_says_why(tiny_data, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="celltune.train"):
        run = prepare(quick_config(tiny_data, tmp_path, image_size=None))  # 32 px synthetic cells
    assert run.card.image_size == 64 and run.config.data.image_size == 64
    assert "image size 64: median shorter image side 32 px, raised to 64" in caplog.text
    explicit = prepare(quick_config(tiny_data, tmp_path, image_size=48, name="explicit"))
    assert explicit.card.image_size == 48  # a given size is never replaced
