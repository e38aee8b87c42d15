import pickle

import numpy as np
import pytest
import torch

from celltune.data.cache import build_cache
from celltune.data.dataset import CachedDataset, CellDataset, WithIndex, encode_target
from celltune.data.discovery import discover, mask_paths
from celltune.errors import DataError

from conftest import left_half_masks


def test_masks_are_found_by_relative_path_and_black_out_background(tiny_data, tmp_path):
    samples = discover(tiny_data).splits["train"]
    left_half_masks(tiny_data, samples, tmp_path / "masks")
    paths = mask_paths(samples, data_root=tiny_data, mask_dir=tmp_path / "masks")
    assert paths[0] == tmp_path / "masks" / samples[0].path.relative_to(tiny_data)
    image, label = CellDataset(samples, None, paths, num_classes=6)[0]
    assert float(image[:, :, 16:].abs().max()) == 0.0 and float(image[:, :, :16].max()) > 0
    assert label == samples[0].label
    (tmp_path / "masks" / "train" / "golgi").rename(tmp_path / "masks" / "train" / "gone")
    with pytest.raises(DataError, match="no mask at"):
        mask_paths(samples, data_root=tiny_data, mask_dir=tmp_path / "masks")


def test_targets_are_class_indices_or_multi_hot_vectors():
    assert encode_target(3, 5) == 3
    target = encode_target((0, 4), 5)
    assert isinstance(target, torch.Tensor) and target.dtype == torch.float32
    assert target.tolist() == [1.0, 0.0, 0.0, 0.0, 1.0]


def test_cached_dataset_serves_uint8_images_and_pickles_small(tiny_data, tmp_path):
    samples = discover(tiny_data).splits["val"]
    path = build_cache(samples, size=24, channels=None, intensity="scale", cache_dir=tmp_path)
    array = path.array()
    dataset = CachedDataset(path, samples, num_classes=6)
    image, label = dataset[5]
    assert image.dtype == torch.uint8 and torch.equal(image, torch.from_numpy(np.array(array[5])))
    assert label == samples[5].label and len(dataset) == len(samples)
    clone = pickle.loads(pickle.dumps(dataset))  # no open file inside: workers and ddp_spawn open their own
    assert clone._files is None and torch.equal(clone[5][0], image)


def test_with_index_adds_each_items_position(tiny_data):
    samples = discover(tiny_data).splits["val"][:3]
    items = [WithIndex(CellDataset(samples, num_classes=6))[i] for i in range(3)]
    assert [i for _, _, i in items] == [0, 1, 2]
