"""The probe measures the model's speed on a copy, leaving the model and the random state as they were."""

import torch
from torch import nn

from celltune.training.probe import measure_speed


def test_probe_measures_a_copy_and_leaves_random_state_alone():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.get_rng_state()
    speed = measure_speed(model, image_size=16, batch_size=4, in_chans=3, steps=2)
    assert speed.image_size == 16 and speed.train_images_per_second > 0 and speed.eval_images_per_second > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), state)
