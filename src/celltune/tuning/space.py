"""``celltune tune``'s search space: read from YAML (the packaged ``space.yaml`` or ``--space FILE``), checked
against the config's options before any trial runs, cut to what training accepts with the base recipe
(``compatible``), resolved against the data (image sizes around the data-aware
one) and sampled by an Optuna trial into plain options for ``TrainConfig.updated``.

A resolved space is plain data (``to_dict``), saved in the tune directory, so every process and every resumed
session of a study samples the same space."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from celltune.config import TrainConfig, close_matches, flat_names
from celltune.errors import CelltuneError, ConfigError
from celltune.training.defaults import SIZE_STEP, SMALLEST

log = logging.getLogger(__name__)

DEFAULT_SPACE = "space.yaml"
_RANGE_KEYS = {"low", "high", "log", "step"}


@dataclass(frozen=True)
class Param:
    """One searched option: ``choices``, or a number in [``low``, ``high``] (``integer`` when whole)."""

    name: str
    choices: list[Any] | None = None
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    integer: bool = False

    def to_dict(self) -> dict[str, Any]:
        if self.choices is not None:
            return {"choices": list(self.choices)}
        return {"low": self.low, "high": self.high, "log": self.log, "step": self.step, "integer": self.integer}

    def holds(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        return isinstance(value, int | float) and not isinstance(value, bool) and self.low <= value <= self.high

    def suggest(self, trial: Any) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.name, self.choices)
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)


@dataclass(frozen=True)
class Space:
    """Options (``Param``), families (a name -> named sets of options tried together) and the recipes tried
    first (``start_with``: {param or family: value} each)."""

    params: list[Param] = field(default_factory=list)
    families: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    start_with: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"options": {p.name: p.to_dict() for p in self.params}, "families": self.families,
                "start_with": self.start_with}

    def options(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A trial's values (one per param and family) -> options by flag name."""
        out = {p.name: values[p.name] for p in self.params}
        for family, sets in self.families.items():
            out |= sets[values[family]]
        return out

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Options for one Optuna trial: each param and each family's set drawn by the trial's sampler."""
        values = {p.name: p.suggest(trial) for p in self.params}
        values |= {family: trial.suggest_categorical(family, list(sets)) for family, sets in self.families.items()}
        return self.options(values)

    def first_trials(self, base: TrainConfig) -> list[dict[str, Any]]:
        """``start_with`` as complete trial values: what an entry leaves out is ``base``'s value, and a family the
        set that ``base`` already has."""
        flat = _flat_values(base)
        trials = []
        for k, entry in enumerate(self.start_with, start=1):
            values: dict[str, Any] = {}
            for p in self.params:
                value = entry.get(p.name, _base_value(p, flat))
                if not p.holds(value):
                    raise ConfigError(f"{self.source}: start_with entry {k}: {p.name}: {value!r} is outside the "
                                      f"space ({p.to_dict()}); give it in the entry")
                values[p.name] = value
            for family, sets in self.families.items():
                if family in entry:
                    values[family] = entry[family]
                    continue
                same = [name for name, s in sets.items() if all(flat.get(o) == v for o, v in s.items())]
                if not same:
                    raise ConfigError(f"{self.source}: start_with entry {k}: the base recipe matches none of "
                                      f"{family}'s sets ({', '.join(sets)}); name one, e.g. {family}: "
                                      f"{next(iter(sets))}")
                values[family] = same[0]
            trials.append(values)
        return trials


def _flat_values(config: TrainConfig) -> dict[str, Any]:
    return {name: getattr(getattr(config, section), f.name) for name, (section, f) in flat_names().items()}


def _base_value(p: Param, flat: Mapping[str, Any]) -> Any:
    # image_size left to celltune: the data-aware size, which resolve_sizes puts first.
    if p.name == "image_size" and flat[p.name] is None and p.choices:
        return p.choices[0]
    return flat[p.name]


def read_space(path: str | Path | None = None) -> Space:
    """The space in ``path`` (default: the packaged one), checked: every option a config option, every range
    well-formed, every family's sets options too."""
    if path is None:
        text = resources.files("celltune.tuning").joinpath(DEFAULT_SPACE).read_text()
        source = "the default search space"
    else:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ConfigError(f"{path}: cannot read the search space ({err.strerror or err})") from err
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not YAML ({err})") from err
    if not isinstance(data, dict) or not set(data) <= {"options", "families", "start_with"}:
        raise ConfigError(f"{source}: a search space is a mapping with options:, families: and start_with:")
    params = [_param(name, spec, source) for name, spec in (data.get("options") or {}).items()]
    families = {}
    for family, sets in (data.get("families") or {}).items():
        if not isinstance(sets, dict) or not sets or not all(isinstance(s, dict) for s in sets.values()):
            raise ConfigError(f"{source}: family {family}: give named sets of options, e.g. {{none: {{mixup: 0}}}}")
        for options in sets.values():
            for name, value in options.items():
                _known(name, source)
                _check_value(name, value, source)
        families[str(family)] = {str(k): dict(v) for k, v in sets.items()}
    clash = sorted({p.name for p in params} & set(families))
    if clash:
        raise ConfigError(f"{source}: {', '.join(clash)} is both an option and a family; rename the family")
    start_with = data.get("start_with") or []
    if not isinstance(start_with, list) or not all(isinstance(e, dict) for e in start_with):
        raise ConfigError(f"{source}: start_with is a list of {{option: value}} recipes")
    names = {p.name for p in params} | set(families)
    for k, entry in enumerate(start_with, start=1):
        for name in entry:
            if name not in names:
                raise ConfigError(f"{source}: start_with entry {k}: {name!r} is not searched"
                                  f"{close_matches(str(name), sorted(names))}; it searches {', '.join(sorted(names))}")
            family = families.get(name)
            if family is not None and entry[name] not in family:
                raise ConfigError(f"{source}: start_with entry {k}: {name} has no set {entry[name]!r}; it has "
                                  f"{', '.join(family)}")
    return Space(params, families, [dict(e) for e in start_with], source)


