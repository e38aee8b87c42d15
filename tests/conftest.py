from __future__ import annotations

import csv
import os
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import settings
from PIL import Image

from celltune.config import TrainConfig, config_from_dict
from celltune.data.synthetic import make_dataset

SHARED_HEP2 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "hep2_icpr2014"
IN_CI = os.environ.get("CI", "").lower() == "true"
# The README's promise ("Exact and close"): the same image through the same weights gives probabilities within this of
# each other whatever the batch it is in, the thread count or the CPU's instruction set. Bit for bit only where the
# README says so (a resumed predict or training run on the same machine).
PROB_ATOL = 1e-5

# Property tests: 150 examples in the suite; HYPOTHESIS_PROFILE=fuzz for a long search by hand.
settings.register_profile("suite", max_examples=150, deadline=None)
settings.register_profile("fuzz", max_examples=20_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))

# A model that trains in a fraction of a second per step on 32 px images, from random weights; one validation pass
# an epoch and one view at test time (the defaults' weight averaging and flips are tested where they are the point).
QUICK = dict(model="mobilenet_v2", pretrained=False, image_size=32, epochs=2, batch_size=8, max_steps_per_epoch=2,
             num_workers=0, name="t", accelerator="cpu", ema=0.0, tta="none")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests (seconds to a minute each) first, the quick ones after: pytest-xdist hands tests out in this
    order, so the quick ones fill the end and no worker is left alone with a minute-long test while the other idles
    (collected in folder order, the longest test, a search in three processes, came last)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: file order within each part


@pytest.fixture(autouse=True)
def _private_caches(tmp_path_factory, monkeypatch):
    """Each test gets an empty torch hub cache and image cache, so no test reads or writes the user's."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    monkeypatch.setenv("CELLTUNE_CACHE_DIR", str(tmp_path_factory.mktemp("image_cache")))


@pytest.fixture
def scored_by_lr(monkeypatch):
    """A learner whose validation score is set by its learning rate (0.9 at 0.01 and above, else 0.1), so which
    trial of a search is behind does not hang on what 2 steps of a random network learn."""
    from celltune.training.callbacks import RunRecorder

    real = RunRecorder.on_validation_end

    def on_validation_end(self, trainer, module):
        real(self, trainer, module)
        if not trainer.sanity_checking:
            self.best_score = 0.9 if module.optim.lr >= 0.01 else 0.1

    monkeypatch.setattr(RunRecorder, "on_validation_end", on_validation_end)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """train/val/test class folders of 32 px synthetic cells: 6 classes, 6/3/3 images each."""
    return make_dataset(tmp_path_factory.mktemp("tiny") / "cells", per_class=(6, 3, 3), size=32, seed=1)


def quick_config(data: Path | str, out: Path | str, **options) -> TrainConfig:
    """A config for a training test: QUICK, then ``options`` by flag name."""
    return config_from_dict({**QUICK, "data": str(data), "out_dir": str(out), **options}, source="test")


class FakeClock:
    """A ``time.monotonic`` that stands still until a test moves ``now``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open() as f:
        return list(csv.DictReader(f))


def left_half_masks(root: Path, samples, masks_dir: Path) -> None:
    """A 32x32 mask per sample under ``masks_dir``, at the sample's path relative to ``root``, keeping the left
    half of the image only."""
    for s in samples:
        target = masks_dir / s.path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        m = Image.new("L", (32, 32), 0)
        m.paste(255, (0, 0, 16, 32))
        m.save(target)


def png(path: Path, size=(20, 16), value=128, mode="L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)
    return path


def bomb_png(path: Path, width: int = 30_000, height: int = 30_000) -> Path:
    """A PNG that claims width x height but holds no pixel data: a decompression bomb's header, in 45 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def class_tree(root: Path, counts: dict[str, int], size=(16, 16)) -> Path:
    """root/CLASS/i.png with ``counts[CLASS]`` images each, a class's images one grey value apart."""
    for c, (cls, n) in enumerate(counts.items()):
        for i in range(n):
            png(root / cls / f"{i}.png", size=size, value=(40 * c + i) % 256)
    return root


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def require(condition: bool, reason: str) -> None:
    """Skip when ``condition`` is false, except under CI=true, where what the test needs must be there: fail."""
    if not condition:
        if IN_CI:
            pytest.fail(f"CI=true: {reason}; .ci/run installs it")
        pytest.skip(reason)


def _test_model() -> str:
    """timm's small resnet made for tests, where the installed timm has it (releases since 2024), else resnet18."""
    import timm

    return "test_resnet" if "test_resnet" in timm.list_models("test_resnet") else "resnet18"


def random_checkpoint(path: Path, class_names: list[str], *, image_size: int = 32, seed: int = 0, **card) -> Path:
    """A celltune checkpoint of an untrained timm ``test_resnet`` (a resnet of 0.4 M parameters, made for tests:
    exports, packages and their checks take a fraction of resnet18's time): everything prediction needs, no
    training. Its residual paths keep each image's own answer (an untrained mobilenet_v2 answers every image alike),
    and its head is scaled up so the answers are decisive."""
    import torch

    from celltune.models.checkpoint import ModelCard, save_checkpoint
    from celltune.models.factory import create_model

    in_chans = len(card["channels"]) if card.get("channels") else 3
    name = _test_model()
    torch.manual_seed(seed)
    model, _ = create_model(name, num_classes=len(class_names), in_chans=in_chans, pretrained=False)
    with torch.no_grad():
        model.fc.weight.mul_(20.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, model=model.eval(), card=ModelCard(
        model_name=name, class_names=class_names, mean=[0.5] * in_chans, std=[0.25] * in_chans,
        image_size=image_size, in_chans=in_chans, **card))
    return path


def train_only(config: TrainConfig):
    """``fit`` without its last part (scoring the test split, plots, report): the prepared run, trained."""
    from celltune.training.fit import prepare

    run = prepare(config)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    return run


@pytest.fixture(scope="module")
def trained_run(tiny_data, tmp_path_factory) -> Path:
    """A run trained through the command line (a recipe file, then flags over it), for the CLI tests."""
    import yaml

    from celltune.cli import main

    out = tmp_path_factory.mktemp("runs")
    config = out / "recipe.yaml"
    config.write_text(yaml.safe_dump({"model": "mobilenet_v2", "pretrained": False, "epochs": 3, "batch_size": 8,
                                      "image_size": 32, "num_workers": 0, "accelerator": "cpu"}))
    # Flags override the file: 1 epoch, not 3.
    code = main(["-q", "train", "--recipe", str(config), "--data", str(tiny_data), "--epochs", "1",
                 "--max-steps-per-epoch", "2", "--out-dir", str(out), "--name", "cli"])
    assert code == 0
    return out / "cli"
