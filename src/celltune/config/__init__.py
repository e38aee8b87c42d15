"""Every option of a run, as typed fields; parsing them from recipes, YAML files, dicts and flags.

Lives here: ``sections`` (the option fields, one dataclass per section), ``train_config`` (``TrainConfig`` and data
-> a checked config), ``flags`` (the command line made from the fields), ``recipes`` (the YAML recipes shipped in the
package, and config files). No torch: ``celltune --help`` is built from this package alone.

May import: celltune.errors
"""

from celltune.config.sections import (
    DEFAULT_EPOCHS,
    DEFAULT_MODEL,
    Augment,
    DataConfig,
    EvalConfig,
    HardwareConfig,
    Intensity,
    ModelConfig,
    OptimConfig,
    OutputConfig,
    Precision,
    Split,
    Tracker,
    TtaMode,
    option,
)
from celltune.config.train_config import (
    TrainConfig,
    close_matches,
    coerce,
    config_from_dict,
    field_types,
    flag_name,
    flat_names,
    merge,
    nest,
    optional_type,
    sections,
)

__all__ = [
    "DEFAULT_EPOCHS",
    "DEFAULT_MODEL",
    "Augment",
    "DataConfig",
    "EvalConfig",
    "HardwareConfig",
    "Intensity",
    "ModelConfig",
    "OptimConfig",
    "OutputConfig",
    "Precision",
    "Split",
    "Tracker",
    "TrainConfig",
    "TtaMode",
    "close_matches",
    "coerce",
    "config_from_dict",
    "field_types",
    "flag_name",
    "flat_names",
    "merge",
    "nest",
    "option",
    "optional_type",
    "sections",
]
