"""Side by side in one run: celltune's ``--time-budget`` plan against timm's ``train.py`` defaults, with the same model
(the same offline ImageNet weights), image size and wall-clock budget, on the same HEp-2 split.

    python benchmarks/budget.py [--budget 10m] [--model mobilenet_v2] [--image-size 96]

celltune: ``benchmarks/hep2.py``'s default recipe with ``--time-budget BUDGET`` (the budget holds its scoring and
report too). timm: the defaults of timm 1.0's ``train.py`` with ``--pretrained`` (SGD with Nesterov momentum 0.9, lr
0.1 x batch / 256 = 0.05 at batch 128, weight decay 2e-5, 300-epoch cosine stepped per epoch after 5 warm-up epochs
from 1e-5, label smoothing 0.1, RandomResizedCrop scale 0.08-1 with random interpolation, horizontal flips, colour
jitter 0.4, 4 loader workers decoding with PIL, fp32, best checkpoint by validation top-1), trained until the budget
runs out, as a user who gives timm the time they have would; its test scoring comes after and is not counted. Both
are scored on test/ with celltune.metrics. Prints a table and writes budget.json under --out-dir.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from hep2 import DEFAULT_DATA, default_config, run_summary
from throughput import PILFolder  # timm's ImageDataset per item: PIL, RGB, transform
from timm.data import create_transform
from timm.loss import LabelSmoothingCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2

from celltune.budget import parse_duration
from celltune.config import DEFAULT_MODEL
from celltune.data import discover
from celltune.metrics import classification_metrics
from celltune.models import create_model
from celltune.train import fit

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# timm 1.0 train.py defaults
BATCH, WORKERS, EPOCHS, WARMUP_EPOCHS, WARMUP_LR, SMOOTHING = 128, 4, 300, 5, 1e-5, 0.1
LR = 0.1 * BATCH / 256  # --lr-base 0.1 at --lr-base-size 256, linear scaling for SGD


@torch.inference_mode()
def probabilities(model, loader) -> np.ndarray:
    model.eval()
    return torch.cat([model(x).softmax(1) for x, _ in loader]).numpy()


def timm_defaults(data: str, *, model_name: str, image_size: int, budget: float, log) -> dict:
    start = time.perf_counter()
    deadline = start + budget
    found = discover(data)
    model, _ = create_model(model_name, num_classes=len(found.class_names), pretrained=True)
    train_tf = create_transform(image_size, is_training=True, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip=0.5,
                                color_jitter=0.4, interpolation="random", mean=IMAGENET[0], std=IMAGENET[1])
    eval_tf = create_transform(image_size, is_training=False, interpolation="bicubic", crop_pct=0.875,
                               mean=IMAGENET[0], std=IMAGENET[1])

    def loader(split, transform, train):
        return torch.utils.data.DataLoader(PILFolder(found.splits[split], transform), batch_size=BATCH, shuffle=train,
                                           drop_last=train, num_workers=WORKERS, persistent_workers=True)

    train, val, test = loader("train", train_tf, True), loader("val", eval_tf, False), loader("test", eval_tf, False)
    optimizer = create_optimizer_v2(model, opt="sgd", lr=LR, weight_decay=2e-5, momentum=0.9)
    scheduler, _ = create_scheduler_v2(optimizer, sched="cosine", num_epochs=EPOCHS, warmup_epochs=WARMUP_EPOCHS,
                                       warmup_lr=WARMUP_LR, min_lr=0.0, cooldown_epochs=0,
                                       updates_per_epoch=len(train))
    loss_fn = LabelSmoothingCrossEntropy(SMOOTHING)
    val_labels = np.array([s.label for s in found.splits["val"]])
    best_top1, best_state, best_epoch, epochs = -1.0, None, 0, 0
    for epoch in range(EPOCHS):
        model.train()
        out_of_time = False
        for x, y in train:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if time.perf_counter() >= deadline:
                out_of_time = True
                break
        if out_of_time:
            break
        top1 = float((probabilities(model, val).argmax(1) == val_labels).mean())
        epochs = epoch + 1
        if top1 > best_top1:
            best_top1, best_state, best_epoch = top1, copy.deepcopy(model.state_dict()), epochs
        scheduler.step(epoch + 1, top1)
        log.info("timm defaults: epoch %d val top1 %.4f lr %.4g, %.0f s left", epochs, top1,
                 optimizer.param_groups[0]["lr"], deadline - time.perf_counter())
        if time.perf_counter() >= deadline:
            break
    trained = time.perf_counter() - start
    if best_state is None:
        return {"epochs": 0, "train_seconds": round(trained), "note": "no epoch finished within the budget"}
    model.load_state_dict(best_state)
    test_probs = probabilities(model, test)
    result = classification_metrics(np.array([s.label for s in found.splits["test"]]), test_probs.argmax(1),
                                    found.class_names)
    return {"epochs": epochs, "best_epoch": best_epoch, "val_top1": round(best_top1, 4),
            "test_accuracy": round(result.accuracy, 4), "test_aca": round(result.mean_class_accuracy, 4),
            "test_macro_f1": round(result.macro_f1, 4), "train_seconds": round(trained),
            "scoring_seconds_not_counted": round(time.perf_counter() - start - trained)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--budget", default="10m")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--image-size", type=int, default=96, help="both sides; 96: what celltune picks for HEp-2")
    p.add_argument("--out-dir", default="runs/benchmarks")
    args = p.parse_args()
    if not Path(args.data).is_dir():
        print(f"no HEp-2 data at {args.data}; pass --data", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    log = logging.getLogger("budget")
    budget = parse_duration(args.budget, flag="--budget").total_seconds()
    torch.manual_seed(42)  # timm's --seed default

    start = time.perf_counter()
    run = fit(default_config(data=args.data, model=args.model, time_budget=f"{budget}s", image_size=args.image_size,
                             out_dir=args.out_dir, name=f"budget-celltune-{args.model}-{args.budget}"))
    ours = {"wall_seconds_with_scoring_and_report": round(time.perf_counter() - start), **run_summary(run)}
    theirs = timm_defaults(args.data, model_name=args.model, image_size=args.image_size, budget=budget, log=log)
    summary = {"date": time.strftime("%Y-%m-%d %H:%M"), "budget_seconds": budget, "model": args.model,
               "image_size": args.image_size, "celltune": ours, "timm_train_py_defaults": theirs}
    out = Path(args.out_dir) / f"budget-{args.model}-{args.budget}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"\n{'':<28}{'epochs':>8}{'test acc':>10}{'test ACA':>10}{'macro-F1':>10}")
    for name, r in (("celltune --time-budget", ours), ("timm train.py defaults", theirs)):
        print(f"{name:<28}{r['epochs']:>8}" + "".join(f"{r.get(k, float('nan')):>10.4f}" for k in
                                                      ("test_accuracy", "test_aca", "test_macro_f1")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
