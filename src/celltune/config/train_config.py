"""``TrainConfig``, a run's whole configuration (one field per section), and how it is made from data: a recipe, a
YAML file, a dict of flat or sectioned names -> a checked config.

The sections, flat names and types come from the fields in ``celltune.config.sections``; nothing here names an
option.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from celltune.config.sections import (
    Augment,
    DataConfig,
    EvalConfig,
    HardwareConfig,
    ModelConfig,
    OptimConfig,
    OutputConfig,
)
from celltune.errors import ConfigError


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``fit`` needs, by section; each part of the program takes the sections it uses."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: Augment = field(default_factory=Augment)
    eval: EvalConfig = field(default_factory=EvalConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def updated(self, **options: Any) -> TrainConfig:
        """A copy with options changed, named as flags are (``config.updated(lr=0.01, image_size=96)``)."""
        return config_from_dict(merge(self.to_dict(), nest(options, "updated")), source="updated")


# --- sections and flat names, derived from TrainConfig and its sections' fields ----------------------------------


@functools.cache
def sections() -> dict[str, type]:
    """{section name: its dataclass}, in TrainConfig's order."""
    hints = get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in fields(TrainConfig)}


def flag_name(f: dataclasses.Field) -> str:
    """An option's name as a flag and as a flat YAML key (underscores): the field's name unless its metadata says."""
    return f.metadata.get("flag", f.name)


@functools.cache
def flat_names() -> dict[str, tuple[str, dataclasses.Field]]:
    """{flat option name: (section, field)}; every flat name is unique across sections."""
    out: dict[str, tuple[str, dataclasses.Field]] = {}
    for section, cls in sections().items():
        for f in fields(cls):
            assert flag_name(f) not in out, f"option {flag_name(f)!r} named twice"
            out[flag_name(f)] = (section, f)
    return out


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def close_matches(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def nest(data: Mapping[str, Any], source: str) -> dict[str, dict[str, Any]]:
    """Flat and sectioned options -> {section: {field: value}}. A mapping under a section's name is that section;
    any other key is an option's flat name."""
    nested: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        if key in sections() and isinstance(value, Mapping):
            cls = sections()[key]
            known = [f.name for f in fields(cls)]
            for name, v in value.items():
                if name not in known:
                    raise ConfigError(f"{source}: unknown option {key}.{name}{close_matches(name, known)}; {key} has "
                                      f"{', '.join(known)}")
                nested.setdefault(key, {})[name] = v
        elif key in flat_names():
            section, f = flat_names()[key]
            nested.setdefault(section, {})[f.name] = value
        else:
            raise ConfigError(f"{source}: unknown option {key!r}{close_matches(key, [*flat_names(), *sections()])}; "
                              "`celltune train --help` lists every option")
    return nested


def merge(base: dict[str, dict[str, Any]], top: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s: {**base.get(s, {}), **top.get(s, {})} for s in {*base, *top}}


# --- values: the same parsing for YAML values and flag strings ------------------------------------------------------


def optional_type(tp: Any) -> Any:
    """``tp`` without its ``| None``."""
    if get_origin(tp) in (Union, types.UnionType):
        args = tuple(a for a in get_args(tp) if a is not type(None))
        return args[0] if len(args) == 1 else Union[args]  # noqa: UP007 (a union built at run time)
    return tp


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def coerce(value: Any, tp: Any) -> Any:
    """``value`` (from YAML, or a flag's string) as type ``tp``; ValueError saying what was expected."""
    base = optional_type(tp)
    if value is None:
        if type(None) in get_args(tp):
            return None
        raise ValueError("a value is required")
    origin = get_origin(base)
    if origin is Literal:
        choices = get_args(base)
        if value not in choices:
            raise ValueError(f"choose from {', '.join(map(str, choices))}")
        return value
    if origin in (Union, types.UnionType):  # e.g. int | str: the first member that takes it
        for member in get_args(base):
            try:
                return coerce(value, member)
            except ValueError:
                continue
        raise ValueError(f"expected {base}")
    if origin is list:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list):
            raise ValueError("expected a list (or comma-separated values)")
        item = (get_args(base) or (str,))[0]
        return [coerce(str(x).strip(), item) for x in items]
    if base is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in _TRUE + _FALSE:
            return str(value).lower() in _TRUE
        raise ValueError("expected true or false")
    if base in (int, float):
        kind = "a whole number" if base is int else "a number"
        try:
            number = float(value) if isinstance(value, str) else value  # also "1e-3", which YAML reads as text
        except ValueError:
            raise ValueError(f"expected {kind}") from None
        if isinstance(number, bool) or not isinstance(number, int | float) or (
                base is int and not float(number).is_integer()):
            raise ValueError(f"expected {kind}")
        return base(number)
    if base is str:
        if isinstance(value, Mapping | list):
            raise ValueError("expected text")
        return str(value)
    raise TypeError(f"no parsing for options of type {base}")


def _build(cls: type, values: Mapping[str, Any], source: str) -> Any:
    types_ = field_types(cls)
    parsed = {}
    for name, value in values.items():
        try:
            parsed[name] = coerce(value, types_[name])
        except ValueError as err:
            f = next(f for f in fields(cls) if f.name == name)
            raise ConfigError(f"{source}: {flag_name(f)}: {err}; got {value!r}") from None
    return cls(**parsed)


def config_from_dict(data: Mapping[str, Any], source: str = "config") -> TrainConfig:
    """Options by section or by flat name -> a checked TrainConfig; unknown names and bad values fail here."""
    nested = nest(data, source)
    return TrainConfig(**{s: _build(cls, nested.get(s, {}), source) for s, cls in sections().items()})
