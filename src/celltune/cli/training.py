"""``celltune train``, ``cv`` and ``demo``: fine-tuning from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from celltune.cli.output import print_run
from celltune.config import OptimConfig, TrainConfig, config_from_dict
from celltune.flags import add_config_flags, add_flags, given_options
from celltune.recipes import load_config


def _train_config(args: argparse.Namespace) -> TrainConfig:
    """The recipe (or the resumed run's config), then the flags given."""
    given = given_options(args)
    source = Path(args.resume) / "config.yaml" if args.resume else args.recipe
    return load_config(source, given) if source else config_from_dict(given, source="command line")


def cmd_train(args: argparse.Namespace) -> int:
    from celltune.train import fit

    print_run(fit(_train_config(args), resume=args.resume))
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    import json

    from celltune.crossval import run_cv
    from celltune.errors import ConfigError

    if args.resume and (given_options(args) or args.recipe):
        raise ConfigError("--resume continues a cross-validation as it was set up: give it alone")
    config = _train_config(argparse.Namespace(**{**vars(args), "resume": None}))
    parent = run_cv(config, folds=args.folds, resume=args.resume)
    s = json.loads((parent / "cv.json").read_text())
    widths = {m: max(len(s["labels"][m]), 17) + 3 for m in s["headline"]}
    print(f"\n{s['folds']}-fold cross-validation, {s['images']} images: {parent}\n")
    print(f"{'':<20}" + "".join(f"{s['labels'][m]:>{widths[m]}}" for m in s["headline"]))
    for row in s["per_fold"]:
        print(f"{'fold ' + str(row['fold']):<20}" + "".join(f"{row[m]:>{widths[m]}.4f}" for m in s["headline"]))
    print(f"{'mean +- std':<20}" + "".join(f"{s['mean'][m]:.4f} +- {s['std'][m]:.4f}".rjust(widths[m])
                                          for m in s["headline"]))
    print(f"{'pooled out-of-fold':<20}" + "".join(f"{s['pooled'][m]:>{widths[m]}.4f}" for m in s["headline"]))
    if s["pooled"].get("ci"):
        print(f"{'  95% CI':<20}" + "".join("{:.4f}-{:.4f}".format(*s["pooled"]["ci"][m]).rjust(widths[m])
                                            for m in s["headline"]))
    clean = s["pooled"].get("without_twins")
    if clean and clean["images"]:
        print(f"{'without seen copies':<20}" + "".join(f"{clean[m]:>{widths[m]}.4f}" for m in s["headline"])
              + f"   ({clean['left_out']} held-out image(s) with an exact copy in their fold's training left out)")
    print(f"\nreport: {parent / 'cv.html'}; out-of-fold predictions: {parent / 'oof_predictions.csv'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from celltune.demo import demo_config
    from celltune.train import fit

    config = demo_config(data=args.data, workdir=Path(args.workdir), epochs=args.epochs,
                         max_steps_per_epoch=args.max_steps_per_epoch)
    print(f"demo: fine-tuning {config.model.name} on {config.data.root}" + ("" if args.data else
                                                                            " (SYNTHETIC cells)"))
    print_run(fit(config))
    return 0


def _folds(text: str) -> int | str:
    if text == "groups":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--folds {text}: a number of folds, or groups") from None


def register(sub) -> None:
    p = sub.add_parser("train", help="fine-tune a pretrained model")
    p.add_argument("--recipe", "--config", dest="recipe", metavar="NAME|FILE",
                   help="a packaged recipe (`celltune recipes`) or a YAML file; flags given here override it")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run in its own directory")
    add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("cv", help="stratified (grouped) k-fold cross-validation: a run per fold, mean +- std, "
                       "pooled out-of-fold result")
    p.add_argument("--folds", type=_folds, default=5, metavar="N|groups",
                   help="folds, every image held out once (default: 5); groups: one fold per group of --groups, each "
                   "held out in turn (leave one group out)")
    p.add_argument("--recipe", "--config", dest="recipe", metavar="NAME|FILE",
                   help="a packaged recipe or a YAML file; flags given here override it")
    p.add_argument("--resume", metavar="CV_DIR", help="continue a killed cross-validation with its unfinished folds")
    add_config_flags(p)
    p.set_defaults(func=cmd_cv)

    p = sub.add_parser("demo", help="fine-tune the offline pretrained model on synthetic HEp-2-like cells")
    p.add_argument("--data", help="run the same recipe on this real data folder instead")
    p.add_argument("--workdir", default="celltune-demo", help="where the synthetic data and the runs go")
    p.add_argument("--epochs", type=int, default=None)
    add_flags(p, OptimConfig, only={"max_steps_per_epoch"})
    p.set_defaults(func=cmd_demo)
