"""Two trained models on the same images: each headline number of both, the difference with its paired bootstrap
interval (both scored on the same resamples), F1 per class, and McNemar's exact test on the images exactly one of them
gets right. The images are a split both runs score, or every image once for two ``celltune cv`` runs over the same
folds (their out-of-fold predictions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from celltune.audit.leaks import read_twins
from celltune.config import DataConfig, EvalConfig
from celltune.config.recipes import load_config
from celltune.data import csvfiles
from celltune.data.class_choice import CHOICE_FIELDS, ClassChoice
from celltune.data.discovery import discover_as_trained, split_record
from celltune.data.samples import multi_hot
from celltune.errors import ConfigError, DataError
from celltune.evaluation.evaluate import align_labels, score, truth_and_answers
from celltune.metrics.calibration import uncalibrated
from celltune.metrics.classification import classification_metrics
from celltune.metrics.multilabel import multilabel_metrics
from celltune.metrics.results import Result, labelled
from celltune.metrics.stats import mcnemar_exact, paired_differences
from celltune.models.checkpoint import load_checkpoint
from celltune.reports.run_files import read_json

_SPLIT_KEYS = tuple(k for k in split_record(DataConfig()) if k not in CHOICE_FIELDS)  # with ClassChoice.of: a split
OUT_OF_FOLD = "out of fold"  # Comparison.split of two cv runs


@dataclass(frozen=True)
class Comparison:
    runs: tuple[str, str]
    split: str
    images: int
    labels: dict[str, str]  # number compared (the headline ones; single-label: and weighted F1) -> its display label
    a: dict[str, float]
    b: dict[str, float]
    difference: dict[str, float]  # A - B
    interval: dict[str, list[float]]  # 95% paired bootstrap interval of A - B
    only_a: int  # images A gets right and B wrong (all labels right, for multi-label)
    only_b: int
    p_value: float  # McNemar, exact, two-sided
    f1_per_class: dict[str, list[float]]  # class -> [A's F1, B's F1]
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
    clean = None
    twinned = np.asarray(read_twins(found, split) if twins else [], dtype=bool)
    if twinned.any() and not twinned.all():
        kept = ~twinned
        paired = paired_differences(truth[kept], answers[0][kept], answers[1][kept],
                                    num_classes=len(card_a.class_names), resamples=resamples, seed=seed)
        clean = {"images": int(kept.sum()), "left_out": int(twinned.sum()),
                 "difference": {k: d for k, (d, _) in paired.items()}, "interval": {k: ci for k, (_, ci) in
                                                                                   paired.items()}}
    return _compared((str(run_a), str(run_b)), split, truth, answers, results, resamples=resamples, seed=seed,
                     without_twins=clean)


def compare_cv(cv_a: str | Path, cv_b: str | Path, *, resamples: int = EvalConfig.bootstrap,
               seed: int = 0) -> Comparison:
    """Two finished ``celltune cv`` directories over the same folds (the same data, --groups, --folds and --seed),
    compared on every image once: their out-of-fold predictions (the first repeat's), as their folds scored them."""
    (names, multilabel, oof_a), (names_b, multilabel_b, oof_b) = (_out_of_fold(Path(d)) for d in (cv_a, cv_b))
    if sorted(names) != sorted(names_b) or multilabel != multilabel_b:
        raise DataError(f"{cv_a} and {cv_b} do not classify the same classes ({names} against {names_b})")
    if oof_a.keys() != oof_b.keys():
        raise ConfigError(f"{cv_a} and {cv_b} did not score the same images ({len(oof_a.keys() - oof_b.keys())} "
                          f"only in A, {len(oof_b.keys() - oof_a.keys())} only in B): compare cross-validations of "
                          f"the same data")
    moved = sum(oof_a[p][0] != oof_b[p][0] for p in oof_a)
    if moved:
        raise ConfigError(f"{cv_a} and {cv_b} held out {moved} image(s) in different folds: compare cross-validations "
                          f"run with the same --groups, --folds and --seed")
    relabelled = sum(oof_a[p][1] != oof_b[p][1] for p in oof_a)
    if relabelled:
        raise DataError(f"{relabelled} image(s) have other labels in {cv_b} than in {cv_a}: the data changed between "
                        f"the two; run both on the data as it is now")
    paths = sorted(oof_a)
    index = {c: i for i, c in enumerate(names)}

    def coded(labels: list[str]) -> np.ndarray:  # (N,) class indices, or (N, C) 0/1 for multi-label
        if multilabel:
            return multi_hot([tuple(index[n] for n in labels_.split()) for labels_ in labels], len(names))
        return np.array([index[label] for label in labels])

    truth = coded([oof_a[p][1] for p in paths])
    answers = [coded([oof[p][2] for p in paths]) for oof in (oof_a, oof_b)]
    results: list[Result] = [multilabel_metrics(truth, answer.astype(float), names) if multilabel
                             else classification_metrics(truth, answer, names) for answer in answers]
    return _compared((str(cv_a), str(cv_b)), OUT_OF_FOLD, truth, answers, results, resamples=resamples, seed=seed)


def is_cv_dir(path: str | Path) -> bool:
    """A ``celltune cv`` directory (planned, perhaps not finished), not a run."""
    return (Path(path) / "cv_plan.json").is_file() or (Path(path) / "cv.json").is_file()


def _out_of_fold(cv_dir: Path) -> tuple[list[str], bool, dict[str, tuple[str, str, str]]]:
    """(class names, multi-label, {image: (fold, true label(s), predicted label(s))}) of a finished cv's first
    repeat; each image by its path under the cv's data folder, so the same data named two ways matches."""
    if not (cv_dir / "cv.json").is_file():
        raise ConfigError(f"{cv_dir}: no cv.json, the cross-validation has not finished: `celltune cv --resume "
                          f"{cv_dir}` trains its folds left, `celltune cv --collect {cv_dir}` gathers folds run as "
                          f"separate jobs")
    summary = read_json(cv_dir / "cv.json")
    root = load_config(cv_dir / "config.yaml").data.root if (cv_dir / "config.yaml").is_file() else None
    with csvfiles.open_csv(cv_dir / "oof_predictions.csv") as f:
        _, rows = csvfiles.read_dicts(f)

    def key(path: str) -> str:
        return Path(path).relative_to(root).as_posix() if root and Path(path).is_relative_to(root) else path

    first_repeat = [r for r in rows if int(r["fold"]) <= summary["folds"]]  # each image once
    return (list(summary["per_class"]), summary["per_class_metric"] == "f1",
            {key(r["path"]): (r["fold"], r["true"], r["predicted"]) for r in first_repeat})


def _compared(runs: tuple[str, str], split: str, truth: np.ndarray, answers: list[np.ndarray],
              results: Sequence[Result], *, resamples: int, seed: int, without_twins: dict | None = None) -> Comparison:
    """The comparison of answers A and B (A's class order) to ``truth``; ``results`` their scores."""
    names = results[0].class_names
    differences = paired_differences(truth, answers[0], answers[1], num_classes=len(names),
                                     resamples=resamples, seed=seed)
    right = [(a == truth).all(1) if a.ndim == 2 else a == truth for a in answers]
    only_a, only_b = int((right[0] & ~right[1]).sum()), int((~right[0] & right[1]).sum())
    labels = {name: label for name, label, _ in labelled(results[0]) if name in differences}
    f1_b = {row.name: row.f1 for row in results[1].per_class}  # B's rows are in B's class order
    return Comparison(
        runs=runs, split=split, images=len(truth), labels=labels,
        a={k: getattr(results[0], k) for k in labels}, b={k: getattr(results[1], k) for k in labels},
        difference={k: d for k, (d, _) in differences.items()},
        interval={k: ci for k, (_, ci) in differences.items()}, only_a=only_a, only_b=only_b,
        p_value=mcnemar_exact(only_a, only_b),
        f1_per_class={row.name: [row.f1, f1_b[row.name]] for row in results[0].per_class},
        without_twins=without_twins)
