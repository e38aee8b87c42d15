"""``celltune <verb>``: the only place that parses flags and prints."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from celltune.config import TrainConfig, config_from_dict, load_config

log = logging.getLogger("celltune")

# flag -> TrainConfig field for `celltune train`; every flag defaults to None so only given flags override --config.
_TRAIN_FLAGS: list[tuple[str, dict[str, Any]]] = [
    ("--data", {"help": "data folder (class folders, train/val/test class folders, or ICPR 2014 CSV layout)"}),
    ("--model", {"help": "torchvision or timm model name (default mobilenet_v2)"}),
    ("--weights", {"help": "state_dict or checkpoint file to start from instead of the library's pretrained weights"}),
    ("--epochs", {"type": int}),
    ("--batch-size", {"type": int}),
    ("--lr", {"type": float}),
    ("--weight-decay", {"type": float}),
    ("--optimizer", {"choices": ["sgd", "adamw"]}),
    ("--scheduler", {"choices": ["plateau", "cosine", "none"]}),
    ("--warmup-epochs", {"type": float}),
    ("--label-smoothing", {"type": float}),
    ("--image-size", {"type": int, "help": "input size in pixels (default: the pretrained weights' size)"}),
    ("--seed", {"type": int}),
    ("--num-workers", {"type": int}),
    ("--cache", {"choices": ["auto", "on", "off"], "help": "decoded uint8 image cache (auto: datasets up to 2 GiB)"}),
    ("--cache-dir", {"help": "where the image cache goes (default $CELLTUNE_CACHE_DIR or ~/.cache/celltune)"}),
    ("--accelerator", {"help": "auto, cpu, gpu"}),
    ("--devices", {"type": lambda s: s if s == "auto" else int(s), "help": "devices per node (auto: all GPUs)"}),
    ("--num-nodes", {"type": int}),
    ("--strategy", {"help": "ddp (multi-GPU, torchrun, SLURM), ddp_spawn (also CPU), auto"}),
    ("--precision", {"help": "bf16-mixed, 16-mixed, 32-true (default: bf16-mixed on a GPU, 32-true on CPU)"}),
    ("--out-dir", {"help": "parent folder of run directories (default runs)"}),
    ("--name", {"help": "run directory name (default MODEL-TIMESTAMP); never overwritten"}),
    ("--max-steps-per-epoch", {"type": int, "help": "cap on batches per epoch, for quick checks"}),
    ("--mask-dir", {"help": "masks with the images' file names: white keeps, black zeroes the pixel"}),
    ("--balance", {"choices": ["none", "sampler", "loss"], "help": "class imbalance: weighted sampler or loss"}),
    ("--patience", {"type": int, "help": "early stopping after this many epochs without improvement"}),
    ("--early-stop-monitor", {"choices": ["val_loss", "val_aca", "val_macro_f1"]}),
    ("--tta", {"choices": ["none", "flips", "dihedral"], "help": "test-time augmentation for the final report"}),
    ("--channels", {"type": lambda s: [c.strip() for c in s.split(",")],
                    "help": "red,green,blue,yellow for {id}_red.png files, or TIFF planes 0,1,2,3"}),
    ("--intensity", {"choices": ["scale", "percentile", "dataset"],
                     "help": "bit-depth scaling, per-image percentile stretch, or dataset mean/std"}),
    ("--label-names", {"help": "multi-label: 'id,name' CSV naming the label ids"}),
    ("--focal-gamma", {"type": float, "help": "multi-label: focal loss with this gamma instead of BCE"}),
]

# flag -> Augment field; None defaults as above.
_AUGMENT_FLAGS: list[tuple[str, dict[str, Any]]] = [
    ("--hflip", {"action": argparse.BooleanOptionalAction}),
    ("--vflip", {"action": argparse.BooleanOptionalAction}),
    ("--rot90", {"action": argparse.BooleanOptionalAction, "help": "random right-angle turns"}),
    ("--rotation", {"type": float, "help": "random rotation range in degrees (0: off)"}),
    ("--crop-scale", {"type": float, "help": "RandomResizedCrop smallest area fraction (1.0: off)"}),
    ("--affine-degrees", {"type": float, "help": "RandomAffine rotation range"}),
    ("--affine-translate", {"type": float, "help": "RandomAffine shift, fraction of the size"}),
    ("--affine-scale", {"type": float, "help": "RandomAffine zoom range 1 +- this"}),
    ("--color-jitter", {"type": float, "help": "brightness/contrast jitter strength"}),
    ("--randaugment-ops", {"type": int, "help": "RandAugment operations per image (0: off)"}),
    ("--randaugment-magnitude", {"type": int}),
    ("--random-erasing", {"type": float, "help": "RandomErasing probability"}),
    ("--mixup", {"type": float, "help": "Mixup alpha (0: off)"}),
    ("--cutmix", {"type": float, "help": "CutMix alpha (0: off)"}),
]


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file of options; flags given here override it")
    for flag, kwargs in _TRAIN_FLAGS + _AUGMENT_FLAGS:
        p.add_argument(flag, default=None, **kwargs)
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run in its own directory")
    p.add_argument("--freeze-backbone", action="store_true", default=None, help="train the new head only")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format (default: on, on GPU and CPU)")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--no-pretrained", dest="pretrained", action="store_false", default=None,
                   help="random initialisation instead of ImageNet weights")


def _given(args: argparse.Namespace, flags: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    names = [flag[2:].replace("-", "_") for flag, _ in flags]
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def _train_config(args: argparse.Namespace) -> TrainConfig:
    given = _given(args, _TRAIN_FLAGS) | {n: getattr(args, n) for n in ("freeze_backbone", "pretrained",
                                                                        "channels_last", "compile")
                                          if getattr(args, n) is not None}
    if augment := _given(args, _AUGMENT_FLAGS):
        given["augment"] = augment
    config_file = Path(args.resume) / "config.yaml" if args.resume else args.config
    if config_file:
        return load_config(config_file, given)
    return config_from_dict(given, source="command line")


def _format_multilabel(m: dict) -> str:
    width = max(len(c) for c in m["class_names"]) + 2
    lines = [f"images {m['num_samples']}  macro-F1 {m['macro_f1']:.4f}  micro-F1 {m['micro_f1']:.4f}  "
             f"exact match {m['exact_match']:.4f}", "",
             f"{'label':<{width}}{'images':>8}{'threshold':>10}{'precision':>10}{'recall':>10}{'f1':>8}{'auc':>8}"]
    for name, r in m["per_class"].items():
        auc = "-" if r["roc_auc"] is None else f"{r['roc_auc']:.4f}"
        lines.append(f"{name:<{width}}{r['support']:>8d}{r['threshold']:>10.2f}{r['precision']:>10.4f}"
                     f"{r['recall']:>10.4f}{r['f1']:>8.4f}{auc:>8}")
    return "\n".join(lines)


def _format_metrics(m: dict) -> str:
    if m.get("multilabel"):
        return _format_multilabel(m)
    width = max(len(c) for c in m["class_names"]) + 2
    lines = [f"images {m['num_samples']}  accuracy {m['accuracy']:.4f}  mean class accuracy (ACA) "
             f"{m['mean_class_accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}", "",
             f"{'class':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}"]
    for name, row in m["per_class"].items():
        lines.append(f"{name:<{width}}{row['precision']:>10.4f}{row['recall']:>10.4f}{row['f1']:>10.4f}"
                     f"{row['support']:>9d}")
    lines += ["", "confusion matrix (rows true, columns predicted):"]
    lines += ["  " + " ".join(f"{v:>6d}" for v in row) for row in m["confusion_matrix"]]
    return "\n".join(lines)


def _print_run(run_dir: Path) -> None:
    import json

    from celltune.train import global_rank

    if global_rank() != 0:
        return  # another process of a distributed run (torchrun, SLURM, Lightning's ddp): rank 0 reports
    metrics = json.loads((run_dir / "metrics.json").read_text())
    print(f"\nrun directory: {run_dir}")
    selection = "macro_f1" if metrics.get("multilabel") else "mean_class_accuracy"
    print(f"best epoch {metrics['best_epoch']} of {metrics['epochs_run']}, validation {selection} "
          f"{metrics['best_val'][selection]:.4f}; {metrics['train_seconds']:.0f} s, "
          f"{metrics['fit_images_per_second']:.1f} training images/s")
    print(f"\n{metrics['split']} split:\n{_format_metrics(metrics)}")
    print(f"\nreport: {run_dir / 'report.html'}")


def cmd_train(args: argparse.Namespace) -> int:
    from celltune.train import fit

    config = _train_config(args)
    if not config.data:
        raise ValueError("give --data DIR (or data: in the --config file)")
    _print_run(fit(config, resume=args.resume))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from celltune.evaluate import evaluate_checkpoint

    metrics = evaluate_checkpoint(args.checkpoint, data=args.data, split=args.split, out_dir=args.out_dir,
                                  batch_size=args.batch_size, tta=args.tta, mask_dir=args.mask_dir)
    print(f"{args.split} split of {args.data}:\n{_format_metrics(metrics)}")
    if args.out_dir:
        print(f"\nwrote metrics_{args.split}.json, predictions_{args.split}.csv, confusion_matrix_{args.split}.png "
              f"to {args.out_dir}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from celltune.predict import Predictor, inputs_under, predict_to_csv

    predictor = Predictor(args.checkpoint, tta=args.tta)
    card = predictor.card
    inputs = [Path(p) for p in args.images]
    # With per-channel files an image is named by its stem (data/abc for data/abc_red.png ...), which is no file.
    stems_allowed = card.channels is not None and not all(c.isdigit() for c in card.channels)
    missing = [p for p in inputs if not p.exists() and not stems_allowed]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: no such image or folder")
    folders = [p for p in inputs if p.is_dir()]
    files = [p for p in inputs if not p.is_dir()]
    if folders:
        out = Path(args.output)
        if out.exists() and not (args.overwrite or args.resume):
            raise FileExistsError(f"{out} exists; choose another --output, --resume it, or pass --overwrite")
    for pred in predictor.predict_paths(files, batch_size=args.batch_size):
        hits = (pred.above(predictor.class_names, predictor.thresholds) if card.multilabel
                else pred.topk(predictor.class_names, args.topk))
        print(f"{pred.path}: " + (", ".join(f"{c} {p:.3f}" for c, p in hits) or "(no label above threshold)"))
    if folders:
        paths = (p for folder in folders for p in inputs_under(folder, card.channels))
        written = predict_to_csv(predictor, paths, out, batch_size=args.batch_size, resume=args.resume)
        print(f"wrote {written} predictions to {out}")
    return 0


def cmd_summarize(args: argparse.Namespace) -> int:
    from celltune.data import discover, summarize

    s = summarize(discover(args.data, seed=args.seed))
    splits = list(s["counts"])
    width = max(len(c) for c in s["classes"]) + 2
    print(f"{args.data}: {s['layout']}, {len(s['classes'])} classes")
    print(f"{'class':<{width}}" + "".join(f"{sp:>8}" for sp in splits))
    for c in s["classes"]:
        print(f"{c:<{width}}" + "".join(f"{s['counts'][sp][c]:>8d}" for sp in splits))
    print(f"{'total':<{width}}" + "".join(f"{s['totals'][sp]:>8d}" for sp in splits))
    sizes = s["image_sizes"]
    print(f"image sizes: most common {', '.join(sizes['most_common'])}; min {sizes['min'][0]}x{sizes['min'][1]}, "
          f"max {sizes['max'][0]}x{sizes['max'][1]}; modes {s['modes']}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from celltune.demo import demo_config
    from celltune.train import fit

    config = demo_config(data=args.data, workdir=Path(args.workdir), epochs=args.epochs)
    print(f"demo: fine-tuning {config.model} on {config.data}" + ("" if args.data else " (SYNTHETIC cells)"))
    _print_run(fit(config))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from celltune.models import available_models

    names = [n for n in available_models() if args.filter in n]
    print("\n".join(names))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="celltune", description=__doc__)
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="fine-tune a pretrained model")
    _add_train_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score a checkpoint on a labelled split")
    p.add_argument("checkpoint", help="run directory or best.pt")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--out-dir", help="write metrics, predictions and confusion matrix here")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--tta", default="none", choices=["none", "flips", "dihedral"],
                   help="average predictions over flipped (4) or all flipped and rotated (8) views")
    p.add_argument("--mask-dir", help="masks with the images' file names, as in training")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="class probabilities for images; folders go to a CSV")
    p.add_argument("checkpoint", help="run directory or best.pt")
    p.add_argument("images", nargs="+", help="image files and/or folders")
    p.add_argument("--topk", type=int, default=3)
    p.add_argument("--output", default="predictions.csv", help="CSV for folder arguments")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    p.add_argument("--resume", action="store_true", help="continue an interrupted --output CSV, skipping done images")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--tta", default="none", choices=["none", "flips", "dihedral"])
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("summarize", help="counts per class and split, image sizes")
    p.add_argument("data")
    p.add_argument("--seed", type=int, default=0, help="seed of the split for a single class-folder tree")
    p.set_defaults(func=cmd_summarize)

    p = sub.add_parser("demo", help="fine-tune the offline pretrained model on synthetic HEp-2-like cells")
    p.add_argument("--data", help="run the same recipe on this real data folder instead")
    p.add_argument("--workdir", default="celltune-demo", help="where the synthetic data and the runs go")
    p.add_argument("--epochs", type=int, default=None)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("models", help="list model names")
    p.add_argument("filter", nargs="?", default="")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("lightning.pytorch").propagate = False  # Lightning prints its own lines already
    from celltune.data import DataError
    from celltune.models import ModelNotFoundError, WeightsUnavailableError

    try:
        return args.func(args)
    except (DataError, ModelNotFoundError, WeightsUnavailableError, FileNotFoundError, FileExistsError,
            ValueError) as err:
        print(f"celltune: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
