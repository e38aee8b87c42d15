import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from celltune.channels import dataset_mean_std, percentile_stretch, read_channels
from celltune.data import DataError
from celltune.dataset import load_input


def _channel_files(folder, stem, values: dict[str, int]):
    for channel, value in values.items():
        Image.fromarray(np.full((6, 5), value, dtype=np.uint16)).save(folder / f"{stem}_{channel}.png")


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
