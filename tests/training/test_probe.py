"""The probe measures the model's speed on a copy, leaving the model and the random state as they were."""

import math
import time

import torch
from torch import nn

from celltune.training import probe
from celltune.training.budget import Speed, Workload
from celltune.training.probe import measure_speed, probe_and_plan


def test_probe_measures_a_copy_and_leaves_random_state_alone():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.get_rng_state()
    speed = measure_speed(model, image_size=16, batch_size=4, in_chans=3, steps=2)
    assert speed.image_size == 16 and speed.train_images_per_second > 0 and speed.eval_images_per_second > 0
    assert speed.batch_size == 4
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), state)


def test_a_plan_that_grows_the_image_measures_the_grown_size(monkeypatch):
    measured: list[int] = []
    batches: list[int] = []

    def fake_speed(model, *, image_size, batch_size, **_):  # a machine where the work grows with the pixels
        measured.append(image_size)
        batches.append(batch_size)
        factor = (64 / image_size) ** 2
        return Speed(image_size, 225.0 * factor, 900.0 * factor, batch_size=batch_size)

    monkeypatch.setattr(probe, "measure_speed", fake_speed)
    work = Workload(train_images=1000, val_images=200, test_images=400)

    def planned(*, size_fixed: bool, batch_at=None):
        return probe_and_plan(nn.Identity(), budget=600, started=time.monotonic(), work=work, batch_size=64,
                              image_size=64, size_fixed=size_fixed, native_size=224, in_chans=3, accelerator="cpu",
                              precision="32-true", channels_last=False, max_epochs=None, batch_at=batch_at)

    # 96 px: 10.5 s an epoch, 11 s to finish, about 54 epochs in 600 s (tests/training/test_budget.py by hand)
    grown = planned(size_fixed=False)
    assert (grown.image_size, measured) == (96, [64, 96]) and 50 <= grown.epochs <= 54
    assert [(s.image_size, s.measured) for s in grown.probe] == [(64, True), (96, False), (96, True)]
    measured.clear()
    assert (planned(size_fixed=True).image_size, measured) == (64, [64])
    # A device whose memory holds 64 images of 64 px holds 64 * (64 / 96) ** 2 = 28 -> 16 (a power of two) at 96 px:
    # the grown plan trains with 16, and its size is measured at 16.
    measured.clear(), batches.clear()
    grown = planned(size_fixed=False, batch_at=lambda size: 2 ** int(math.log2(64 * (64 / size) ** 2)))
    assert (grown.image_size, grown.batch_size, batches) == (96, 16, [64, 16]) and "batch 16 at 96 px" in grown.reason
    # plan.json says which batch each speed was measured at (the estimate at 96 px: from the measurement at 64)
    assert [(s["image_size"], s["measured"], s["batch_size"]) for s in grown.to_dict()["probe"]] == [
        (64, True, 64), (96, False, 64), (96, True, 16)]
    # where the batch still fits at the larger size, it stays
    assert planned(size_fixed=False, batch_at=lambda size: 64).batch_size == 64


def test_a_grown_plan_too_slow_at_its_smaller_batch_stays_at_the_data_size(monkeypatch):
    def fake_speed(model, *, image_size, batch_size, **_):  # a GPU whose speed falls with the batch: 1/4 at 16
        factor = (64 / image_size) ** 2 * batch_size / 64
        return Speed(image_size, 225.0 * factor, 900.0 * factor)

    monkeypatch.setattr(probe, "measure_speed", fake_speed)
    plan = probe_and_plan(nn.Identity(), budget=600, started=time.monotonic(),
                          work=Workload(train_images=1000, val_images=200, test_images=400), batch_size=64,
                          image_size=64, size_fixed=False, native_size=224, in_chans=3, accelerator="cpu",
                          precision="32-true", channels_last=False, max_epochs=None, batch_at=lambda size: 16)
    # 96 px at batch 16: 42 s an epoch, 14 epochs in 600 s, under the 50 that growing asks: 64 px and batch 64 stay
    assert (plan.image_size, plan.batch_size, plan.epochs) == (64, 64, 100)
    assert "not grown" in plan.reason and "at 96 px with batch 16" in plan.reason
