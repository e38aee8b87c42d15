"""Recipes and config files: the recipes shipped inside the package (chosen by name), YAML files (by path), and the
resolved config a run saves."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from celltune.config.train_config import TrainConfig, close_matches, config_from_dict, merge, nest
from celltune.errors import ConfigError


def _recipes() -> Any:
    return resources.files(__name__)  # this package's folder: the recipes lie beside this file


def recipe_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in _recipes().iterdir() if p.name.endswith(".yaml"))


def recipe_summary(name: str) -> str:
    """The recipe's first comment line."""
    lines = (_recipes() / f"{name}.yaml").read_text().splitlines()
    return next((line.lstrip("# ").strip() for line in lines if line.startswith("#")), "")


def _read_options(recipe: str | Path) -> tuple[dict[str, Any], str]:
    """(the options, their source) of a recipe name or a YAML file's path."""
    path = Path(recipe)
    if path.is_file():
        text, source = None, str(path)
    elif str(recipe) in recipe_names():
        text, source = (_recipes() / f"{recipe}.yaml").read_text(), f"recipe {recipe}"
    else:
        raise ConfigError(f"{recipe}: no such recipe or file{close_matches(str(recipe), recipe_names())}; recipes: "
                          f"{', '.join(recipe_names())}")
    try:
        data = yaml.safe_load(text if text is not None else path.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{source}: cannot read config ({err})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a config file holds a mapping of option: value")
    return data, source


def load_config(recipe: str | Path, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """A recipe (packaged name or YAML path), then ``overrides`` (flat or by section) on top."""
    data, source = _read_options(recipe)
    nested = merge(nest(data, source), nest(overrides or {}, "overrides"))
    return config_from_dict(nested, source=source)


def save_config(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
