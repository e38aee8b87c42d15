import io

import numpy as np
import pytest
import tifffile
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image

from celltune.data.image_facts import inspect_image
from celltune.data.images import (
    ChannelFiles,
    apply_mask,
    dataset_mean_std,
    image_header,
    load_input,
    names_channel_files,
    percentile_stretch,
    read_channels,
    read_image,
    set_max_image_pixels,
)
from celltune.errors import DataError

from conftest import bomb_png, png


def _channel_files(folder, stem, values: dict[str, int]):
    for channel, value in values.items():
        Image.fromarray(np.full((6, 5), value, dtype=np.uint16)).save(folder / f"{stem}_{channel}.png")


def test_read_image_grayscale_8_and_16_bit_and_colour(tmp_path):
    gray = read_image(png(tmp_path / "g.png", size=(5, 4), value=255))
    assert gray.shape == (3, 4, 5) and float(gray.max()) == 1.0
    deep = np.full((4, 5), 1000, dtype=np.uint16)
    deep[0, 0] = 65535
    Image.fromarray(deep).save(tmp_path / "d16.png")
    x = read_image(tmp_path / "d16.png")
    assert x.shape == (3, 4, 5)
    assert float(x[0, 0, 0]) == pytest.approx(1.0) and float(x[0, 1, 1]) == pytest.approx(1000 / 65535)
    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    rgb[..., 1] = 255
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=100)
    c = read_image(tmp_path / "c.jpg")
    assert float(c[1].mean()) > 0.9 and float(c[0].mean()) < 0.1


def test_unreadable_image_names_the_file_and_the_fix(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"broken\.png.*replace or remove"):
        read_image(bad)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.png: cannot read image \(empty file, 0 bytes\); replace or remove"):
        read_image(tmp_path / "empty.png")


def test_what_channels_means_is_decided_in_one_place():
    assert not names_channel_files(None)  # RGB from one file
    assert not names_channel_files(["0", "2"])  # planes of one file
    assert names_channel_files(["red", "green"])  # {stem}_red.png files


def test_per_channel_files_keep_16_bit_precision(tmp_path):
    _channel_files(tmp_path, "a", {"red": 1, "green": 2, "blue": 3, "yellow": 65535})
    x = read_channels(tmp_path / "a", ["red", "green", "blue", "yellow"])
    assert x.shape == (4, 6, 5) and x.dtype == torch.float32
    # Counts 1 and 2 stay distinct: an 8-bit reading would make both 0.
    assert x[:, 0, 0].tolist() == pytest.approx([1 / 65535, 2 / 65535, 3 / 65535, 1.0])
    assert read_channels(tmp_path / "a", ["yellow", "red"])[:, 0, 0].tolist() == pytest.approx([1.0, 1 / 65535])


def test_missing_channel_file_is_named(tmp_path):
    _channel_files(tmp_path, "a", {"red": 1, "green": 2})
    with pytest.raises(DataError, match=r"a_blue\.png"):
        read_channels(tmp_path / "a", ["red", "blue"])


@pytest.mark.parametrize("layout", ["planar", "interleaved"])
def test_multichannel_tiff_planes(tmp_path, layout):
    planes = np.stack([np.full((10, 12), v, dtype=np.uint16) for v in (100, 200, 300, 400)])  # (4, H, W)
    path = tmp_path / "m.tif"
    if layout == "planar":
        tifffile.imwrite(path, planes)
    else:
        tifffile.imwrite(path, np.moveaxis(planes, 0, -1), photometric="minisblack")
    x = read_channels(path, ["3", "0"])
    assert x.shape == (2, 10, 12)
    assert x[:, 0, 0].tolist() == pytest.approx([400 / 65535, 100 / 65535])
    with pytest.raises(DataError, match="plane numbers"):
        read_channels(path, ["red"])
    with pytest.raises(DataError, match="has 4 channels"):
        read_channels(path, ["7"])


def test_percentile_stretch_maps_each_channel_to_0_1():
    x = torch.stack([torch.linspace(0, 0.01, 1000).reshape(25, 40), torch.linspace(0.5, 0.6, 1000).reshape(25, 40)])
    y = percentile_stretch(x, 0, 100)
    assert y.amin(dim=(1, 2)).tolist() == pytest.approx([0, 0]) and y.amax(dim=(1, 2)).tolist() == pytest.approx([1, 1])
    clipped = percentile_stretch(x, 1, 99)
    assert float(clipped.max()) == 1.0 and float(clipped.min()) == 0.0


