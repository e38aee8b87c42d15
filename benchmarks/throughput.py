"""Throughput: celltune vs a timm train.py / inference.py-style loop vs the model-only limit, side by side in one run.

    python benchmarks/throughput.py [--data ../shared/data/hep2_icpr2014] [--images 1024] [--repeats 8]

All use the same model (ImageNet mobilenet_v2), image size, batch size and a seeded sample of HEp-2 training images,
each with its own DataLoader workers: timm ``--workers`` (default 1, as it decodes image by image), celltune as ``fit``
picks them (``--celltune-workers`` overrides; on CPU none for cached batches):

- celltune: the DataModule ``fit`` builds (``CellDataModule``: decoded uint8 cache, uint8 batches augmented and
  normalised whole by ``BatchAugment`` after the transfer) feeding ``CellClassifier`` on a Lightning ``Trainer`` (its
  progress bar on), in the memory format ``fit`` picks (channels_last by default); inference through
  ``predict_probs`` on the validation loader ``fit`` uses (uint8 batches, normalised after the transfer).
- timm-style: PIL decoding per image, timm's ``create_transform`` (RandomResizedCrop, flips; no colour jitter) and
  the plain loop of timm's ``train.py`` (forward, loss, zero_grad, backward, step); ``inference.py``'s eval loop. Once
  as timm runs by default (contiguous tensors), once with its ``--channels-last`` option.
- model-only: the same forward+backward+step (or forward) on batches already in memory, no data pipeline at all, in
  celltune's memory format: what celltune could reach with a free data pipeline and no framework.

Images/s are counted after ``--warmup`` batches. The training loops, then the inference ones, take turns ``--repeats``
times (who goes first rotates), as this machine's speed drifts by several percent between minutes: each round gives
the ratios of celltune to the others, and the median over the rounds is reported (with the median images/s of each).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from PIL import Image
from timm.data import create_transform

from celltune.config import TrainConfig, config_from_dict
from celltune.data.discovery import discover
from celltune.data.samples import LabelledSplits
from celltune.models.checkpoint import ModelCard
from celltune.models.factory import create_model
from celltune.predict.predictor import predict_probs
from celltune.training.datamodule import CellDataModule
from celltune.training.module import CellClassifier
from celltune.training.runtime import RunProgressBar, resolve_hardware

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "hep2_icpr2014"


class PILFolder(torch.utils.data.Dataset):
    """What timm's ImageDataset does per item: open with PIL, convert to RGB, transform."""

    def __init__(self, samples, transform):
        self.samples, self.transform = samples, transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        s = self.samples[i]
        with Image.open(s.path) as img:
            return self.transform(img.convert("RGB")), s.label


def _rate(images: int, seconds: float) -> float:
    return images / seconds if seconds > 0 else float("nan")


def plain_train(model, batches, *, warmup: int) -> float:
    """timm train.py's loop (forward, loss, zero_grad, backward, step) over any iterable of (images, labels)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    start, seen = 0.0, 0
    for step, (x, y) in enumerate(batches):
        if step == warmup:
            start, seen = time.perf_counter(), 0
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += len(y)
    return _rate(seen, time.perf_counter() - start)


@torch.inference_mode()
def plain_infer(model, batches, *, warmup: int) -> float:
    """timm inference.py's loop: forward, softmax, top-5."""
    model.eval()
    start, seen = 0.0, 0
    for step, (x, _) in enumerate(batches):
        if step == warmup:
            start, seen = time.perf_counter(), 0
        model(x).softmax(-1).topk(5)
        seen += len(x)
    return _rate(seen, time.perf_counter() - start)