def _known(name: str, source: str) -> None:
    if name not in flat_names():
        raise ConfigError(f"{source}: {name!r} is not an option of celltune train"
                          f"{close_matches(name, list(flat_names()))}; `celltune train --help` lists them")
    if name in ("data", "time_budget", "epochs", "out_dir", "name"):
        raise ConfigError(f"{source}: {name} is set by celltune tune itself, not searched")


def _check_value(name: str, value: Any, source: str) -> None:
    try:
        TrainConfig().updated(**{name: value})
    except ConfigError as err:
        raise ConfigError(f"{source}: {name}: {value!r} is not a value the option takes ({err})") from None


def _param(name: str, spec: Any, source: str) -> Param:
    _known(name, source)
    if not isinstance(spec, dict):
        raise ConfigError(f"{source}: {name}: give choices: [...], low:/high:, or (image_size) steps: [...]")
    if "steps" in spec:
        if name != "image_size" or set(spec) != {"steps"}:
            raise ConfigError(f"{source}: {name}: steps: is for image_size alone")
        steps = spec["steps"]
        if not isinstance(steps, list) or not steps or not all(isinstance(x, int) and not isinstance(x, bool)
                                                                for x in steps):
            raise ConfigError(f"{source}: {name}: steps: is a list of whole numbers of 32 px steps, e.g. [0, 1]")
        return Param(name, choices=[f"step{x:+d}" for x in steps])  # resolved against the data later
    if "choices" in spec:
        if set(spec) != {"choices"} or not isinstance(spec["choices"], list) or not spec["choices"]:
            raise ConfigError(f"{source}: {name}: choices: is a non-empty list, alone")
        for value in spec["choices"]:
            _check_value(name, value, source)
        return Param(name, choices=list(spec["choices"]))
    if not {"low", "high"} <= set(spec) <= _RANGE_KEYS:
        raise ConfigError(f"{source}: {name}: a range is low:, high: (and log: true or step:)")
    try:
        low, high = float(spec["low"]), float(spec["high"])
        step = float(spec["step"]) if spec.get("step") is not None else None
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {name}: low, high and step are numbers") from None
    if not low < high or (spec.get("log") and low <= 0):
        raise ConfigError(f"{source}: {name}: needs low < high (and low > 0 with log: true); got {low}, {high}")
    if spec.get("log") and step is not None:
        raise ConfigError(f"{source}: {name}: a range takes log: true or step:, not both")
    _check_value(name, spec["low"], source)
    _check_value(name, spec["high"], source)
    integer = all(float(x).is_integer() for x in (low, high, step or 1.0)) and not isinstance(spec["low"], float)
    return Param(name, low=low, high=high, log=bool(spec.get("log")), step=step, integer=integer)


