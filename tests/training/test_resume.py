"""Never lose work: a resumed run equals the uninterrupted one bit for bit, whether it stopped at an epoch's end, in
the middle of one, or was killed with SIGKILL at a random moment; a failed save keeps the previous checkpoint."""

import errno
import itertools
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from celltune.config.flags import config_flags_of
from celltune.config.recipes import load_config
from celltune.errors import WriteError
from celltune.models.checkpoint import BEST, read_checkpoint
from celltune.training.callbacks import LAST
from celltune.training.fit import fit
from celltune.training.module import CellClassifier

from conftest import history, quick_config

pytestmark = pytest.mark.slow

# Every source of randomness on: batch augmentation (or per-image transforms with RandAugment), Mixup/CutMix, dropout.
# 36 training images in batches of 8: 4 steps an epoch (the last 4 images dropped), 8 steps in all.
_RANDOM = dict(epochs=2, batch_size=8, max_steps_per_epoch=None, label_smoothing=0.1,
               augment={"mixup": 0.4, "cutmix": 0.4, "color_jitter": 0.2, "random_erasing": 0.3})
_PER_IMAGE = {"cache": "off", "augment": {**_RANDOM["augment"], "randaugment_ops": 2}}


def _config(data, out, **options):
    return quick_config(data, out, **{**_RANDOM, "cache": "on", **options})


@pytest.fixture(scope="module")
def references(tiny_data, tmp_path_factory):
    """The uninterrupted runs, batch-augmented from the cache and per image from the files. When checkpoints are
    written changes nothing in training, so every resume below compares with one of these."""
    out = tmp_path_factory.mktemp("reference")
    return {"cached": fit(_config(tiny_data, out / "cached")), "per_image": fit(_config(tiny_data, out / "files",
                                                                                        **_PER_IMAGE))}


def _final_weights(run):
    return torch.load(run / LAST, weights_only=False)["state_dict"]


def _same(a, b) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]


def _columns(run, skip=("seconds",)):
    return [{k: v for k, v in row.items() if k not in skip} for row in history(run)]


def _crash_at(monkeypatch, step: int) -> None:
    original = CellClassifier.training_step

    def crash(self, batch, batch_idx):
        if self.global_step == step:
            raise RuntimeError("power cut")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(CellClassifier, "training_step", crash)


@pytest.mark.parametrize(("kind", "options", "stop_at", "saved_at"), [
    ("cached", {}, 4, 4),  # the first step of epoch 2: resumed from the end of epoch 1
    ("cached", {"checkpoint_every": "0.001s"}, 6, 6),  # mid-epoch: from the checkpoint after step 6 (0-based 5)
    ("per_image", {**_PER_IMAGE, "checkpoint_every": "0.001s"}, 2, 2),
])
def test_a_resumed_run_equals_the_uninterrupted_one_bit_for_bit(tiny_data, tmp_path, monkeypatch, references, kind,
                                                                 options, stop_at, saved_at):
    config = _config(tiny_data, tmp_path, **options)
    _crash_at(monkeypatch, stop_at)
    with pytest.raises(RuntimeError, match="power cut"):
        fit(config)
    monkeypatch.undo()
    interrupted = tmp_path / "t"
    assert torch.load(interrupted / LAST, weights_only=False)["global_step"] == saved_at  # where the work was saved
    resumed = fit(load_config(interrupted / "config.yaml"), resume=interrupted)
    straight = references[kind]
    _same(_final_weights(straight), _final_weights(resumed))
    assert _columns(resumed) == _columns(straight)  # losses, accuracies, images counted: the same numbers
    _same(read_checkpoint(straight)["state_dict"], read_checkpoint(resumed)["state_dict"])


@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_at_a_random_moment_then_resume_gives_the_same_weights(tiny_data, tmp_path, references, seed):
    out = tmp_path / "killed"
    config = _config(tiny_data, out, checkpoint_every="0.15s")
    command = [sys.executable, "-m", "celltune", "-q", "train", *config_flags_of(config)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    victim = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rng, run, seen, deadline = random.Random(seed), out / "t", 0, time.time() + 120
    wanted = rng.randint(1, 4)  # kill after this many checkpoints, a random fraction of a second later
    last = None
    while time.time() < deadline and victim.poll() is None:
        stamp = (run / LAST).stat().st_mtime_ns if (run / LAST).is_file() else None
        if stamp is not None and stamp != last:
            seen, last = seen + 1, stamp
            if seen == wanted:
                time.sleep(rng.uniform(0, 0.3))
                victim.send_signal(signal.SIGKILL)
                break
        time.sleep(0.01)
    assert victim.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    fit(load_config(run / "config.yaml"), resume=run)  # as `celltune train --resume RUN` does (test_cli)
    _same(_final_weights(references["cached"]), _final_weights(run))
    assert _columns(run) == _columns(references["cached"])


def test_a_failed_save_keeps_the_previous_best_checkpoint(tiny_data, tmp_path, monkeypatch):
    import celltune.models.checkpoint as checkpoint

    real_save = checkpoint.torch.save
    saves = []

    def disk_full(obj, path, *args, **kwargs):
        if getattr(path, "name", "") == "best.partial":
            saves.append(path)
            if len(saves) == 2:  # the second best.pt: half written, then the disk is full
                path.write_bytes(b"half a checkpoint")
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    # A new best every epoch (the score is forced to rise), so best.pt is written again after epoch 1.
    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    scores = itertools.count(1)
    monkeypatch.setattr("celltune.metrics.results.ClassificationResult.score", property(lambda self: next(scores)))
    with pytest.raises(WriteError, match=r"No space left on device.*previous one is kept"):
        fit(quick_config(tiny_data, tmp_path, epochs=3, max_steps_per_epoch=1))
    run = tmp_path / "t"
    assert read_checkpoint(run / BEST)["epoch"] == 0  # the first epoch's, whole
    assert not (run / "best.partial").exists()
