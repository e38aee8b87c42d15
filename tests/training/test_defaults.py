"""Defaults chosen from the data: the image size follows the images, between 64 px and the weights' native size; the
batch size follows the image size, the device and the training set."""

import json
import logging

import pytest

from celltune.training import fit as fit_module
from celltune.training.defaults import batch_size_for, image_size_for
from celltune.training.fit import prepare

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
    with caplog.at_level(logging.INFO, logger="celltune.training.defaults"):
        run = prepare(quick_config(tiny_data, tmp_path, image_size=None))  # 32 px synthetic cells
    assert run.card.image_size == 64 and run.config.data.image_size == 64
    assert "image size 64: median shorter image side 32 px, raised to 64" in caplog.text
    explicit = prepare(quick_config(tiny_data, tmp_path, image_size=48, name="explicit"))
    assert explicit.card.image_size == 48  # a given size is never replaced


GIB = 2**30


@pytest.mark.parametrize(("size", "memory", "accelerator", "images", "batch", "reason"), [
    # min(64 on a CPU, 24 GiB / 4 / (3000 B * 96^2) = 233, 8701 / 20 = 435) = 64
    (96, 24 * GIB, "cpu", 8701, 64, "the largest batch worth its memory on a CPU"),
    # min(256, 80 GiB / 4 / (3000 * 224^2) = 142, 5000) -> 142, a power of two below: 128
    (224, 80 * GIB, "gpu", 100_000, 128, "what a quarter of the 80 GiB of device memory holds at 224 px"),
    (96, 80 * GIB, "gpu", 100_000, 256, "the largest batch worth its memory on a GPU"),
    # 600 images / 20 steps = 30 -> 16
    (64, 24 * GIB, "cpu", 600, 16, "20 optimizer steps per epoch over 600 training images"),
    (64, 24 * GIB, "cpu", 50, 8, "20 optimizer steps per epoch over 50 training images, raised to 8"),
])
def test_the_batch_size_follows_image_size_memory_and_data(size, memory, accelerator, images, batch, reason):
    chosen = batch_size_for(image_size=size, memory_bytes=memory, accelerator=accelerator, train_images=images)
    assert chosen.value == batch and chosen.reason == reason


def test_training_without_batch_size_chooses_one_and_says_why(tiny_data, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="celltune.training.defaults"):
        run = prepare(quick_config(tiny_data, tmp_path, batch_size=None))
    train_images = len(run.found.splits["train"])
    assert run.config.optim.batch_size == run.datamodule.batch_size == 8  # a small set: 20 steps an epoch, at least 8
    assert f"batch size 8: 20 optimizer steps per epoch over {train_images} training images" in caplog.text


def test_a_budget_that_grows_the_image_trains_with_the_batch_the_device_holds_at_the_grown_size(
        tiny_data, tmp_path, monkeypatch):
    asked: list[int] = []

    def small_device(image_size, *, accelerator, train_images):  # memory for 8 images of 64 px, 4 of 96
        asked.append(image_size)
        return 8 if image_size <= 64 else 4

    monkeypatch.setattr(fit_module, "batch_at_size", small_device)
    options = dict(image_size=None, epochs=None, time_budget="10m", bootstrap=0)
    run = prepare(quick_config(tiny_data, tmp_path, batch_size=None, **options))
    assert run.config.data.image_size == 96  # all 100 epochs fit at the data's 64 px: grown
    assert run.config.optim.batch_size == run.datamodule.batch_size == 4 and asked and set(asked) == {96}
    assert "batch 4 at 96 px" in json.loads((run.run_dir / "plan.json").read_text())["reason"]
    given = prepare(quick_config(tiny_data, tmp_path, batch_size=8, name="given", **options))
    assert (given.config.data.image_size, given.config.optim.batch_size) == (96, 8)  # a given batch is kept
