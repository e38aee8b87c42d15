import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from celltune.errors import DataError
from celltune.images import (
    ChannelFiles,
    apply_mask,
    dataset_mean_std,
    load_input,
    names_channel_files,
    percentile_stretch,
    read_channels,
    read_image,
)

from conftest import png


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
