"""How celltune's costs grow with the data: ``check``, the image cache, a training epoch and ``predict`` at N = 10k,
30k, 100k and 300k generated cells, with the fitted exponent k of time ~ N^k.

    python benchmarks/scale.py [--sizes 10000 30000 100000 300000] [--out runs/scale] [--steps 60]

The cells are the synthetic module's six HEp-2-like patterns (``celltune.data.synthetic.draw_cell``), one in four at 96
px and the others at 64 px, drawn once into ``OUT/pool`` by worker processes (seeded per chunk of 1,000, so the same
whatever the number of workers) and hard-linked into one class-folder tree per N (``OUT/nN``), each holding the first N.

Each stage runs in a fresh process and reports its wall time and peak resident memory (the main process, and the
largest of its workers):

- ``check``: ``celltune check OUT/nN --json``, every finding included (near-duplicates too).
- ``cache``: the decoded uint8 cache of the N images at 64 px (``celltune.data.cache.build_cache``), built from nothing.
- ``epoch``: ``--steps`` training steps of mobilenet_v2 at 64 px, batch 64, from the cache through the DataModule
  ``celltune train`` builds, against the same steps on random batches of the cache already in memory (the model-only
  limit), in turns (who goes first alternates) for three rounds in one process; the table gives the median of the
  rounds' ratios, and an epoch's time as N / (images/s).
- ``predict``: ``celltune predict RUN OUT/nN --output preds.csv`` with a checkpoint trained for two steps.

Results are appended to ``OUT/results.jsonl``; ``--table`` prints the README's growth table from it.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

CHUNK = 1000


def _cell(pool: Path, i: int) -> tuple[str, Path]:
    """Cell i's pattern and file: the patterns take turns."""
    from celltune.data.synthetic import CLASSES

    pattern = CLASSES[i % len(CLASSES)]
    return pattern, pool / pattern / f"cell{i:07d}.png"


def _draw_chunk(args: tuple[Path, int, int]) -> int:
    from PIL import Image

    from celltune.data.synthetic import draw_cell

    pool, chunk, seed = args
    rng = np.random.default_rng([seed, chunk])
    indices = range(chunk * CHUNK, (chunk + 1) * CHUNK)
    if all(_cell(pool, i)[1].is_file() for i in indices):
        return 0
    written = 0
    for i in indices:
        pattern, path = _cell(pool, i)
        image = draw_cell(pattern, size=96 if i % 4 == 3 else 64, rng=rng)  # drawn even if on disk: same rng path
        if not path.is_file():
            tmp = path.with_suffix(".part")
            Image.fromarray(image).save(tmp, format="PNG")
            tmp.replace(path)
            written += 1
    return written


def generate(out: Path, largest: int, *, seed: int = 0, workers: int = 2) -> Path:
    """OUT/pool with the first ``largest`` cells (rounded up to whole chunks), drawn where missing."""
    from celltune.data.synthetic import CLASSES

    pool = out / "pool"
    for pattern in CLASSES:
        (pool / pattern).mkdir(parents=True, exist_ok=True)
    chunks = -(-largest // CHUNK)
    start = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as ex:
        for k, written in enumerate(ex.map(_draw_chunk, [(pool, c, seed) for c in range(chunks)]), 1):
            if written:
                print(f"pool: chunk {k}/{chunks} ({time.perf_counter() - start:.0f} s)", flush=True)
    return pool


def subset(out: Path, pool: Path, n: int) -> Path:
    """OUT/nN: hard links to the first n cells of the pool, in class folders."""
    root, complete = out / f"n{n}", out / f"n{n}.complete"
    if complete.is_file():
        return root
    for cls in sorted(p.name for p in pool.iterdir() if p.is_dir()):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for path in (pool / cls).iterdir():
            index = int(re.sub(r"\D", "", path.stem))
            if index < n and path.suffix == ".png" and not (root / cls / path.name).exists():
                os.link(path, root / cls / path.name)
    complete.write_text("")
    return root


def _usage(seconds: float, **extra) -> dict:
    import resource

    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(self_kb / 1024), "peak_worker_rss_mb":
            round(children_kb / 1024), **extra}


def stage_check(root: Path, out: Path) -> dict:
    from celltune.cli import main

    start = time.perf_counter()
    code = main(["-q", "check", str(root), "--json", str(out / f"check-{root.name}.json")])
    seconds = time.perf_counter() - start
    findings = json.loads((out / f"check-{root.name}.json").read_text())
    findings = findings["findings"] if isinstance(findings, dict) else findings
    return _usage(seconds, exit_code=code, findings={f["code"]: len(f.get("items") or []) for f in findings})


