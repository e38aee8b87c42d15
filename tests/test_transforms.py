import pytest
import torch

from celltune.transforms import TTA_VIEWS, Augment, eval_transform, train_transform

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
    Augment(hflip=False, vflip=False, rotation=0, crop_scale=1.0, affine_degrees=10, affine_translate=0.1,
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
                         augment=Augment(hflip=False, vflip=False, rotation=0, crop_scale=1.0, random_erasing=1.0))
    y = tf(torch.ones(3, 32, 32))
    assert (y == 0).any() and (y == 1).any()


def test_tta_views_are_the_flip_and_dihedral_groups():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert len(TTA_VIEWS["none"](x)) == 1
    flips = TTA_VIEWS["flips"](x)
    dihedral = TTA_VIEWS["dihedral"](x)
    assert len(flips) == 4 and len(dihedral) == 8
    distinct = {tuple(v.flatten().tolist()) for v in dihedral}
    assert len(distinct) == 8
    assert {tuple(v.flatten().tolist()) for v in flips} <= distinct
