import os

import numpy as np
import torch
from PIL import Image

from celltune.data.cache import build_cache
from celltune.data.discovery import discover
from celltune.data.images import load_input
from celltune.data.samples import Sample
from celltune.data.transforms import NormalizeBatch, eval_transform

from conftest import class_tree, png


def test_cache_holds_the_eval_presets_geometry_in_uint8(tiny_data, tmp_path):
    samples = discover(tiny_data).splits["val"]
    path = build_cache(samples, size=24, channels=None, intensity="scale", cache_dir=tmp_path)
    array = path.array()
    assert array.shape == (len(samples), 3, 24, 24) and array.dtype == np.uint8
    # Normalised, a cached image is the eval preset's image up to the 8-bit rounding of the cache.
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    expected = eval_transform(image_size=24, mean=mean, std=std)(load_input(samples[5].path))
    cached = NormalizeBatch(mean, std)(torch.from_numpy(np.array(array[5:6])))[0]
    assert (cached - expected).abs().max() <= 0.5 / 255 / 0.25 + 1e-5


def test_non_square_images_are_centre_cropped_like_the_eval_preset(tmp_path):
    ramp = np.tile(np.arange(40, dtype=np.uint8) * 6, (20, 1))  # 20 x 40, brighter to the right
    Image.fromarray(ramp).save(class_tree(tmp_path / "d", {"a": 2, "b": 2}) / "a" / "0.png")
    samples = [s for split in discover(tmp_path / "d", val_fraction=0.5, test_fraction=0).splits.values()
               for s in split]
    array = build_cache(samples, size=10, channels=None, intensity="scale", cache_dir=tmp_path / "c").array()
    first = next(i for i, s in enumerate(samples) if s.path.parent.name == "a")
    expected = eval_transform(image_size=10, mean=(0, 0, 0), std=(1, 1, 1))(load_input(samples[first].path))
    assert np.abs(array[first].astype(float) / 255 - expected.numpy()).max() <= 0.5 / 255 + 1e-6


def test_cache_is_reused_and_rebuilt_when_a_file_or_option_changes(tmp_path):
    root = class_tree(tmp_path / "d", {"a": 3, "b": 3}, size=(20, 20))
    samples = [s for split in discover(root, val_fraction=0.34, test_fraction=0.0).splits.values() for s in split]
    cache = tmp_path / "cache"
    first = build_cache(samples, size=16, channels=None, intensity="scale", cache_dir=cache)
    built_at = first.shards[0].stat().st_mtime_ns
    assert build_cache(samples, size=16, channels=None, intensity="scale", cache_dir=cache) == first
    assert first.shards[0].stat().st_mtime_ns == built_at  # a hit: not rebuilt
    assert build_cache(samples, size=20, channels=None, intensity="scale", cache_dir=cache) != first

    changed = samples[0].path
    Image.new("L", (20, 20), 255).save(changed)
    os.utime(changed, ns=(built_at + 10**9, built_at + 10**9))
    second = build_cache(samples, size=16, channels=None, intensity="scale", cache_dir=cache)
    assert second != first
    assert second.array()[0].min() == 255 and first.array()[0].max() < 255


def test_cache_is_rebuilt_when_masks_channels_or_intensity_change(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    for i in range(3):
        for c, channel in enumerate(("red", "green")):
            Image.new("L", (12, 12), 30 * i + 60 * c + 1).save(root / f"{i}_{channel}.png")
    samples = [Sample(root / str(i), i % 2) for i in range(3)]  # stems of per-channel files

    def cache(**kw):
        options = {"size": 8, "channels": ["red", "green"], "intensity": "scale", "cache_dir": tmp_path / "c"} | kw
        return build_cache(samples, **options)

    base = cache()
    assert base.array().shape == (len(samples), 2, 8, 8)
    assert cache(channels=["green", "red"]) != base
    assert cache(intensity="percentile") != base
    masks = [tmp_path / "m" / f"{i}.png" for i in range(len(samples))]
    for m in masks:
        png(m, size=(12, 12), value=255)
    with_masks = cache(masks=masks)
    assert with_masks != base and cache(masks=masks) == with_masks  # a hit
    png(masks[0], size=(12, 12), value=0)
    os.utime(masks[0], ns=(10**18, 10**18))  # a changed mask file
    changed = cache(masks=masks)
    assert changed != with_masks and changed.array()[0].max() == 0


def test_a_cache_larger_than_one_shard_is_split_and_read_back_across_the_boundaries(tmp_path):
    """Seven images of 3x8x8 bytes with shards of at most 3 images: shards of 3, 3 and 1, built by two decoding
    workers, and every image read back by the dataset is the one decoded from its file."""
    from celltune.data.dataset import CachedDataset

    root = class_tree(tmp_path / "d", {"a": 4, "b": 3}, size=(12, 12))
    samples = []
    for i, path in enumerate(sorted(root.rglob("*.png"))):
        Image.new("L", (12, 12), 20 * i + 5).save(path)  # each image its own grey
        samples.append(Sample(path, int(path.parent.name == "b")))
    cache = build_cache(samples, size=8, channels=None, intensity="scale", cache_dir=tmp_path / "c", workers=2,
                        shard_bytes=3 * 3 * 8 * 8 + 5)
    assert [np.load(s).shape[0] for s in cache.shards] == [3, 3, 1]
    dataset = CachedDataset(cache, samples)
    for i, sample in enumerate(samples):
        expected = round(float(load_input(sample.path)[0, 0, 0]) * 255)
        image, _ = dataset[i]
        assert image.shape == (3, 8, 8) and int(image.min()) == int(image.max()) == expected


def test_a_cache_the_disk_cannot_hold_is_refused_before_building_naming_the_space(tmp_path, monkeypatch):
    import pytest

    from celltune.config import DataConfig
    from celltune.data import cache as cache_module
    from celltune.errors import ConfigError
    from celltune.training.datamodule import use_cache

    root = class_tree(tmp_path / "d", {"a": 3, "b": 3}, size=(20, 20))
    found = discover(root, val_fraction=0.34, test_fraction=0.0)
    monkeypatch.setattr(cache_module, "free_bytes", lambda directory: cache_module.SPARE_BYTES + 100)
    # 6 images of 3 x 16 x 16 bytes = 4,608 bytes do not fit in 100 bytes beyond the spare
    with pytest.raises(ConfigError, match=r"needs 0\.00 GB .* --cache off"):
        build_cache(found.samples, size=16, channels=None, intensity="scale", cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()
    on, auto = (DataConfig(root=str(root), cache=mode, cache_dir=str(tmp_path / "c")) for mode in ("on", "auto"))
    with pytest.raises(ConfigError, match="--cache-dir on a larger disk"):
        use_cache(on, found, image_size=16, in_chans=3)
    assert use_cache(auto, found, image_size=16, in_chans=3) is False  # files decoded every epoch instead
    monkeypatch.setattr(cache_module, "free_bytes", lambda directory: cache_module.SPARE_BYTES + 4608)
    assert use_cache(auto, found, image_size=16, in_chans=3) is True