def _samples(root: Path):
    from celltune.data.discovery import discover_pool

    return discover_pool(root)


def stage_cache(root: Path, out: Path, size: int) -> dict:
    import shutil

    from celltune.data.cache import build_cache

    found = _samples(root)
    cache_dir = out / "cache" / root.name
    shutil.rmtree(cache_dir, ignore_errors=True)  # built from nothing
    start = time.perf_counter()
    cache = build_cache(found.samples, size=size, channels=None, intensity="scale", cache_dir=cache_dir)
    seconds = time.perf_counter() - start
    return _usage(seconds, shards=len(cache.shards), gigabytes=round(sum(s.stat().st_size for s in cache.shards) / 1e9,
                                                                       2))


def stage_epoch(root: Path, out: Path, size: int, steps: int, rounds: int = 3, warmup: int = 3) -> dict:
    """``steps`` training steps from the cache through the DataModule and Trainer ``fit`` uses, then (or first: the
    order alternates) the same steps on batches already in memory (the model-only limit), ``rounds`` times in this
    one process; this machine drifts between minutes, so each round gives a ratio and the median counts."""
    import statistics

    import lightning as L
    import torch
    from throughput import _Clock, plain_train

    from celltune.config import config_from_dict
    from celltune.data.dataset import CachedDataset
    from celltune.data.samples import LabelledSplits
    from celltune.models.checkpoint import ModelCard
    from celltune.models.factory import create_model
    from celltune.training.datamodule import CellDataModule
    from celltune.training.module import CellClassifier
    from celltune.training.runtime import RunProgressBar, resolve_hardware

    torch.manual_seed(0)
    found = _samples(root)
    config = config_from_dict({"data": str(root), "model": "mobilenet_v2", "image_size": size, "batch_size": 64,
                               "optimizer": "adamw", "lr": 1e-3, "scheduler": "none", "cache": "on",
                               "cache_dir": str(out / "cache" / root.name)})
    model, prep = create_model("mobilenet_v2", num_classes=len(found.class_names), pretrained=True)
    card = ModelCard(model_name="mobilenet_v2", class_names=found.class_names, mean=list(prep.mean),
                     std=list(prep.std), image_size=size)
    channels_last = resolve_hardware(config.hardware).channels_last
    splits = LabelledSplits(found.class_names, {"train": found.samples, "val": []})
    datamodule = CellDataModule(splits, data=config.data, augment=config.augment, card=card, batch_size=64,
                                num_workers=config.hardware.num_workers, accelerator="cpu", channels_last=channels_last)
    start = time.perf_counter()
    datamodule.prepare_data()  # the cache stage built it: a hit
    cached = CachedDataset(datamodule._cache("train"), found.samples)
    rng = np.random.default_rng(0)
    batches = []  # random images from the whole cache, decoded and normalised in memory
    for _ in range(warmup + steps):
        index = rng.choice(len(found.samples), 64, replace=False)
        x = datamodule.normalize_batch(torch.stack([cached[int(i)][0] for i in index]))  # type: ignore[misc]
        batches.append((x.contiguous(memory_format=torch.channels_last) if channels_last else x,
                        torch.tensor([found.samples[int(i)].label for i in index])))

    def celltune_rate() -> float:
        module = CellClassifier(model, card=card, optim=config.optim, augment=config.augment,
                                channels_last=channels_last)
        clock = _Clock(warmup)
        trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                            callbacks=[clock, RunProgressBar()], enable_model_summary=False, limit_val_batches=0,
                            limit_train_batches=warmup + steps)
        trainer.fit(module, datamodule=datamodule)
        return clock.seen / (clock.end - clock.start)

    def model_only_rate() -> float:
        return plain_train(model.to(memory_format=torch.channels_last) if channels_last else model, batches,
                           warmup=warmup)

    rates = []
    for r in range(rounds):
        if r % 2 == 0:
            c = celltune_rate()
            m = model_only_rate()
        else:
            m = model_only_rate()
            c = celltune_rate()
        rates.append((c, m))
    ratio = statistics.median(c / m for c, m in rates)
    celltune = statistics.median(c for c, _ in rates)
    return _usage(time.perf_counter() - start, images_per_s=round(celltune, 1),
                  model_only_per_s=round(statistics.median(m for _, m in rates), 1), ratio=round(ratio, 3),
                  round_ratios=[round(c / m, 3) for c, m in rates],
                  epoch_seconds=round(len(found.samples) / celltune, 1))


