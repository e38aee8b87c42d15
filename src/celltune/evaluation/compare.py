"""Two trained models on the same images: each headline number of both, the difference with its paired bootstrap
interval (both scored on the same resamples), and McNemar's exact test on the images exactly one of them gets right.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from celltune.audit.leaks import read_twins
from celltune.config import DataConfig, EvalConfig
from celltune.data.class_choice import CHOICE_FIELDS, ClassChoice
from celltune.data.discovery import discover_as_trained, split_record
from celltune.errors import ConfigError, DataError
from celltune.evaluation.evaluate import align_labels, score, truth_and_answers
from celltune.metrics.calibration import uncalibrated
from celltune.metrics.results import labelled
from celltune.metrics.stats import mcnemar_exact, paired_differences
from celltune.models.checkpoint import load_checkpoint

_SPLIT_KEYS = tuple(k for k in split_record(DataConfig()) if k not in CHOICE_FIELDS)  # with ClassChoice.of: a split


@dataclass(frozen=True)
class Comparison:
    runs: tuple[str, str]
    split: str
    images: int
    labels: dict[str, str]  # headline number -> its display label
    a: dict[str, float]
    b: dict[str, float]
    difference: dict[str, float]  # A - B
    interval: dict[str, list[float]]  # 95% paired bootstrap interval of A - B
    only_a: int  # images A gets right and B wrong (all labels right, for multi-label)
    only_b: int
    p_value: float  # McNemar, exact, two-sided
    # On the images without an exact copy in training (celltune.audit.leaks), when some have one: {"images", "left_out",
    # "difference", "interval"}.
    without_twins: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def compare_runs(run_a: str | Path, run_b: str | Path, *, data: str | Path, split: str = "test",
                 batch_size: int = 64, tta: str = "none", mask_dir: str | Path | None = None,
                 resamples: int = EvalConfig.bootstrap, seed: int = 0, twins: bool = False,
                 calibrate: str = EvalConfig.calibrate) -> Comparison:
    """Score both checkpoints (or run directories) on the same ``split`` of ``data``, as the first one split it;
    with ``twins``, the differences on the images without an exact copy in training too; ``calibrate`` "none":
    without the cards' temperatures (multi-label answers change with them)."""
    from celltune.data.discovery import mask_paths

    (model_a, card_a, saved_a), (model_b, card_b, saved_b) = load_checkpoint(run_a), load_checkpoint(run_b)
    if sorted(card_a.class_names) != sorted(card_b.class_names) or card_a.multilabel != card_b.multilabel:
        raise DataError(f"{run_a} and {run_b} do not classify the same classes ({card_a.class_names} against "
                        f"{card_b.class_names})")
    split_of = [{**{k: saved.get(k) for k in _SPLIT_KEYS}, "classes": ClassChoice.of(saved)}
                for saved in (saved_a, saved_b)]  # a run from before class choices chose every class
    found = discover_as_trained(data, saved_a)
    if found.celltune_split and split_of[0] != split_of[1]:
        raise ConfigError(f"the two runs split {data} differently ({split_of[0]} against {split_of[1]}): their "
                          f"{split} images differ; compare runs of the same split, or on data with its own splits")
    if split not in found.splits:
        raise DataError(f"{data}: no {split!r} split here (found {sorted(found.splits)})")
    results, answers, truths = [], [], []
    for model, card in ((model_a, card_a), (model_b, card_b)):
        card = uncalibrated(card) if calibrate == "none" else card
        samples = align_labels(found, card.class_names, data).splits[split]
        masks = mask_paths(samples, data_root=data, mask_dir=mask_dir) if mask_dir else None
        result, probs = score(model, card, samples, batch_size=batch_size, tta=tta, masks=masks)
        truth, answer = truth_and_answers(card, samples, probs)
        order = [card.class_names.index(c) for c in card_a.class_names]  # B's classes in A's order
        if card.multilabel:
            truth, answer = truth[:, order], answer[:, order]
        else:
            index = np.argsort(order)  # B's class index -> A's
            truth, answer = index[truth], index[answer]
        results.append(result)
        answers.append(answer)
        truths.append(truth)
    truth = truths[0]
    assert np.array_equal(truth, truths[1])
    differences = paired_differences(truth, answers[0], answers[1], num_classes=len(card_a.class_names),
                                     resamples=resamples, seed=seed)
    right = [(a == truth).all(1) if a.ndim == 2 else a == truth for a in answers]
    only_a, only_b = int((right[0] & ~right[1]).sum()), int((~right[0] & right[1]).sum())
    headline = results[0].headline()
    clean = None
    twinned = np.asarray(read_twins(found, split) if twins else [], dtype=bool)
    if twinned.any() and not twinned.all():
        kept = ~twinned
        paired = paired_differences(truth[kept], answers[0][kept], answers[1][kept],
                                    num_classes=len(card_a.class_names), resamples=resamples, seed=seed)
        clean = {"images": int(kept.sum()), "left_out": int(twinned.sum()),
                 "difference": {k: d for k, (d, _) in paired.items()}, "interval": {k: ci for k, (_, ci) in
                                                                                   paired.items()}}
    return Comparison(
        runs=(str(run_a), str(run_b)), split=split, images=len(truth),
        labels={name: label for name, label, _ in labelled(results[0]) if name in headline},
        a=headline, b=results[1].headline(), difference={k: d for k, (d, _) in differences.items()},
        interval={k: ci for k, (_, ci) in differences.items()}, only_a=only_a, only_b=only_b,
        p_value=mcnemar_exact(only_a, only_b), without_twins=clean)
