"""``celltune <verb>``: the only place that parses flags and prints. Each family of verbs is a module here that adds
its subcommands; only torch-free modules are imported at start-up (config, flags, errors), so ``--help`` answers at
once, and each verb imports what it runs.

May import: anything; nothing but ``celltune.__main__`` imports celltune.cli
"""

from __future__ import annotations

import argparse
import logging
import sys

from celltune.cli import catalog, datasets, explaining, exports, scoring, training, tuning
from celltune.errors import CelltuneError

log = logging.getLogger("celltune")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="celltune", description="Fine-tune ImageNet-pretrained CNNs on cell, "
                                     "microscopy and medical images; honest metrics and a report in one command.")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="VERB")
    for verbs in (training, tuning, scoring, exports, explaining, datasets, catalog):
        verbs.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("lightning.pytorch").propagate = False  # Lightning prints its own lines already
    try:
        if getattr(args, "max_image_pixels", None) is not None:  # train's comes with its config
            from celltune.data.images import set_max_image_pixels

            set_max_image_pixels(args.max_image_pixels)
        return args.func(args)
    except CelltuneError as err:
        print(f"celltune: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