def resolve_sizes(space: Space, data_size: int) -> Space:
    """``image_size`` steps -> pixel sizes: ``data_size`` (the size celltune picks from the data) plus each step of
    32 px, never below 64, the data-aware size first and duplicates dropped."""
    params = []
    for p in space.params:
        if p.name == "image_size" and p.choices and all(str(c).startswith("step") for c in p.choices):
            steps = sorted((int(str(c)[4:]) for c in p.choices), key=lambda s: (s != 0, abs(s), s))
            sizes = list(dict.fromkeys(max(SMALLEST, data_size + s * SIZE_STEP) for s in steps))
            p = Param(p.name, choices=sizes)
        params.append(p)
    return Space(params, space.families, space.start_with, space.source)


def space_from_dict(data: Mapping[str, Any], source: str = "tune.yaml") -> Space:
    """A resolved space as ``Space.to_dict`` saved it."""
    params = [Param(name, choices=spec["choices"]) if "choices" in spec else
              Param(name, low=spec["low"], high=spec["high"], log=spec["log"], step=spec["step"],
                    integer=spec["integer"]) for name, spec in data["options"].items()]
    return Space(params, dict(data["families"]), list(data["start_with"]), source)


def compatible(space: Space, config: TrainConfig, *, multilabel: bool) -> Space:
    """``space`` without the choices and sets that training refuses with the base recipe ``config`` (Mixup with
    ``--balance loss``, ``--freeze-stride`` with ``--freeze-backbone``, Mixup on multi-label data, a model name
    nobody knows ...), each left out with a warning, and with a value the recipe sets (not the default) of a searched
    option among its choices; a searched option left with nothing is an error."""
    from celltune.training.preflight import check, check_labels

    def refusal(options: dict[str, Any]) -> str | None:
        try:
            tried = config.updated(**options)
            check_labels(tried, multilabel=multilabel)
            check(tried, None)
        except CelltuneError as err:  # a config refused, a model nobody knows
            return str(err)
        return None

    flat, defaults = _flat_values(config), _flat_values(TrainConfig())

    def with_recipes_value(p: Param) -> Param:
        # A value the recipe sets (`celltune tune --balance loss`) is searched too: its first trial runs the recipe.
        value = _base_value(p, flat)
        if p.choices is None or p.holds(value) or value == defaults[p.name]:
            return p
        log.warning("search space: %s %r (the recipe's) added to its choices", p.name, value)
        return replace(p, choices=[*p.choices, value])

    def kept(name: str, values: dict[Any, dict[str, Any]]) -> list[Any]:
        keep = []
        for value, options in values.items():
            why = refusal(options)
            if why is None:
                keep.append(value)
            else:
                log.warning("search space: %s %r left out: %s", name, value, why)
        if not keep:
            raise ConfigError(f"{space.source}: every value of {name} is refused with this recipe, e.g. "
                              f"{refusal(next(iter(values.values())))}; change the recipe or the space")
        return keep

    params = [p if p.choices is None else replace(p, choices=kept(p.name, {c: {p.name: c} for c in p.choices}))
              for p in map(with_recipes_value, space.params)]
    for p in params:
        if p.choices is None:
            kept(p.name, {p.low: {p.name: p.low}, p.high: {p.name: p.high}})  # both ends must train
    families = {f: {n: sets[n] for n in kept(f, {n: sets[n] for n in sets})} for f, sets in space.families.items()}
    return replace(space, params=params, families=families)