class _Clock(L.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.seen, self.end = warmup, 0.0, 0, 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if batch_idx >= self.warmup:
            self.seen += len(batch[1])
            self.end = time.perf_counter()


def celltune_train(model, card, config: TrainConfig, datamodule: CellDataModule, *, warmup, channels_last) -> float:
    module = CellClassifier(model, card=card, optim=config.optim, augment=config.augment, channels_last=channels_last)
    clock = _Clock(warmup)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        callbacks=[clock, RunProgressBar()], enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule)
    return _rate(clock.seen, clock.end - clock.start)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--model", default="mobilenet_v2")
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=1, help="timm's DataLoader workers")
    p.add_argument("--celltune-workers", type=int, default=None, help="default: what fit picks")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=8)
    args = p.parse_args()
    if not Path(args.data).is_dir():
        print(f"no HEp-2 data at {args.data}; pass --data", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    found = discover(args.data)
    # A seeded sample: the first ids of the ICPR set are all one class, on which the loss collapses to ~0.
    samples = random.Random(0).sample(found.splits["train"], min(args.images, len(found.splits["train"])))
    size, bs, workers, warmup = args.image_size, args.batch_size, args.workers, args.warmup
    model, prep = create_model(args.model, num_classes=len(found.class_names), pretrained=True)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    card = ModelCard(model_name=args.model, class_names=found.class_names, mean=list(prep.mean), std=list(prep.std),
                     image_size=size)
    timm_train_tf = create_transform(input_size=size, is_training=True, scale=(0.8, 1.0), hflip=0.5, vflip=0.5,
                                     color_jitter=None, interpolation="bilinear", mean=prep.mean, std=prep.std)
    timm_eval_tf = create_transform(input_size=size, is_training=False, crop_pct=1.0, interpolation="bilinear",
                                    mean=prep.mean, std=prep.std)
    with tempfile.TemporaryDirectory() as tmp:
        config = config_from_dict({"data": args.data, "model": args.model, "image_size": size, "batch_size": bs,
                                   "optimizer": "adamw", "lr": 1e-3, "scheduler": "none",
                                   "num_workers": args.celltune_workers, "cache": "on", "cache_dir": f"{tmp}/cache",
                                   "augment": {"hflip": True, "vflip": True, "rotation": 0, "crop_scale": 0.8}})
        subset = LabelledSplits(found.class_names, {"train": samples, "val": samples})
        channels_last = resolve_hardware(config.hardware).channels_last  # as fit() runs the model
        t0 = time.perf_counter()
        datamodule = CellDataModule(subset, data=config.data, augment=config.augment, card=card, batch_size=bs,
                                    num_workers=config.hardware.num_workers, accelerator="cpu",
                                    channels_last=channels_last)
        datamodule.prepare_data()  # the cache is built here
        datamodule.setup("fit")
        cache_seconds = time.perf_counter() - t0
        # One loader for every round, as fit() keeps its loader (and any persistent workers) for all epochs.
        ct_train, ct_eval = datamodule.train_dataloader(), datamodule.val_dataloader()
        datamodule.train_dataloader = lambda: ct_train  # type: ignore[method-assign]
        # The model-only limit: every batch already decoded and normalised, in memory.
        normalize = datamodule.normalize_batch
        assert normalize is not None  # the cache is on
        batches = [(normalize(images), labels) for images, labels, _ in ct_eval][: len(samples) // bs]

        def loader(dataset, shuffle):
            return torch.utils.data.DataLoader(dataset, batch_size=bs, shuffle=shuffle, drop_last=True,
                                               num_workers=workers, persistent_workers=workers > 0)

        train_timm_set = PILFolder(samples, timm_train_tf)
        eval_timm_set = PILFolder(samples, timm_eval_tf)

        def fresh(memory_format: torch.memory_format):
            model.load_state_dict(initial)
            return model.to(memory_format=memory_format)

        def in_format(memory_format, batches):
            return ((x.contiguous(memory_format=memory_format), y) for x, y in batches)

        def celltune_infer() -> float:
            # Timed as plain_infer is: from the moment batch ``warmup`` is in hand to the end of the pass.
            marks: list[float] = []

            def marked(batches):
                for i, batch in enumerate(batches):
                    if i == warmup:
                        marks.append(time.perf_counter())
                    yield batch

            predict_probs(model, marked(ct_eval), device=torch.device("cpu"), prepare=normalize)
            return _rate(len(samples) - warmup * bs, time.perf_counter() - marks[0])

        cl, contiguous = torch.channels_last, torch.contiguous_format
        limit_format = cl if channels_last else contiguous
        loops: dict[str, Callable[[], float]] = {
            "train_model_only": lambda: plain_train(fresh(limit_format), in_format(limit_format, batches),
                                                    warmup=warmup),
            "train_timm": lambda: plain_train(fresh(contiguous), loader(train_timm_set, True), warmup=warmup),
            "train_timm_channels_last": lambda: plain_train(fresh(cl), in_format(cl, loader(train_timm_set, True)),
                                                            warmup=warmup),
            "train_celltune": lambda: celltune_train(fresh(contiguous), card, config, datamodule, warmup=warmup,
                                                     channels_last=channels_last),
            "infer_model_only": lambda: plain_infer(fresh(limit_format), in_format(limit_format, batches),
                                                    warmup=warmup),
            "infer_timm": lambda: plain_infer(fresh(contiguous), loader(eval_timm_set, False), warmup=warmup),
            "infer_timm_channels_last": lambda: plain_infer(fresh(cl), in_format(cl, loader(eval_timm_set, False)),
                                                            warmup=warmup),
            "infer_celltune": lambda: (fresh(contiguous), celltune_infer())[1],
        }
        runs: dict[str, list[float]] = {k: [] for k in loops}
        for r in range(args.repeats):
            for task in ("train", "infer"):
                # Take turns, so a drift of the machine's speed hits all alike; rotate who goes first. celltune runs
                # next to the model-only limit, its closest comparison, in three rotations of four.
                names = [f"{task}_{n}" for n in ("model_only", "celltune", "timm", "timm_channels_last")]
                for name in names[r % 4:] + names[: r % 4]:
                    runs[name].append(loops[name]())
        results = {k: statistics.median(v) for k, v in runs.items()}

    def ratio(a: str, b: str) -> float:
        return round(statistics.median(x / y for x, y in zip(runs[a], runs[b], strict=True)), 3)

    table = {
        "model": args.model, "image_size": size, "batch_size": bs, "timm_workers": workers,
        "celltune_workers": [ct_train.num_workers, ct_eval.num_workers], "images": len(samples),
        "threads": torch.get_num_threads(), "cache_build_seconds": round(cache_seconds, 1),
        **{k: round(v, 1) for k, v in results.items()},
        **{f"{task}_celltune_vs_{other}": ratio(f"{task}_celltune", f"{task}_{other}")
           for task in ("train", "infer") for other in ("timm", "timm_channels_last", "model_only")},
    }
    table["all_runs"] = {k: [round(x, 1) for x in v] for k, v in runs.items()}
    print(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
