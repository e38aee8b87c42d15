import os
import pickle

import numpy as np
import torch
from PIL import Image

from celltune.cache import CachedDataset, build_cache
from celltune.data import discover
from celltune.dataset import load_input
from celltune.transforms import NormalizeBatch


def test_cache_holds_the_decoded_resized_images(tiny_data, tmp_path):
    samples = discover(tiny_data).splits["val"]
    path = build_cache(samples, size=24, channels=None, intensity="scale", cache_dir=tmp_path)
    array = np.load(path, mmap_mode="r")
    assert array.shape == (len(samples), 3, 24, 24) and array.dtype == np.uint8
    from torchvision.transforms.v2 import functional as TF

    expected = TF.resize(load_input(samples[5].path), [24], antialias=True)
    assert np.abs(array[5].astype(int) - (expected * 255).round().numpy().astype(int)).max() <= 1
    dataset = CachedDataset(path, samples, num_classes=6)
    image, label = dataset[5]
    assert image.dtype == torch.uint8 and torch.equal(image, torch.from_numpy(np.array(array[5])))
    assert label == samples[5].label
    # Whole uint8 batches are normalised on their device: (x / 255 - mean) / std, in the batch's memory format.
    images, labels = torch.utils.data.default_collate([dataset[5], dataset[6]])
    assert images.dtype == torch.uint8 and labels.tolist() == [samples[5].label, samples[6].label]
    batch = NormalizeBatch((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))(images.contiguous(memory_format=torch.channels_last))
    assert batch.shape == (2, 3, 24, 24) and batch.dtype == torch.float32
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(batch[0], (image.float() / 255 - 0.5) / 0.25, atol=1e-5)
    clone = pickle.loads(pickle.dumps(dataset))  # no array inside: workers and ddp_spawn open their own
    assert clone._array is None and torch.equal(clone[5][0], image)


def test_cache_is_reused_and_rebuilt_when_a_file_or_option_changes(tmp_path):
    root = tmp_path / "d"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (20, 20), 50 * i).save(root / cls / f"{i}.png")
    samples = [s for split in discover(root, val_fraction=0.34, test_fraction=0.0).splits.values() for s in split]
    cache = tmp_path / "cache"
    first = build_cache(samples, size=16, channels=None, intensity="scale", cache_dir=cache)
    built_at = first.stat().st_mtime_ns
    assert build_cache(samples, size=16, channels=None, intensity="scale", cache_dir=cache) == first
    assert first.stat().st_mtime_ns == built_at  # a hit: not rebuilt
    assert build_cache(samples, size=20, channels=None, intensity="scale", cache_dir=cache) != first

    changed = samples[0].path
    Image.new("L", (20, 20), 255).save(changed)
    os.utime(changed, ns=(built_at + 10**9, built_at + 10**9))
    second = build_cache(samples, size=16, channels=None, intensity="scale", cache_dir=cache)
    assert second != first
    assert np.load(second)[0].min() == 255 and np.load(first)[0].max() < 255
