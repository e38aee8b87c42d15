"""argparse flags generated from the config dataclasses: each flag's name, help, parsing and choices come from its
field.

Names are kebab-case (``batch_size`` -> ``--batch-size``); booleans come in pairs (``--hflip/--no-hflip``); a
``Literal`` gives the choices; defaults show in the help but parse as None, so that only the flags given override a
recipe or a resumed run's config. Imports no torch.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from typing import Any, Literal, get_args, get_origin

from celltune.config.train_config import (
    TrainConfig,
    coerce,
    field_types,
    flag_name,
    flat_names,
    optional_type,
    sections,
)


def _parse(tp: Any, name: str):
    def parse(text: str) -> Any:
        try:
            return coerce(text, tp)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = name  # argparse names it in "invalid ... value"
    return parse


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, *, only: set[str] | None = None,
              with_defaults: bool = False) -> None:
    """One flag per field of ``cls`` (or of those named in ``only``). Parsed defaults are None unless
    ``with_defaults``, where the field's default is the flag's."""
    types = field_types(cls)
    for f in fields(cls):
        name = flag_name(f)
        if only is not None and name not in only:
            continue
        tp = types[f.name]
        base = optional_type(tp)
        default = f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default
        help_text = f.metadata.get("help", "").replace("%", "%%")  # argparse formats help with %
        if default not in (None, ""):
            help_text += f" (default: {_shown(default)})"
        common: dict[str, Any] = {"dest": name, "default": default if with_defaults else None, "help": help_text}
        flag = "--" + name.replace("_", "-")
        if base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif get_origin(base) is Literal:
            parser.add_argument(flag, choices=get_args(base), **common)
        elif get_origin(base) is list:
            item = get_args(base)[0]
            metavar = "|".join(get_args(item)) + ",..." if get_origin(item) is Literal else "A,B,..."
            parser.add_argument(flag, type=_parse(tp, name), metavar=metavar, **common)
        else:
            metavar = {int: "N", float: "X"}.get(base, name.split("_")[-1].upper())
            parser.add_argument(flag, type=_parse(tp, name), metavar=metavar, **common)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Every TrainConfig option as a flag, one argument group per section."""
    for cls in sections().values():
        add_flags(parser.add_argument_group((cls.__doc__ or "").strip()), cls)


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig options given on the command line, by flat name."""
    return {name: getattr(args, name) for name in flat_names() if getattr(args, name, None) is not None}


def config_flags_of(config: TrainConfig) -> list[str]:
    """The flags that rebuild ``config`` from the defaults (for commands printed to the user)."""
    default, out = TrainConfig().to_dict(), []
    for name, (section, f) in flat_names().items():
        value = config.to_dict()[section][f.name]
        if value != default[section][f.name] and value is not None:
            flag = "--" + name.replace("_", "-")
            out += ([flag if value else f"--no-{flag[2:]}"] if isinstance(value, bool) else [flag, _shown(value)])
    return out
