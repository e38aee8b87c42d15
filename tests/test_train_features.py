"""Masks, class balance, early stopping, resume, recipes and the HTML report."""

import csv
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import lightning as L
import pytest
import torch
from PIL import Image

from celltune.checkpoint import ModelCard
from celltune.config import TrainConfig, load_config
from celltune.data import DataError, discover
from celltune.dataset import mask_paths
from celltune.models import create_model
from celltune.train import LAST, CellClassifier, build_loaders, class_weights, fit
from celltune.transforms import Augment

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _config(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), model="mobilenet_v2", pretrained=False, image_size=32, epochs=2, batch_size=8,
                max_steps_per_epoch=2, num_workers=0, out_dir=str(out), name="t", accelerator="cpu")
    return TrainConfig(**{**base, **kw})


def _card(found, size: int) -> ModelCard:
    return ModelCard(model_name="mobilenet_v2", class_names=found.class_names, mean=[0.5] * 3, std=[0.25] * 3,
                     image_size=size)


def _history(run: Path) -> list[dict]:
    return list(csv.DictReader((run / "history.csv").open()))


def test_masks_black_out_background_before_augmentation(tiny_data, tmp_path):
    masks = tmp_path / "masks"
    found = discover(tiny_data)
    for split in found.splits.values():
        for s in split:
            target = masks / s.path.relative_to(tiny_data)
            target.parent.mkdir(parents=True, exist_ok=True)
            m = Image.new("L", (32, 32), 0)
            m.paste(255, (0, 0, 16, 32))  # keep the left half only
            m.save(target)
    paths = mask_paths(found.splits["train"], data_root=tiny_data, mask_dir=masks)
    train_loader = build_loaders(_config(tiny_data, tmp_path, mask_dir=str(masks), batch_size=4,
                                         augment=Augment(hflip=False, vflip=False, rotation=0, crop_scale=1.0)),
                                 found, _card(found, 32)).train
    image, _ = train_loader.dataset[0]
    assert paths[0].is_file()
    assert float(image[:, :, 16:].abs().max()) == 0.0 and float(image[:, :, :16].max()) > 0
    run = fit(_config(tiny_data, tmp_path, mask_dir=str(masks), epochs=1, max_steps_per_epoch=1))
    assert (run / "best.pt").is_file()
    (masks / "train" / "golgi").rename(masks / "train" / "gone")
    with pytest.raises(DataError, match="no mask at"):
        mask_paths(found.splits["train"], data_root=tiny_data, mask_dir=masks)


def _imbalanced(root: Path) -> Path:
    for split, counts in (("train", {"common": 30, "rare": 3}), ("val", {"common": 2, "rare": 2})):
        for cls, n in counts.items():
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("L", (16, 16), 40 if cls == "common" else 200).save(root / split / cls / f"{i}.png")
    return root


def test_cached_training_batches_are_augmented_whole_on_the_device(tiny_data, tmp_path):
    found = discover(tiny_data)
    card = _card(found, 32)
    loaders = build_loaders(_config(tiny_data, tmp_path, cache="on", cache_dir=str(tmp_path / "cache")), found, card)
    images, _ = next(iter(loaders.train))
    assert images.dtype == torch.uint8 and loaders.augment_batch is not None  # augmented after the transfer
    val_images, _, _ = next(iter(loaders.val))
    assert val_images.dtype == torch.uint8 and loaders.normalize_batch is not None  # normalised after the transfer
    # RandAugment has no batch form: the workers augment image by image, still in uint8; erasing and normalisation
    # are left for the batch.
    randaugment = Augment(randaugment_ops=1, random_erasing=1.0)
    other = build_loaders(_config(tiny_data, tmp_path, cache="on", cache_dir=str(tmp_path / "cache"),
                                  augment=randaugment), found, card)
    images, _ = next(iter(other.train))
    assert images.dtype == torch.uint8 and other.augment_batch is not None
    erased = other.augment_batch(torch.full((8, 3, 32, 32), 255, dtype=torch.uint8))
    assert all(bool((x == 0).all(0).any()) for x in erased)  # every image has a rectangle at the mean
    # Uncached data has no uint8 batches: transformed and normalised image by image.
    uncached = build_loaders(_config(tiny_data, tmp_path, cache="off"), found, card)
    images, _ = next(iter(uncached.train))
    assert uncached.augment_batch is None and uncached.normalize_batch is None and images.dtype == torch.float32

    seen: list[torch.Tensor] = []
    seen_val: list[torch.Tensor] = []

    class Recording(CellClassifier):
        def training_step(self, batch, batch_idx):
            seen.append(batch[0])
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch, batch_idx):
            seen_val.append(batch[0])
            return super().validation_step(batch, batch_idx)

    config = _config(tiny_data, tmp_path, cache="on", cache_dir=str(tmp_path / "cache"))
    model, _ = create_model("mobilenet_v2", num_classes=6, pretrained=False)
    module = Recording(model, card=card, config=config, run_dir=tmp_path, augment_batch=loaders.augment_batch,
                       normalize_batch=loaders.normalize_batch, channels_last=True)

    def run(module, loaders):
        L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0, accelerator="cpu",
                  logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False).fit(module, loaders.train, loaders.val)

    run(module, loaders)
    assert len(seen) == 2 and all(x.dtype == torch.float32 and x.shape == (8, 3, 32, 32) for x in seen)
    assert float(seen[0].min()) < 0 < float(seen[0].max())  # normalised around the mean
    # Validation batches: normalised, not augmented.
    val_images, _, _ = next(iter(loaders.val))
    assert len(seen_val) == 1 and torch.allclose(seen_val[0], loaders.normalize_batch(val_images), atol=1e-6)
    # Cached or read from files, every batch reaches the model in its memory format.
    module = Recording(model, card=card, config=config, run_dir=tmp_path, channels_last=True)
    run(module, uncached)
    assert len(seen) == 4 and len(seen_val) == 2
    assert all(x.is_contiguous(memory_format=torch.channels_last) for x in seen + seen_val)


