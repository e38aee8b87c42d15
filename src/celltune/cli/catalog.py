"""``celltune models`` and ``celltune recipes``: what there is to choose from."""

from __future__ import annotations

import argparse

from celltune.config.recipes import recipe_names, recipe_summary


def cmd_models(args: argparse.Namespace) -> int:
    from celltune.models.factory import available_models

    print("\n".join(n for n in available_models() if args.filter in n))
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    width = max(map(len, recipe_names())) + 2
    for name in recipe_names():
        print(f"{name:<{width}}{recipe_summary(name)}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("models", help="list model names")
    p.add_argument("filter", nargs="?", default="")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("recipes", help="list the packaged training recipes")
    p.set_defaults(func=cmd_recipes)