def _model(out: Path, size: int) -> Path:
    """A checkpoint to predict with: two steps of training on the smallest set."""
    from celltune.cli import main

    run = out / "runs" / "predictor"
    if not (run / "best.pt").is_file():
        smallest = min((p for p in out.glob("n*") if p.is_dir()), key=lambda p: int(p.name[1:]))
        main(["-q", "train", "--data", str(smallest), "--model", "mobilenet_v2", "--image-size", str(size), "--epochs",
              "1", "--max-steps-per-epoch", "2", "--out-dir", str(out / "runs"), "--name", "predictor",
              "--cache-dir", str(out / "cache" / "predictor")])
    return run


def stage_predict(root: Path, out: Path, size: int) -> dict:
    from celltune.cli import main

    run = _model(out, size)
    csv = out / f"preds-{root.name}.csv"
    start = time.perf_counter()
    code = main(["-q", "predict", str(run), str(root), "--output", str(csv), "--overwrite", "--tta", "none"])
    seconds = time.perf_counter() - start
    rows = sum(1 for _ in csv.open()) - 1
    return _usage(seconds, exit_code=code, images=rows, images_per_s=round(rows / seconds, 1))


STAGES = ("check", "cache", "epoch", "predict")


def _measure(stage: str, n: int, args: argparse.Namespace) -> dict:
    """One stage in a fresh process, so that peak memory is the stage's own."""
    command = [sys.executable, __file__, "--stage", stage, "--n", str(n), "--out", str(args.out), "--size",
               str(args.size), "--steps", str(args.steps)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{stage} at {n}: failed\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fit_exponent(ns: list[int], seconds: list[float]) -> float:
    """k of seconds ~ N^k, least squares on log-log."""
    return float(np.polyfit(np.log(ns), np.log(seconds), 1)[0])


def table(out: Path) -> str:
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    lines = ["| stage | " + " | ".join(f"{n:,}" for n in sorted({r['n'] for r in rows})) + " | k |",
             "|---|" + "---|" * (len({r['n'] for r in rows}) + 1)]
    for stage in STAGES:
        mine = {r["n"]: r for r in rows if r["stage"] == stage}  # the latest of each N
        if not mine:
            continue
        ns = sorted(mine)
        key = "epoch_seconds" if stage == "epoch" else "seconds"
        cells = []
        for n in ns:
            r = mine[n]
            extra = f", {r['ratio']:.2f}x model-only" if stage == "epoch" else ""
            cells.append(f"{r[key]:,.0f} s, {max(r['peak_rss_mb'], r['peak_worker_rss_mb']):,} MB{extra}")
        k = fit_exponent(ns, [mine[n][key] for n in ns]) if len(ns) > 1 else float("nan")
        lines.append(f"| {stage} | " + " | ".join(cells) + f" | {k:.2f} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000, 300_000])
    p.add_argument("--out", type=Path, default=Path("runs/scale"))
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    p.add_argument("--size", type=int, default=64, help="training image size")
    p.add_argument("--steps", type=int, default=60, help="training steps timed per N (after 3 warm-up steps)")
    p.add_argument("--table", action="store_true", help="print the growth table from OUT/results.jsonl and stop")
    p.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.table:
        print(table(args.out))
        return 0
    if args.stage:  # one measurement, in its own process
        root = args.out / f"n{args.n}"
        run = {"check": lambda: stage_check(root, args.out), "cache": lambda: stage_cache(root, args.out, args.size),
               "epoch": lambda: stage_epoch(root, args.out, args.size, args.steps),
               "predict": lambda: stage_predict(root, args.out, args.size)}[args.stage]
        print(json.dumps(run()))
        return 0
    pool = generate(args.out, max(args.sizes))
    for n in args.sizes:
        subset(args.out, pool, n)
    for n in args.sizes:
        for stage in args.stages:
            result = {"stage": stage, "n": n, "date": time.strftime("%Y-%m-%d %H:%M"), **_measure(stage, n, args)}
            print(json.dumps(result), flush=True)
            with (args.out / "results.jsonl").open("a") as f:
                f.write(json.dumps(result) + "\n")
    print(table(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