def test_workers_by_default_only_for_image_by_image_work_on_cpu(tiny_data, tmp_path):
    found = discover(tiny_data)
    card = _card(found, 32)
    half = max(0, min(8, (os.cpu_count() or 1) // 2))
    cached = build_loaders(_config(tiny_data, tmp_path, cache="on", cache_dir=str(tmp_path / "c"), num_workers=None),
                           found, card)
    assert (cached.train.num_workers, cached.val.num_workers) == (0, 0)  # slicing the cache needs no process
    randaugment = build_loaders(_config(tiny_data, tmp_path, cache="on", cache_dir=str(tmp_path / "c"),
                                        num_workers=None, augment=Augment(randaugment_ops=1)), found, card)
    assert (randaugment.train.num_workers, randaugment.val.num_workers) == (half, 0)
    files = build_loaders(_config(tiny_data, tmp_path, cache="off", num_workers=None), found, card)
    assert (files.train.num_workers, files.val.num_workers) == (half, half)
    chosen = build_loaders(_config(tiny_data, tmp_path, cache="on", cache_dir=str(tmp_path / "c"), num_workers=1),
                           found, card)
    assert (chosen.train.num_workers, chosen.val.num_workers) == (1, 1)


def test_class_weights_and_weighted_sampler_balance_the_classes(tmp_path):
    assert class_weights([0, 0, 0, 1], 3).tolist() == pytest.approx([4 / 9, 4 / 3, 0.0])
    data = _imbalanced(tmp_path / "imb")
    torch.manual_seed(0)
    found = discover(data)
    loader = build_loaders(_config(data, tmp_path, balance="sampler", batch_size=11, image_size=16), found,
                           _card(found, 16)).train
    drawn = torch.cat([labels for _ in range(30) for _, labels in loader])
    rare_fraction = float((drawn == 1).float().mean())
    assert 0.4 < rare_fraction < 0.6  # 3 of 33 images, but half of the draws


def test_class_weighted_loss_and_mixup_train(tmp_path):
    data = _imbalanced(tmp_path / "imb")
    run = fit(_config(data, tmp_path, balance="loss", image_size=16, epochs=1))
    assert (run / "best.pt").is_file()
    run = fit(_config(data, tmp_path, balance="sampler", image_size=16, epochs=1, label_smoothing=0.1,
                      augment=Augment(mixup=0.8, cutmix=1.0, randaugment_ops=2, random_erasing=0.25)))
    assert (run / "best.pt").is_file()
    with pytest.raises(ValueError, match="balance: sampler"):
        fit(_config(data, tmp_path, balance="loss", augment=Augment(mixup=0.8)))


class _Echo(torch.nn.Module):
    """Logits that are the (mixed) images' first pixel row: the test decides what the model predicts."""

    def forward(self, x):  # (B, C, H, W) -> (B, W)
        return x[:, 0, 0, :]


def test_mixup_training_accuracy_counts_the_larger_part_of_each_mix(tiny_data, tmp_path):
    found = discover(tiny_data)
    config = _config(tiny_data, tmp_path, augment=Augment(mixup=0.8), channels_last=False)
    module = CellClassifier(_Echo(), card=_card(found, 6), config=config, run_dir=tmp_path)
    labels = torch.tensor([0, 1, 2, 3])
    # A fixed mix: 30% of each image's own class, 70% of the next one's; the model answers the larger part.
    soft = 0.3 * torch.nn.functional.one_hot(labels, 6) + 0.7 * torch.nn.functional.one_hot((labels + 1) % 6, 6)
    module.mixup = lambda images, targets: (soft.float()[:, None, None, :].expand(4, 3, 6, 6).contiguous(), soft)
    module.training_step([torch.zeros(4, 3, 6, 6), labels], 0)
    _, correct, n = module._train_sums
    assert (correct, n) == (4, 4)


def test_early_stopping_stops_when_val_loss_does_not_improve(tiny_data, tmp_path):
    # lr 0 and a frozen backbone: the validation loss never changes, so patience 1 ends the run after 2 epochs.
    run = fit(_config(tiny_data, tmp_path, epochs=6, lr=0.0, freeze_backbone=True, patience=1, scheduler="none"))
    assert len(_history(run)) == 2
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 2


def test_resume_continues_epochs_optimizer_and_schedule(tiny_data, tmp_path, monkeypatch):
    straight = fit(_config(tiny_data, tmp_path / "a", epochs=3))

    original = CellClassifier.on_train_epoch_start

    def crash_in_second_epoch(self):
        original(self)
        if self.current_epoch == 1:
            raise RuntimeError("power cut")

    monkeypatch.setattr(CellClassifier, "on_train_epoch_start", crash_in_second_epoch)
    with pytest.raises(RuntimeError, match="power cut"):
        fit(_config(tiny_data, tmp_path / "b", epochs=3))
    interrupted = tmp_path / "b" / "t"
    assert len(_history(interrupted)) == 1 and (interrupted / LAST).is_file()
    monkeypatch.setattr(CellClassifier, "on_train_epoch_start", original)

    resumed = fit(load_config(interrupted / "config.yaml"), resume=interrupted)
    assert resumed == interrupted  # same directory, nothing new created
    rows, ref = _history(resumed), _history(straight)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    # The warm-up/cosine schedule continues exactly where it stopped.
    assert [float(r["lr"]) for r in rows] == pytest.approx([float(r["lr"]) for r in ref])
    state = torch.load(resumed / LAST, weights_only=False)
    assert state["epoch"] == 2
    steps = [s["step"] for s in state["optimizer_states"][0]["state"].values()]
    assert all(float(s) == 3 * 2 for s in steps)  # 3 epochs x 2 steps, across the interruption


def test_resume_needs_a_checkpoint(tiny_data, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        fit(_config(tiny_data, tmp_path), resume=tmp_path)


@pytest.mark.parametrize("recipe", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_recipes_load_and_run_one_step(recipe, tiny_data, tmp_path):
    config = load_config(CONFIGS / recipe, {"data": str(tiny_data), "model": "mobilenet_v2", "pretrained": False,
                                            "image_size": 32, "epochs": 1, "max_steps_per_epoch": 1,
                                            "batch_size": 4, "num_workers": 0, "out_dir": str(tmp_path)})
    assert config.model == "mobilenet_v2" and config.epochs == 1
    assert (fit(config) / "best.pt").is_file()


def test_recipe_files_say_what_the_issue_asks():
    alex = load_config(CONFIGS / "alexnet_classic.yaml")
    assert (alex.model, alex.freeze_backbone, alex.optimizer, alex.lr, alex.momentum, alex.batch_size,
            alex.scheduler, alex.plateau_factor, alex.plateau_patience, alex.image_size) == (
        "alexnet", True, "sgd", 0.001, 0.9, 4, "plateau", 0.1, 5, 224)
    modern = load_config(CONFIGS / "timm_modern.yaml")
    a = modern.augment
    assert (modern.optimizer, modern.scheduler, modern.label_smoothing, a.mixup, a.cutmix) == (
        "adamw", "cosine", 0.1, 0.8, 1.0)
    assert a.randaugment_ops > 0 and a.random_erasing > 0 and a.hflip and a.vflip and modern.warmup_epochs > 0
    vgg = load_config(CONFIGS / "vgg16_early_stopping.yaml")
    assert (vgg.model, vgg.early_stop_monitor) == ("vgg16", "val_loss") and vgg.patience


def test_report_html_is_self_contained_and_complete(tiny_data, tmp_path):
    run = fit(_config(tiny_data, tmp_path, epochs=1, tta="flips"))
    page = (run / "report.html").read_text()
    for heading in ("Per class", "Confusion matrix", "Training curves", "Most confident mistakes", "Dataset",
                    "Configuration"):
        assert heading in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing fetched from the network
    images = re.findall(r'src="data:image/png;base64,', page)
    metrics = json.loads((run / "metrics.json").read_text())
    wrong = metrics["num_samples"] - round(metrics["accuracy"] * metrics["num_samples"])
    assert len(images) == 4 + min(wrong, 12)  # 2 confusion matrices, 2 curves, the thumbnails
    assert metrics["tta"] == "flips" and "roc_auc_macro" in metrics


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="Chromium not installed (Debian package chromium)")
def test_report_renders_in_headless_chromium(tiny_data, tmp_path):
    run = fit(_config(tiny_data, tmp_path, epochs=1))
    browser = _chromium()
    assert browser is not None
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([browser, *flags, "--dump-dom", (run / "report.html").as_uri()], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert "Most confident mistakes" in dom and "celltune report" in dom
    # Every inline image decodes: the rendered page reports each image's natural width.
    script = ("<script>window.onload=()=>{document.title=[...document.images].every(i=>i.naturalWidth>0)"
              "?'ALL-IMAGES-OK':'BROKEN'}</script>")
    probe = run / "probe.html"
    probe.write_text((run / "report.html").read_text().replace("</body>", script + "</body>"))
    dom = subprocess.run([browser, *flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert "<title>ALL-IMAGES-OK</title>" in dom
