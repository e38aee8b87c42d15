import os

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from celltune.config import Augment, DataConfig, OptimConfig
from celltune.data.discovery import discover
from celltune.models.checkpoint import ModelCard
from celltune.models.factory import create_model
from celltune.training.datamodule import CellDataModule, class_weights
from celltune.training.fit import prepare
from celltune.training.module import CellClassifier

from conftest import class_tree, left_half_masks, quick_config


def _card(found, size: int) -> ModelCard:
    return ModelCard(model_name="mobilenet_v2", class_names=found.class_names, mean=[0.5] * 3, std=[0.25] * 3,
                     image_size=size)


def _datamodule(root, tmp_path, *, size=32, batch_size=8, augment=Augment(), workers=0, channels_last=False,
                **data) -> CellDataModule:
    found = discover(root)
    dm = CellDataModule(found, data=DataConfig(root=str(root), cache_dir=str(tmp_path / "cache"), **data),
                        augment=augment, card=_card(found, size), batch_size=batch_size, num_workers=workers,
                        channels_last=channels_last)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_cached_batches_cross_as_uint8_and_are_augmented_or_normalised_after(tiny_data, tmp_path):
    dm = _datamodule(tiny_data, tmp_path, cache="on")
    images, _, keys = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and dm.augment_batch is not None  # augmented after the transfer
    assert keys.tolist() == [[0, position] for position in range(8)]  # epoch 0, the first 8 of its order
    val_images, _, _ = next(iter(dm.val_dataloader()))
    assert val_images.dtype == torch.uint8 and dm.normalize_batch is not None  # normalised after the transfer
    # RandAugment has no batch form: the workers augment image by image, still in uint8; erasing and normalisation
    # are left for the batch.
    other = _datamodule(tiny_data, tmp_path, cache="on", augment=Augment(randaugment_ops=1, random_erasing=1.0))
    images, _, _ = next(iter(other.train_dataloader()))
    assert images.dtype == torch.uint8 and other.augment_batch is not None
    erased = other.augment_batch(torch.full((8, 3, 32, 32), 255, dtype=torch.uint8))
    assert all(bool((x == 0).all(0).any()) for x in erased)  # every image has a rectangle at the mean
    # Uncached data has no uint8 batches: transformed and normalised image by image.
    uncached = _datamodule(tiny_data, tmp_path, cache="off")
    images, _, _ = next(iter(uncached.train_dataloader()))
    assert uncached.augment_batch is None and uncached.normalize_batch is None and images.dtype == torch.float32


@pytest.mark.slow
def test_batches_reach_the_model_normalised_and_in_its_memory_format(tiny_data, tmp_path):
    seen: list[torch.Tensor] = []
    seen_val: list[torch.Tensor] = []

    class Recording(CellClassifier):
        def training_step(self, batch, batch_idx):
            seen.append(batch[0])
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch, batch_idx):
            seen_val.append(batch[0])
            return super().validation_step(batch, batch_idx)

    def run(dm):
        model, _ = create_model("mobilenet_v2", num_classes=6, pretrained=False)
        module = Recording(model, card=dm.card, optim=OptimConfig(), channels_last=True)
        L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0, accelerator="cpu",
                  logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False).fit(module, datamodule=dm)

    cached = _datamodule(tiny_data, tmp_path, cache="on", channels_last=True)
    run(cached)
    assert len(seen) == 2 and all(x.dtype == torch.float32 and x.shape == (8, 3, 32, 32) for x in seen)
    assert float(seen[0].min()) < 0 < float(seen[0].max())  # normalised around the mean
    # Validation batches: normalised, not augmented.
    val_images, _, _ = next(iter(cached.val_dataloader()))
    assert cached.normalize_batch is not None
    assert len(seen_val) == 1 and torch.allclose(seen_val[0], cached.normalize_batch(val_images), atol=1e-6)
    # Cached or read from files, every batch reaches the model in its memory format.
    run(_datamodule(tiny_data, tmp_path, cache="off", channels_last=True))
    assert len(seen) == 4 and len(seen_val) == 2
    assert all(x.is_contiguous(memory_format=torch.channels_last) for x in seen + seen_val)


