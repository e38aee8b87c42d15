from __future__ import annotations

import optuna
import pytest

from celltune.config import TrainConfig
from celltune.errors import ConfigError
from celltune.tuning.space import compatible, read_space, resolve_sizes, space_from_dict


def write(tmp_path, text: str):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_the_default_space_reads_and_starts_with_the_product_defaults_then_the_other_model():
    space = resolve_sizes(read_space(), data_size=96)
    sizes = next(p for p in space.params if p.name == "image_size").choices
    assert sizes == [96, 128, 160]  # steps 0, 1, 2 of 32 px around the data-aware 96, that one first
    defaults, other_model = space.first_trials(TrainConfig())
    # The product defaults, as `celltune train --data D` runs them: each value is TrainConfig's own.
    assert defaults == {"model": "mobilenet_v2", "image_size": 96, "lr": 2e-3, "weight_decay": 0.05,
                        "label_smoothing": 0.1, "ema": 0.999, "freeze_stride": 0, "balance": "none",
                        "augmentation": "flips_rot90", "mixing": "none"}
    assert space.options(defaults) == {"model": "mobilenet_v2", "image_size": 96, "lr": 2e-3, "weight_decay": 0.05,
                                       "label_smoothing": 0.1, "ema": 0.999, "freeze_stride": 0, "balance": "none",
                                       "rot90": True, "rotation": 0.0, "randaugment_ops": 0, "mixup": 0.0,
                                       "cutmix": 0.0}
    assert TrainConfig().updated(**space.options(defaults)).updated(image_size=None) == TrainConfig()
    assert other_model == {**defaults, "model": "tf_efficientnet_lite0"}


def test_image_size_steps_never_go_below_64_px_and_drop_duplicates(tmp_path):
    space = read_space(write(tmp_path, "options:\n  image_size: {steps: [-1, 0, 1]}\n"))
    assert resolve_sizes(space, 64).params[0].choices == [64, 96]  # 64 - 32 is raised to 64, kept once
    assert resolve_sizes(space, 128).params[0].choices == [128, 96, 160]


def test_a_resolved_space_survives_its_plain_data_form(tmp_path):
    space = resolve_sizes(read_space(), 64)
    again = space_from_dict(space.to_dict())
    assert again.to_dict() == space.to_dict()


def test_a_trial_draws_every_option_and_one_set_per_family(tmp_path):
    space = read_space(write(tmp_path, """
options:
  lr: {low: 1.0e-4, high: 1.0e-2, log: true}
  batch_size: {low: 8, high: 32, step: 8}
families:
  mixing:
    none: {mixup: 0.0}
    strong: {mixup: 0.4, cutmix: 1.0}
"""))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = [space.suggest(study.ask()) for _ in range(20)]
    for options in drawn:
        assert 1e-4 <= options["lr"] <= 1e-2
        assert options["batch_size"] in (8, 16, 24, 32) and isinstance(options["batch_size"], int)
        assert options.get("cutmix") in (None, 1.0) and options["mixup"] in (0.0, 0.4)
        TrainConfig().updated(**options)  # every draw is a valid config
    assert {o["mixup"] for o in drawn} == {0.0, 0.4}


