"""One explained image as a picture: the image, its class activation map over it (jet, red most) and the top classes
as bars, drawn with Pillow straight from arrays: a report's dozen of them and ``celltune explain`` on a folder of
thousands cost milliseconds each, not a matplotlib figure each."""

from __future__ import annotations

import io
from functools import cache

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from celltune.reports.pictures import composite

PANEL = 192  # side of the image and of the map, in pixels
MARGIN = 12
TITLE = 40  # room above the panels for two lines of title
ALPHA = 0.45  # the map's weight over the image
BAR = 120  # length of a probability-1 bar
INK, GRID, CHOSEN, OTHER = (34, 34, 34), (200, 200, 200), (255, 127, 14), (31, 119, 180)  # matplotlib's tab colours


@cache
def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=13)  # Pillow's bundled TrueType face: the same on every machine


def _fitted(text: str, width: float) -> str:
    """``text``, cut with an ellipsis where it would run past ``width`` pixels (a long file name over the map)."""
    font = _font()
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "...") > width:
        text = text[:-1]
    return text + "..."


def _resized(rgb: np.ndarray, resample: Image.Resampling) -> np.ndarray:
    """(H, W, 3) in 0..1 -> (PANEL, PANEL, 3) in 0..1."""
    channels = [Image.fromarray(rgb[..., k].astype(np.float32), mode="F").resize((PANEL, PANEL), resample)
                for k in range(3)]
    return np.clip(np.stack([np.asarray(c) for c in channels], axis=-1), 0, 1)


def overlay(image: np.ndarray, heat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) image in 0..1 and (H, W) map in 0..1 -> the picture and the map blended over it, each (PANEL,
    PANEL, 3) uint8: the image's pixels kept sharp, the map smooth (it is coarser than the image)."""
    picture = _resized(composite(image), Image.Resampling.NEAREST)
    heat = np.asarray(Image.fromarray(np.asarray(heat, np.float32), mode="F").resize((PANEL, PANEL),
                                                                                     Image.Resampling.BILINEAR))
    coloured = colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
    blended = (1 - ALPHA) * picture + ALPHA * coloured
    return (picture * 255).round().astype(np.uint8), (blended * 255).round().astype(np.uint8)


def heatmap_png(image: np.ndarray, heat: np.ndarray, top: list[tuple[str, float]], *, target: str, method: str,
                title: str = "") -> bytes:
    """PNG bytes: the (C, H, W) 0..1 image, the (H, W) 0..1 map over it, the top classes as bars (``target``'s
    orange)."""
    font = _font()
    picture, blended = overlay(image, heat)
    names_width = int(max([font.getlength(name) for name, _ in top] + [40.0]))
    bars_left = 3 * MARGIN + 2 * PANEL
    width = bars_left + names_width + 8 + BAR + 48
    canvas = Image.new("RGB", (width, TITLE + PANEL + MARGIN), "white")
    canvas.paste(Image.fromarray(picture), (MARGIN, TITLE))
    canvas.paste(Image.fromarray(blended), (2 * MARGIN + PANEL, TITLE))
    pen = ImageDraw.Draw(canvas)
    pen.text((MARGIN, TITLE - 20), _fitted(title or "image", PANEL), fill=INK, font=font)
    pen.text((2 * MARGIN + PANEL, 4), f"{method}: evidence for {target}", fill=INK, font=font)
    pen.text((2 * MARGIN + PANEL, TITLE - 20), "(red most, blue least)", fill=INK, font=font)
    pen.text((bars_left, TITLE - 20), "top classes", fill=INK, font=font)
    x0 = bars_left + names_width + 8
    pen.line([(x0, TITLE), (x0, TITLE + PANEL)], fill=GRID)
    pen.line([(x0 + BAR, TITLE), (x0 + BAR, TITLE + PANEL)], fill=GRID)  # probability 1
    step = PANEL // max(len(top), 1)
    for k, (name, prob) in enumerate(top):
        y = TITLE + k * step + step // 2
        pen.text((x0 - 8 - font.getlength(name), y - 8), name, fill=INK, font=font)
        pen.rectangle([x0, y - 8, x0 + max(1, round(BAR * prob)), y + 8], fill=CHOSEN if name == target else OTHER)
        pen.text((x0 + BAR + 6, y - 8), f"{prob:.2f}", fill=INK, font=font)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()