def test_load_input_percentile_and_dataset_statistics(tmp_path):
    _channel_files(tmp_path, "a", {"red": 10, "green": 20})
    Image.fromarray(np.arange(30, dtype=np.uint16).reshape(6, 5) * 100).save(tmp_path / "b_red.png")
    Image.fromarray(np.full((6, 5), 7, dtype=np.uint16)).save(tmp_path / "b_green.png")
    b = load_input(tmp_path / "b", channels=["red", "green"], intensity="percentile")
    assert float(b[0].max()) == 1.0 and float(b[0].min()) == 0.0
    mean, std = dataset_mean_std([torch.zeros(2, 3, 3), torch.ones(2, 3, 3)])
    assert mean == pytest.approx([0.5, 0.5]) and std[0] == pytest.approx(torch.tensor([0.0] * 9 + [1.0] * 9).std())


def test_mask_zeroes_black_pixels_and_must_match_the_image_size(tmp_path):
    mask = Image.new("L", (4, 2), 0)
    mask.paste(255, (0, 0, 2, 2))  # the left half is kept
    mask.save(tmp_path / "m.png")
    image = torch.ones(3, 2, 4)
    masked = apply_mask(image, tmp_path / "m.png")
    assert masked[:, :, :2].eq(1).all() and masked[:, :, 2:].eq(0).all()
    png(tmp_path / "small.png", size=(3, 2))
    with pytest.raises(DataError, match=r"small\.png: mask is \(2, 3\) but its image is \(2, 4\)"):
        apply_mask(image, tmp_path / "small.png")


def test_channel_files_lists_each_folder_once(tmp_path, monkeypatch):
    for stem in ("a", "a_b", "c"):
        for channel in ("red", "green"):
            png(tmp_path / f"{stem}_{channel}.png")
    plain = png(tmp_path / "d.png")
    files = ChannelFiles()
    listings = []
    real_iterdir = type(tmp_path).iterdir
    monkeypatch.setattr(type(tmp_path), "iterdir", lambda self: listings.append(self) or real_iterdir(self))
    assert [p.name for p in files.of(tmp_path / "a")] == ["a_green.png", "a_red.png"]  # not a_b_red.png
    assert [p.name for p in files.of(tmp_path / "a_b")] == ["a_b_green.png", "a_b_red.png"]
    assert files.of(tmp_path / "c") and files.of(plain) == [plain] and files.of(tmp_path / "zz") == []
    assert listings == [tmp_path]


def test_bmp_and_single_page_tiff_are_read_like_png(tmp_path):
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 12
    Image.fromarray(gray).save(tmp_path / "g.bmp")
    rgb = np.stack([gray, 255 - gray, np.full_like(gray, 7)], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "c.bmp")
    deep = np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000
    tifffile.imwrite(tmp_path / "d.tif", deep)
    Image.fromarray(gray).save(tmp_path / "g.tiff")
    g = read_image(tmp_path / "g.bmp")
    assert g.shape == (3, 4, 5) and torch.allclose(g[0], torch.from_numpy(gray / 255).float())
    c = read_image(tmp_path / "c.bmp")
    assert torch.allclose(c[1], torch.from_numpy((255 - gray) / 255).float())
    assert float(c[2, 0, 0]) == pytest.approx(7 / 255)
    d = load_input(tmp_path / "d.tif")  # one 16-bit page, RGB by repetition
    assert d.shape == (3, 4, 5) and float(d[0, 3, 4]) == pytest.approx(19 * 3000 / 65535)
    assert torch.equal(read_image(tmp_path / "g.tiff"), g)


def test_percentile_intensity_clips_one_percent_low_and_a_fifth_of_a_percent_high(tmp_path):
    # 10,000 distinct 16-bit values per channel file. torch.quantile interpolates: the 1st percentile lies between
    # the 100th and 101st smallest value, the 99.8th between the 9,980th and 9,981st, so exactly 100 pixels (1%)
    # fall to 0 and 20 (0.2%) rise to 1 in each channel, whatever the channel's range.
    rng = np.random.default_rng(0)
    for channel, scale in (("red", 1), ("green", 6)):
        values = rng.permutation(10_000).astype(np.uint16) * scale
        Image.fromarray(values.reshape(100, 100)).save(tmp_path / f"a_{channel}.png")
    x = load_input(tmp_path / "a", channels=["red", "green"], intensity="percentile")
    assert [int((c == 0).sum()) for c in x] == [100, 100]
    assert [int((c == 1).sum()) for c in x] == [20, 20]
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0


