"""``celltune train`` and ``celltune demo``: fine-tuning from the command line."""

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


def cmd_demo(args: argparse.Namespace) -> int:
    from celltune.demo import demo_config
    from celltune.train import fit

    config = demo_config(data=args.data, workdir=Path(args.workdir), epochs=args.epochs,
                         max_steps_per_epoch=args.max_steps_per_epoch)
    print(f"demo: fine-tuning {config.model.name} on {config.data.root}" + ("" if args.data else
                                                                            " (SYNTHETIC cells)"))
    print_run(fit(config))
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="fine-tune a pretrained model")
    p.add_argument("--recipe", "--config", dest="recipe", metavar="NAME|FILE",
                   help="a packaged recipe (`celltune recipes`) or a YAML file; flags given here override it")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run in its own directory")
    add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="fine-tune the offline pretrained model on synthetic HEp-2-like cells")
    p.add_argument("--data", help="run the same recipe on this real data folder instead")
    p.add_argument("--workdir", default="celltune-demo", help="where the synthetic data and the runs go")
    p.add_argument("--epochs", type=int, default=None)
    add_flags(p, OptimConfig, only={"max_steps_per_epoch"})
    p.set_defaults(func=cmd_demo)
