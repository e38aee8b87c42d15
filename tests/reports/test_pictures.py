"""Composites of any number of channels, checked pixel by pixel against hand-made expectations."""

import numpy as np

from celltune.reports.pictures import composite, unnormalize


def test_one_channel_is_grey_and_three_are_rgb():
    grey = np.array([[[0.0, 0.5], [1.0, 2.0]]])  # (1, 2, 2); 2.0 is clipped to 1
    np.testing.assert_allclose(composite(grey), np.repeat(np.array([[0.0, 0.5], [1.0, 1.0]])[..., None], 3, axis=2))
    rgb = np.arange(12, dtype=np.float32).reshape(3, 2, 2) / 12
    np.testing.assert_allclose(composite(rgb), rgb.transpose(1, 2, 0))


def test_four_channels_blend_red_green_blue_and_yellow():
    image = np.zeros((4, 1, 3), dtype=np.float32)
    image[0, 0, 0] = 0.5  # red only
    image[3, 0, 1] = 0.5  # yellow only: half red, half green
    image[:, 0, 2] = [0.2, 0.2, 0.0, 0.6]  # red and yellow add up to 0.8 red, green 0.8
    expected = np.array([[[0.5, 0, 0], [0.5, 0.5, 0], [0.8, 0.8, 0.0]]])
    np.testing.assert_allclose(composite(image), expected, atol=1e-6)


def test_unnormalize_undoes_the_normalisation():
    x = np.full((2, 1, 1), 2.0, dtype=np.float32)
    np.testing.assert_allclose(unnormalize(x, [0.5, 0.1], [0.25, 0.2])[:, 0, 0], [1.0, 0.5])