# Hostile and odd inputs: each is read as a viewer shows it, or refused with one DataError naming the file and fix.

@pytest.fixture
def pixel_limit():
    yield set_max_image_pixels
    set_max_image_pixels(89_478_485)  # PIL's default, for the tests that follow


def test_images_above_the_pixel_limit_are_refused_before_decoding(tmp_path, pixel_limit):
    bomb = bomb_png(tmp_path / "bomb.png")
    for read in (read_image, lambda p: read_channels(p, ["0"]), image_header):
        with pytest.raises(DataError, match=r"bomb\.png: .*900,000,000.*--max-image-pixels"):
            read(bomb)
    assert "--max-image-pixels" in inspect_image(bomb).error
    # Our own check (above the limit) and PIL's (above twice the limit) say the same: the file and the flag.
    pixel_limit(300)
    png(tmp_path / "ok.png", size=(20, 15))  # 300 pixels: at the limit
    assert read_image(tmp_path / "ok.png").shape == (3, 15, 20)
    for size in [(20, 16), (40, 40)]:
        with pytest.raises(DataError, match=r"big\.png: .*(320|1,600) pixels, above the limit of 300.*--max-image"):
            read_image(png(tmp_path / "big.png", size=size))
    tifffile.imwrite(tmp_path / "big.tif", np.zeros((2, 40, 40), dtype=np.uint8))
    with pytest.raises(DataError, match=r"big\.tif: 40x40 = 1,600 pixels.*--max-image-pixels"):
        read_channels(tmp_path / "big.tif", ["0", "1"])
    pixel_limit(0)  # no limit
    assert read_image(tmp_path / "big.png").shape == (3, 40, 40)


def test_cmyk_jpeg_and_transparent_png_are_read_as_rgb(tmp_path):
    Image.new("CMYK", (6, 4), (0, 255, 0, 0)).save(tmp_path / "cmyk.jpg", quality=100)  # no magenta ink: green
    x = read_image(tmp_path / "cmyk.jpg")
    assert x.shape == (3, 4, 6) and x[0].mean() > 0.95 and x[1].mean() < 0.05 and x[2].mean() > 0.95
    # A palette image whose first colour is fully transparent: those pixels composite onto black, the others keep
    # their colour (alpha 255).
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[:, :3] = (255, 0, 0, 0)  # transparent red
    rgba[:, 3:] = (0, 0, 255, 255)  # opaque blue
    Image.fromarray(rgba, "RGBA").convert("P").save(tmp_path / "palette.png")
    assert "transparency" in Image.open(tmp_path / "palette.png").info
    p = read_image(tmp_path / "palette.png")
    assert float(p[:, :, :3].abs().max()) == 0.0 and p[:, :, 3:].mean(dim=(1, 2)).tolist() == [0.0, 0.0, 1.0]
    half = rgba.copy()
    half[..., 3] = 128
    Image.fromarray(half, "RGBA").save(tmp_path / "half.png")
    assert float(read_image(tmp_path / "half.png")[2, 0, 5]) == pytest.approx(128 / 255)


def test_a_16_bit_single_channel_png_keeps_its_scale_however_dim(tmp_path):
    Image.fromarray(np.full((3, 4), 100, dtype=np.uint16)).save(tmp_path / "dim.png")
    assert Image.open(tmp_path / "dim.png").mode == "I;16"
    assert float(read_image(tmp_path / "dim.png").max()) == pytest.approx(100 / 65535)  # not 100 / 255


def test_exif_rotated_jpeg_is_read_as_a_viewer_shows_it(tmp_path):
    array = np.zeros((4, 6, 3), dtype=np.uint8)
    array[0, 0] = 255  # white top-left corner of the stored pixels
    img = Image.fromarray(array)
    exif = img.getexif()
    exif[ExifTags.Base.Orientation] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "turned.jpg", exif=exif, quality=100)
    x = read_image(tmp_path / "turned.jpg")
    assert x.shape == (3, 6, 4)  # displayed upright: 4 wide, 6 high
    assert float(x[:, 0, 3].mean()) > 0.8 and float(x[:, 0, 0].mean()) < 0.2  # the corner went to the top right
    assert (inspect_image(tmp_path / "turned.jpg").width, inspect_image(tmp_path / "turned.jpg").height) == (4, 6)


