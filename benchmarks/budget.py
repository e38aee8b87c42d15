"""Side by side, one run per dataset: celltune's defaults (``celltune train --time-budget B``), ``celltune tune
--time-budget B`` and timm ``train.py``'s defaults trained until B runs out, on the suite's datasets
(``benchmarks/suite.py``: the same seeded split for all three, each dataset's groups kept whole).

    python benchmarks/budget.py --budget 10m                       # every dataset in ../shared/data
    python benchmarks/budget.py --budget 5m --datasets herlev_pap7_40px --out-dir /tmp/budget
    python benchmarks/budget.py --table [--out-dir runs/budget]    # the table of what has run, running nothing

celltune: the product defaults, as ``suite.py``'s recipe ``defaults``. tune: ``celltune tune`` from the defaults with
the whole budget for its search (trials, the winner's test scoring and its report); its winner is the row. timm: the
defaults of timm 1.0's ``train.py`` with ``--pretrained`` (SGD with Nesterov momentum 0.9, lr 0.1 x batch / 256 = 0.05
at batch 128, weight decay 2e-5, 300-epoch cosine stepped per epoch after 5 warm-up epochs from 1e-5, label smoothing
0.1, RandomResizedCrop scale 0.08-1 with random interpolation, horizontal flips, colour jitter 0.4, 4 loader workers
decoding with PIL, fp32, best checkpoint by validation top-1), with the model, offline weights and image size of the
celltune run before it on the same dataset (so only the recipe differs), trained on the same training images (those
celltune's ``--accept`` leaves out are left out) until the budget runs out; its scoring comes after and is not
counted. All three are scored with celltune.metrics.classification on the dataset's headline number; lines go to
OUT/results.jsonl and the table is suite.py's (OUT/suite.md).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from suite import DATASETS, Dataset, present_datasets, record, recorded, run_one, show_table
from throughput import PILFolder  # timm's ImageDataset per item: PIL, RGB, transform
from timm.data import create_transform
from timm.loss import LabelSmoothingCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2

from celltune.config import config_from_dict
from celltune.config.durations import parse_duration
from celltune.data.samples import LabelledSplits
from celltune.metrics.classification import classification_metrics
from celltune.metrics.results import result_from_dict
from celltune.metrics.stats import bootstrap_intervals
from celltune.models.factory import create_model
from celltune.training.preflight import check_data, find_data
from celltune.tuning.search import new_tune, run_tune

log = logging.getLogger("budget")
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# timm 1.0 train.py defaults
BATCH, WORKERS, EPOCHS, WARMUP_EPOCHS, WARMUP_LR, SMOOTHING, SEED = 128, 4, 300, 5, 1e-5, 0.1, 42
LR = 0.1 * BATCH / 256  # --lr-base 0.1 at --lr-base-size 256, linear scaling for SGD
ENGINES = ("defaults", "tune", "timm_train_py")


@torch.inference_mode()
def probabilities(model: torch.nn.Module, loader: torch.utils.data.DataLoader) -> np.ndarray:
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(x.to(device)).softmax(1).cpu() for x, _ in loader]).numpy()


def timm_defaults(found: LabelledSplits, *, model_name: str, image_size: int, budget: float) -> dict[str, Any]:
    """Train with timm train.py's defaults on ``found``'s training split for ``budget`` seconds; the best epoch's
    (by validation top-1) predicted classes on val and test, with the epochs run."""
    torch.manual_seed(SEED)
    start = time.perf_counter()
    deadline = start + budget
    device = "cuda" if torch.cuda.is_available() else "cpu"  # timm's train.py default device
    model, _ = create_model(model_name, num_classes=len(found.class_names), pretrained=True)
    model = model.to(device)
    train_tf = create_transform(image_size, is_training=True, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip=0.5,
                                color_jitter=0.4, interpolation="random", mean=IMAGENET[0], std=IMAGENET[1])
    eval_tf = create_transform(image_size, is_training=False, interpolation="bicubic", crop_pct=0.875,
                               mean=IMAGENET[0], std=IMAGENET[1])

    def loader(split: str, transform: Any, train: bool) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(PILFolder(found.splits[split], transform), batch_size=BATCH, shuffle=train,
                                           drop_last=train, num_workers=WORKERS, persistent_workers=True)

    train, val, test = loader("train", train_tf, True), loader("val", eval_tf, False), loader("test", eval_tf, False)
    optimizer = create_optimizer_v2(model, opt="sgd", lr=LR, weight_decay=2e-5, momentum=0.9)
    scheduler, _ = create_scheduler_v2(optimizer, sched="cosine", num_epochs=EPOCHS, warmup_epochs=WARMUP_EPOCHS,
                                       warmup_lr=WARMUP_LR, min_lr=0.0, cooldown_epochs=0,
                                       updates_per_epoch=len(train))
    loss_fn = LabelSmoothingCrossEntropy(SMOOTHING)
    val_labels = np.array([s.label for s in found.splits["val"]])
    best_top1, best_state, best_val, best_epoch, epochs = -1.0, None, None, 0, 0
    for epoch in range(EPOCHS):
        model.train()
        out_of_time = False
        for x, y in train:
            loss = loss_fn(model(x.to(device)), y.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if time.perf_counter() >= deadline:
                out_of_time = True
                break
        if out_of_time:
            break  # the budget ran out inside this epoch: timm would not have validated it in time
        predicted = probabilities(model, val).argmax(1)
        top1 = float((predicted == val_labels).mean())
        epochs = epoch + 1
        if top1 > best_top1:
            best_top1, best_state, best_val, best_epoch = top1, copy.deepcopy(model.state_dict()), predicted, epochs
        scheduler.step(epoch + 1, top1)
        log.info("timm defaults: epoch %d val top1 %.4f lr %.4g, %.0f s left", epochs, top1,
                 optimizer.param_groups[0]["lr"], deadline - time.perf_counter())
        if time.perf_counter() >= deadline:
            break
    trained = time.perf_counter() - start
    if best_state is None:
        raise RuntimeError(f"timm defaults: no epoch finished within {budget:.0f} s")
    model.load_state_dict(best_state)
    return {"epochs": epochs, "best_epoch": best_epoch, "train_seconds": round(trained), "val_predicted": best_val,
            "test_predicted": probabilities(model, test).argmax(1)}


def timm_record(dataset: Dataset, *, budget: str, seed: int, model: str, image_size: int) -> dict[str, Any]:
    """timm train.py's defaults on ``dataset``'s celltune split, as one results.jsonl line."""
    config = config_from_dict({**dataset.options(seed), "model": model, "image_size": image_size})
    found, _, left_out = check_data(find_data(config.data), config.data)  # the training images celltune trains on
    start = time.perf_counter()
    run = timm_defaults(found, model_name=model, image_size=image_size,
                        budget=parse_duration(budget, flag="--budget").total_seconds())
    truth = {k: np.array([s.label for s in found.splits[k]]) for k in ("val", "test")}
    val = classification_metrics(truth["val"], run["val_predicted"], found.class_names)
    test = classification_metrics(truth["test"], run["test_predicted"], found.class_names)
    ci = bootstrap_intervals(truth["test"], run["test_predicted"], num_classes=len(found.class_names), seed=seed)
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "recipe": "timm_train_py", "options": {"timm": "train.py 1.0"},
            "dataset": dataset.name, "metric": dataset.metric, "budget": budget, "seed": seed,
            "val": getattr(val, dataset.metric), "split": "test", "test": getattr(test, dataset.metric),
            "test_ci": ci.get(dataset.metric), "test_accuracy": test.accuracy, "test_aca": test.mean_class_accuracy,
            "test_macro_f1": test.macro_f1, "epochs": run["epochs"], "image_size": image_size, "model": model,
            "train_seconds": run["train_seconds"], "left_out_of_training": len(left_out),
            "wall_seconds": round(time.perf_counter() - start, 1), "run_dir": None}


def tune_record(dataset: Dataset, *, budget: str, seed: int, out_dir: Path) -> dict[str, Any]:
    """``celltune tune`` from the defaults on ``dataset`` within ``budget``: its winner, as one results.jsonl line
    (validation as the winner's run recorded it, test as the search scored it once)."""
    name = f"{dataset.name}-tune-{time.strftime('%Y%m%d-%H%M%S')}"
    config = config_from_dict({**dataset.options(seed), "time_budget": budget, "out_dir": str(out_dir),
                               "name": name}, source="budget.py tune")
    start = time.perf_counter()
    tune_dir = run_tune(new_tune(config))
    wall = time.perf_counter() - start
    winner = json.loads((tune_dir / "winner.json").read_text())
    line = record(Path(winner["run_dir"]), "tune", {"trial": winner["trial"], **winner["params"]}, dataset,
                  budget=budget, seed=seed, wall=wall)
    test = result_from_dict(json.loads((tune_dir / "winner" / "metrics_test.json").read_text()))
    trials = len(list((tune_dir / "trials").iterdir()))
    return {**line, "split": "test", "test": getattr(test, dataset.metric), "test_ci": test.ci.get(dataset.metric),
            "test_accuracy": test.accuracy, "test_aca": test.mean_class_accuracy, "test_macro_f1": test.macro_f1,
            "trials": trials, "tune_dir": str(tune_dir)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", default="10m", help="each engine's wall-clock budget per dataset")
    p.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS), metavar="NAME",
                   help=f"some of {', '.join(DATASETS)} (default: all)")
    p.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES),
                   help="timm_train_py takes the model and image size of this run's defaults on the dataset, "
                   "so it comes after them")
    p.add_argument("--out-dir", default="runs/budget")
    p.add_argument("--seed", type=int, default=0, help="the split's and celltune's seed (timm keeps its own, 42)")
    p.add_argument("--table", action="store_true", help="print the table of OUT/results.jsonl, running nothing")
    args = p.parse_args()
    out = Path(args.out_dir)
    failed = 0
    if not args.table:
        parse_duration(args.budget, flag="--budget")
        if "timm_train_py" in args.engines and "defaults" not in args.engines:
            p.error("timm_train_py needs defaults in the same run (their model and image size)")
        present = present_datasets(args.datasets)
        if not present:
            return 2
        for dataset in present:
            ours: dict[str, Any] | None = None
            for engine in args.engines:
                common = {"budget": args.budget, "seed": args.seed}
                if engine == "defaults":
                    run = partial(run_one, "defaults", {}, dataset, out_dir=out, **common)
                elif engine == "tune":
                    run = partial(tune_record, dataset, out_dir=out, **common)
                elif ours is not None:
                    run = partial(timm_record, dataset, model=ours["model"], image_size=ours["image_size"], **common)
                else:
                    continue  # the defaults failed: no model and size to give timm
                line = recorded(out, f"{dataset.name} / {engine}", run)
                failed += line is None
                ours = line if engine == "defaults" else ours
    if not show_table(out):
        return 1 if failed else 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
