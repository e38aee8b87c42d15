"""The explained-image picture, checked pixel by pixel against values computed by hand."""

import io

import numpy as np
from PIL import Image

from celltune.reports import heatmap_picture as hp


def _decoded(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_the_map_is_blended_over_the_image_with_jet_at_0_45():
    grey = np.full((1, 8, 8), 0.5)
    for heat, expected in ((1.0, (128, 70, 70)), (0.0, (70, 70, 128))):
        # jet(1) = (0.5, 0, 0), jet(0) = (0, 0, 0.5); 0.55 * 0.5 + 0.45 * 0.5 = 0.5 -> 127.5 -> 128, and
        # 0.55 * 0.5 = 0.275 -> 70.1 -> 70 (x 255)
        png = hp.heatmap_png(grey, np.full((2, 2), heat), [("a", 0.7), ("b", 0.3)], target="a", method="gradcam")
        pixels = _decoded(png)
        centre = hp.TITLE + hp.PANEL // 2
        assert tuple(pixels[centre, hp.MARGIN + hp.PANEL // 2]) == (128, 128, 128)  # the image alone
        assert tuple(pixels[centre, 2 * hp.MARGIN + hp.PANEL + hp.PANEL // 2]) == expected


def test_the_map_peaks_where_it_was_hot_and_the_chosen_class_bar_is_its_length():
    heat = np.zeros((4, 4))
    heat[0, 0] = 1.0  # the top-left corner
    pixels = _decoded(hp.heatmap_png(np.zeros((3, 16, 16)), heat, [("x", 0.25), ("long_class_name", 0.75)],
                                     target="long_class_name", method="gradcam", title="a" * 200))
    panel = pixels[hp.TITLE:hp.TITLE + hp.PANEL, 2 * hp.MARGIN + hp.PANEL:2 * hp.MARGIN + 2 * hp.PANEL]
    red = panel[..., 0].astype(int) - panel[..., 2]
    y, x = np.unravel_index(np.argmax(red), red.shape)
    assert y < hp.PANEL // 4 and x < hp.PANEL // 4
    orange = np.all(pixels == hp.CHOSEN, axis=-1)
    columns = np.flatnonzero(orange.any(axis=0))
    assert len(columns) == round(hp.BAR * 0.75) + 1 and np.ptp(columns) == round(hp.BAR * 0.75)
    blue = np.flatnonzero(np.all(pixels == hp.OTHER, axis=-1).any(axis=0))
    assert len(blue) == round(hp.BAR * 0.25) + 1