def test_frames_are_refused_unless_channels_name_them(tmp_path):
    pages = [Image.new("L", (7, 5), v) for v in (10, 20, 30)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    with pytest.raises(DataError, match=r"stack\.tif: 3 pages in one file; pass --channels 0,1"):
        read_image(tmp_path / "stack.tif")
    assert read_channels(tmp_path / "stack.tif", ["0", "2"]).mul(255).round().flatten(1)[:, 0].tolist() == [10, 30]
    frames = [Image.new("L", (5, 5), v) for v in (0, 255)]
    frames[0].save(tmp_path / "cell.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    with pytest.raises(DataError, match=r"cell\.gif: 2 frames in one file; .*still images"):
        read_image(tmp_path / "cell.gif")


def test_a_file_is_read_by_its_content_whatever_its_extension_says(tmp_path):
    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    rgb[..., 2] = 255
    Image.fromarray(rgb).save(tmp_path / "really_a_jpeg.png", format="JPEG", quality=100)
    assert torch.allclose(read_image(tmp_path / "really_a_jpeg.png"), torch.tensor([0.0, 0.0, 1.0])[:, None, None],
                          atol=0.02)
    assert inspect_image(tmp_path / "really_a_jpeg.png").format == "JPEG"
    tifffile.imwrite(tmp_path / "planes.png", np.stack([np.full((3, 3), v, dtype=np.uint16) for v in (1, 2)]))
    assert read_channels(tmp_path / "planes.png", ["1"]).max() == pytest.approx(2 / 65535)
    png(tmp_path / "plain.tif", size=(3, 3), value=51)  # a PNG named .tif, planes read through PIL
    assert read_channels(tmp_path / "plain.tif", ["0"]).max() == pytest.approx(0.2)


_SEEDS = [  # small valid files of each format the reader meets, for hypothesis to mutate
    (lambda f: Image.new("L", (6, 5), 77).save(f, format="PNG")),
    (lambda f: Image.new("RGB", (6, 5), (1, 2, 3)).save(f, format="JPEG")),
    (lambda f: Image.new("I;16", (6, 5), 999).save(f, format="TIFF")),
    (lambda f: Image.new("P", (6, 5), 3).save(f, format="BMP")),
    (lambda f: Image.new("L", (4, 4), 9).save(f, format="GIF")),
]


def _seed_bytes(index: int) -> bytes:
    buffer = io.BytesIO()
    _SEEDS[index](buffer)
    return buffer.getvalue()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_bytes_give_a_decoded_image_or_celltunes_own_error(tmp_path, data):
    """Random bytes, and valid files with bytes flipped, cut, or inserted: the reader returns a (3, H, W) image in
    [0, 1] or raises DataError naming the file; never any other exception."""
    seed = bytearray(_seed_bytes(data.draw(st.integers(0, len(_SEEDS) - 1))))
    how = data.draw(st.sampled_from(["random", "flip", "cut", "insert"]))
    if how == "random":
        content = data.draw(st.binary(max_size=512))
    elif how == "cut":
        content = bytes(seed[: data.draw(st.integers(0, len(seed)))])
    else:
        for _ in range(data.draw(st.integers(1, 8))):
            at = data.draw(st.integers(0, len(seed) - 1))
            byte = data.draw(st.integers(0, 255))
            if how == "flip":
                seed[at] = byte
            else:
                seed.insert(at, byte)
        content = bytes(seed)
    path = tmp_path / "fuzz.png"
    path.write_bytes(content)
    try:
        image = read_image(path)
    except DataError as err:
        assert str(err).startswith(f"{path}: ")
    else:
        assert image.ndim == 3 and image.shape[0] == 3 and image.dtype == torch.float32
        assert bool(torch.isfinite(image).all()) and 0.0 <= float(image.min()) <= float(image.max()) <= 1.0
    facts = inspect_image(path)  # the audit's reader: an error string, never an exception
    assert (facts.error is None) == (facts.width > 0)