@pytest.mark.parametrize(("text", "says"), [
    ("options:\n  weight_decy: {choices: [0.1]}\n", "'weight_decy' is not an option of celltune train (did you "
                                                    "mean weight_decay"),
    ("options:\n  epochs: {choices: [3]}\n", "epochs is set by celltune tune itself"),
    ("options:\n  optimizer: {choices: [sgd, adam]}\n", "optimizer: 'adam' is not a value the option takes"),
    ("options:\n  lr: {low: 0.1, high: 0.01}\n", "needs low < high"),
    ("options:\n  lr: {low: 0.0, high: 0.1, log: true}\n", "low > 0 with log: true"),
    ("options:\n  lr: {choices: []}\n", "choices: is a non-empty list"),
    ("options:\n  lr: {steps: [0]}\n", "steps: is for image_size alone"),
    ("options:\n  image_size: {steps: [0.5]}\n", "steps: is a list of whole numbers"),
    ("options:\n  lr: {low: 1.0e-4, high: 1.0e-2, log: true, step: 1.0e-4}\n", "log: true or step:, not both"),
    ("options:\n  batch_size: {low: 8, high: 64.5}\n", "batch_size: 64.5 is not a value the option takes"),
    ("options:\n  mixup: {choices: [0.0]}\nfamilies:\n  mixup: {a: {cutmix: 1.0}}\n", "mixup is both an option "
                                                                                       "and a family"),
    ("families:\n  aug: {a: {rot90: maybe}}\n", "rot90: 'maybe' is not a value"),
    ("options:\n  lr: {choices: [0.1]}\nstart_with:\n  - {lrr: 0.1}\n", "'lrr' is not searched"),
    ("families:\n  aug: {a: {rot90: true}}\nstart_with:\n  - {aug: b}\n", "aug has no set 'b'; it has a"),
    ("model: resnet18\n", "a search space is a mapping with options:"),
])
def test_a_wrong_space_fails_before_any_trial_naming_the_file_and_the_option(tmp_path, text, says):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=str(path)) as err:
        read_space(path)
    assert says in str(err.value)


def test_a_first_recipe_outside_the_space_says_which_option_to_give(tmp_path):
    space = read_space(write(tmp_path, "options:\n  lr: {choices: [0.01, 0.1]}\nstart_with:\n  - {}\n"))
    with pytest.raises(ConfigError, match=r"start_with entry 1: lr: 0.002 is outside the space .*give it in the "
                                          r"entry"):
        space.first_trials(TrainConfig())  # the base recipe's lr (the default, 2e-3) is not a choice
    family = read_space(write(tmp_path, "families:\n  aug: {no_turns: {rot90: false}}\nstart_with:\n  - {}\n"))
    with pytest.raises(ConfigError, match="the base recipe matches none of aug's sets"):
        family.first_trials(TrainConfig())


def test_choices_training_refuses_with_the_base_recipe_are_left_out_before_any_trial(tmp_path, caplog):
    space = resolve_sizes(read_space(), 96)
    base = TrainConfig().updated(data=str(tmp_path), freeze_backbone=True)
    kept = compatible(space, base, multilabel=True)
    assert next(p for p in kept.params if p.name == "freeze_stride").choices == [0]  # 4 with --freeze-backbone: no
    assert list(kept.families["mixing"]) == ["none"]  # no Mixup/CutMix on multi-label data
    assert next(p for p in kept.params if p.name == "balance").choices == ["none"]  # nor class balancing
    assert "freeze_stride 4 left out: --freeze-backbone already freezes" in caplog.text
    assert compatible(space, base.updated(freeze_backbone=False), multilabel=False) == space
    only_four = read_space(write(tmp_path, "options:\n  freeze_stride: {choices: [4]}\n"))
    with pytest.raises(ConfigError, match=r"every value of freeze_stride is refused with this recipe, e.g. "
                                          r"--freeze-backbone already freezes"):
        compatible(only_four, base, multilabel=False)
    unknown = read_space(write(tmp_path, "options:\n  model: {choices: [resnet18, resnet_18x]}\n"))
    assert next(p for p in compatible(unknown, base, multilabel=False).params).choices == ["resnet18"]


def test_a_value_the_recipe_sets_outside_the_choices_is_searched_too(tmp_path, caplog):
    space = resolve_sizes(read_space(), 96)
    base = TrainConfig().updated(data=str(tmp_path), balance="loss")  # celltune tune --balance loss
    kept = compatible(space, base, multilabel=False)
    assert next(p for p in kept.params if p.name == "balance").choices == ["none", "sampler", "loss"]
    assert list(kept.families["mixing"]) == ["none"]  # Mixup does not combine with the weighted loss
    assert kept.first_trials(base)[0]["balance"] == "loss"  # the first trial runs the recipe as given
    assert "balance 'loss' (the recipe's) added to its choices" in caplog.text