def test_workers_by_default_only_for_image_by_image_work_on_cpu(tiny_data, tmp_path):
    half = max(0, min(8, (os.cpu_count() or 1) // 2))

    def workers(**kw):
        dm = _datamodule(tiny_data, tmp_path, **kw)
        return dm.train_dataloader().num_workers, dm.val_dataloader().num_workers

    assert workers(cache="on", workers=None) == (0, 0)  # slicing the cache needs no process
    assert workers(cache="on", workers=None, augment=Augment(randaugment_ops=1)) == (half, 0)
    assert workers(cache="off", workers=None) == (half, half)
    assert workers(cache="on", workers=1) == (1, 1)


def test_class_weights_and_weighted_sampler_balance_the_classes(tmp_path):
    assert class_weights([0, 0, 0, 1], 3).tolist() == pytest.approx([4 / 9, 4 / 3, 0.0])
    root = tmp_path / "imb"
    class_tree(root / "train", {"common": 30, "rare": 3})
    class_tree(root / "val", {"common": 2, "rare": 2})
    torch.manual_seed(0)
    dm = _datamodule(root, tmp_path, size=16, batch_size=11, balance="sampler")
    assert dm.class_weights().tolist() == pytest.approx([33 / 60, 33 / 6])
    loader = dm.train_dataloader()
    drawn = []
    for epoch in range(30):
        loader.sampler.set_epoch(epoch)  # a new draw each epoch, as Lightning sets it
        drawn += [labels for _, labels, _ in loader]
    drawn = torch.cat(drawn)
    rare_fraction = float((drawn == 1).float().mean())
    assert 0.4 < rare_fraction < 0.6  # 3 of 33 images, but half of the draws


_NO_AUGMENT = {"hflip": False, "vflip": False, "rot90": False, "rotation": 0, "crop_scale": 1.0}


# The pixels a run's model sees, through the run's own setup (``prepare``).
@pytest.mark.parametrize("cache", ["on", "off"])
def test_masked_pixels_reach_the_model_as_zero(tiny_data, tmp_path, cache):
    masks = tmp_path / "masks"
    for split in discover(tiny_data).splits.values():
        left_half_masks(tiny_data, split, masks)
    run = prepare(quick_config(tiny_data, tmp_path, mask_dir=str(masks), cache=cache, augment=_NO_AUGMENT))
    run.datamodule.prepare_data()
    run.datamodule.setup("fit")
    for loader in (run.datamodule.train_dataloader(), run.datamodule.val_dataloader()):
        images = next(iter(loader))[0]
        if run.datamodule.augment_batch is not None:  # cached: normalised on the device
            images = run.datamodule.augment_batch(images)
        mean, std = torch.tensor(run.card.mean)[:, None, None], torch.tensor(run.card.std)[:, None, None]
        pixels = images * std + mean  # back to 0..1, before normalisation
        assert float(pixels[..., 16:].abs().max()) < 1e-5 and float(pixels[..., :16].max()) > 0.1


def test_intensity_dataset_uses_the_training_sets_own_statistics(tmp_path):
    root = tmp_path / "d"
    for cls, values in {"a": (10, 50), "b": (200, 250)}.items():  # two constant images per class in train
        for split in ("train", "val"):
            (root / split / cls).mkdir(parents=True)
        for i, v in enumerate(values):
            Image.new("L", (8, 8), v).save(root / "train" / cls / f"{i}.png")
        Image.new("L", (8, 8), values[0] + 1).save(root / "val" / cls / "0.png")
    run = prepare(quick_config(root, tmp_path, intensity="dataset", image_size=8))
    pixels = np.repeat(np.array([10, 50, 200, 250]) / 255, 64)  # every training pixel, one channel
    assert run.card.mean == pytest.approx([pixels.mean()] * 3)
    assert run.card.std == pytest.approx([pixels.std(ddof=1)] * 3, rel=1e-5)
    assert run.datamodule.normalize_batch is not None
    assert torch.allclose(run.datamodule.normalize_batch.mean.flatten(), torch.tensor(run.card.mean) * 255)
