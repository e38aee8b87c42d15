from dataclasses import replace
from typing import get_args

import pytest
import torch
from torchvision.transforms import v2

from celltune.config import Augment, TtaMode
from celltune.data.transforms import TTA_VIEWS, BatchAugment, NormalizeBatch, eval_transform, train_transform

OFF = Augment(hflip=False, vflip=False, rot90=False, rotation=0, crop_scale=1.0)  # no augmentation at all

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def test_eval_transform_resizes_and_normalises():
    x = torch.full((3, 78, 60), 0.75)
    y = eval_transform(image_size=32, mean=MEAN, std=STD)(x)
    assert y.shape == (3, 32, 32)
    assert torch.allclose(y, torch.ones_like(y))  # (0.75 - 0.5) / 0.25


@pytest.mark.parametrize("augment", [
    Augment(),
    Augment(rot90=True, rotation=0, crop_scale=1.0, color_jitter=0.3),
    Augment(randaugment_ops=2, random_erasing=1.0),
    Augment(hflip=False, vflip=False, rot90=False, rotation=0, crop_scale=1.0, affine_degrees=10, affine_translate=0.1,
            affine_scale=0.1),
])
def test_train_transform_output_shape_and_randomness(augment):
    torch.manual_seed(0)
    x = torch.rand(3, 40, 40)
    tf = train_transform(image_size=24, mean=MEAN, std=STD, augment=augment)
    outs = [tf(x) for _ in range(6)]
    assert all(o.shape == (3, 24, 24) and o.dtype == torch.float32 for o in outs)
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_random_erasing_zeroes_a_rectangle():
    tf = train_transform(image_size=32, mean=(0, 0, 0), std=(1, 1, 1),
                         augment=replace(OFF, random_erasing=1.0))
    y = tf(torch.ones(3, 32, 32))
    assert (y == 0).any() and (y == 1).any()


def test_tta_views_are_the_flip_and_dihedral_groups():
    assert set(TTA_VIEWS) == set(get_args(TtaMode))  # the choices the flags offer
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert len(TTA_VIEWS["none"](x)) == 1
    flips = TTA_VIEWS["flips"](x)
    dihedral = TTA_VIEWS["dihedral"](x)
    assert len(flips) == 4 and len(dihedral) == 8
    distinct = {tuple(v.flatten().tolist()) for v in dihedral}
    assert len(distinct) == 8
    assert {tuple(v.flatten().tolist()) for v in flips} <= distinct




def _uint8_batch(n: int = 8, size: int = 16) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)


def test_normalize_batch_matches_the_per_image_normalisation_and_leaves_its_input_alone():
    x, mean, std = _uint8_batch(), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expected = torch.stack([v2.Normalize(mean, std)(image.float() / 255) for image in x])
    assert torch.allclose(NormalizeBatch(mean, std)(x), expected, atol=1e-5)
    scaled = x.float()
    assert torch.allclose(NormalizeBatch(mean, std)(scaled), expected, atol=1e-5)
    assert torch.equal(scaled, x.float())  # a float input is not overwritten


def test_batch_augment_without_augmentation_only_normalises():
    x = _uint8_batch()
    y = BatchAugment(OFF, mean=MEAN, std=STD)(x)
    assert y.dtype == torch.float32 and torch.allclose(y, NormalizeBatch(MEAN, STD)(x), atol=1e-5)


def test_batch_augment_keeps_the_memory_format():
    x = _uint8_batch().contiguous(memory_format=torch.channels_last)
    augment = Augment(hflip=True, vflip=True, rotation=30, crop_scale=0.5, color_jitter=0.2, random_erasing=0.5)
    assert BatchAugment(augment, mean=MEAN, std=STD)(x).is_contiguous(memory_format=torch.channels_last)


def test_batch_augment_flips_and_right_angle_turns_are_exact_and_vary_per_image():
    x = _uint8_batch(n=32)
    norm = BatchAugment(OFF, mean=MEAN, std=STD)(x)
    y = BatchAugment(Augment(hflip=True, vflip=True, rot90=True, rotation=0, crop_scale=1.0), mean=MEAN, std=STD)(x)
    views = []
    for image, out in zip(norm, y, strict=True):
        candidates = [torch.rot90(v, k, dims=(-2, -1)) for v in (image, image.flip(-1)) for k in range(4)]
        match = [i for i, c in enumerate(candidates) if torch.allclose(out, c, atol=1e-4)]
        assert match, "every output is one of the 8 symmetries of its input"
        views.append(match[0])
    assert len(set(views)) >= 4  # chosen per image, not once per batch


def test_batch_augment_rotation_fills_black_and_crop_zooms_in():
    x = torch.full((16, 3, 32, 32), 255, dtype=torch.uint8)
    rotated = BatchAugment(Augment(hflip=False, vflip=False, rot90=False, rotation=180, crop_scale=1.0), mean=(0, 0, 0),
                           std=(1, 1, 1))(x)
    corners = rotated[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert float(corners.min()) < 0.5 and float(rotated[:, :, 16, 16].min()) > 0.99  # black corners, white middle
    ramp = torch.arange(32, dtype=torch.uint8).mul(8).expand(16, 3, 32, 32).contiguous()  # 0..248 left to right
    cropped = BatchAugment(Augment(hflip=False, vflip=False, rot90=False, rotation=0, crop_scale=0.25), mean=(0, 0, 0),
                           std=(1, 1, 1))(ramp)
    plain = ramp.float() / 255
    assert cropped.shape == ramp.shape and float(cropped.min()) >= 0  # a crop of the image: never outside it
    # A crop blown up to the full size stretches the ramp: steps between neighbouring columns shrink, to about the
    # crop's width fraction (0.5-1 here), and differ from image to image.
    steps = cropped.diff(dim=-1).mean((1, 2, 3)) / plain.diff(dim=-1).mean()
    assert float(steps.mean()) < 0.9 and float(steps.min()) > 0.4 and len(steps.unique()) == 16


def test_batch_augment_erasing_and_jitter():
    x = torch.full((8, 3, 32, 32), 128, dtype=torch.uint8)
    erased = BatchAugment(replace(OFF, random_erasing=1.0), mean=(0, 0, 0), std=(1, 1, 1))(x)
    zero = (erased == 0).all(1)  # (B, H, W)
    assert all(0.02 * 1024 * 0.5 < int(z.sum()) < 0.33 * 1024 * 1.5 for z in zero)  # one rectangle per image
    rows, cols = zero[0].nonzero(as_tuple=True)
    assert int(zero[0].sum()) == (int(rows.max() - rows.min()) + 1) * (int(cols.max() - cols.min()) + 1)
    jittered = BatchAugment(replace(OFF, color_jitter=0.4), mean=(0, 0, 0), std=(1, 1, 1))(x)
    assert len(jittered.mean((1, 2, 3)).unique()) == 8  # a brightness per image


def test_batch_augment_refuses_randaugment():
    with pytest.raises(ValueError, match="RandAugment"):
        BatchAugment(Augment(randaugment_ops=2), mean=MEAN, std=STD)
