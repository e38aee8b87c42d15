"""Scoring a trained model on a labelled split, writing what was scored, and finishing a run: the best checkpoint on
the test split (val if there is none), thresholds for multi-label, metrics.json, plots and the HTML report."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
from torch import nn

from celltune.audit.leaks import read_twins, without_twins
from celltune.config import DataConfig, EvalConfig
from celltune.data.discovery import discover_as_trained, mask_paths
from celltune.data.samples import LabelledSplits, Sample, multi_hot
from celltune.errors import CelltuneError, DataError
from celltune.metrics import conformal
from celltune.metrics.calibration import fit_temperature, uncalibrated, with_temperature
from celltune.metrics.classification import classification_metrics
from celltune.metrics.multilabel import multilabel_metrics, tune_thresholds
from celltune.metrics.results import Result, RunMetrics, result_from_dict, with_calibration, with_intervals, with_tta
from celltune.metrics.stats import bootstrap_intervals
from celltune.models.checkpoint import (
    BEST,
    ModelCard,
    load_checkpoint,
    read_checkpoint,
    replace_card,
    resolve_checkpoint,
)
from celltune.predict.predictor import Prediction, make_loader, predict_probs
from celltune.predict.to_csv import write_predictions_csv
from celltune.reports.html import write_report
from celltune.reports.run_files import plot_confusion, plot_curves, read_json, write_history, write_json

log = logging.getLogger(__name__)


def truth_and_answers(card: ModelCard, samples: list[Sample], probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(truth, the model's answers): class indices (N,), or for multi-label (N, labels) 0/1 at the card's
    thresholds."""
    labels = [s.label for s in samples]
    if card.multilabel:
        thresholds = np.asarray(card.thresholds or [0.5] * len(card.class_names))
        return multi_hot(labels, len(card.class_names)), (probs >= thresholds).astype(int)  # type: ignore[arg-type]
    return np.asarray(labels), probs.argmax(axis=1)


def raw_probs(model: nn.Module, card: ModelCard, samples: list[Sample], *, batch_size: int = 64,
              num_workers: int = 0, tta: str = "none", masks: list[Path] | None = None) -> np.ndarray:
    """(N, C) probabilities of ``model`` on ``samples``, before the card's temperature."""
    loader = make_loader(samples, card, batch_size=batch_size, num_workers=num_workers, masks=masks)
    return predict_probs(model, loader, tta=tta, multilabel=card.multilabel)


def score(model: nn.Module, card: ModelCard, samples: list[Sample], *, batch_size: int = 64, num_workers: int = 0,
          tta: str = "none", masks: list[Path] | None = None, bootstrap: int = 0, seed: int = 0,
          ) -> tuple[Result, np.ndarray]:
    """(result, (N, C) probabilities) of ``model`` on ``samples``, rescaled by the card's temperature; multi-label
    at the card's thresholds; with ``bootstrap`` resamples, 95% intervals of the headline numbers; the calibration
    before and after the temperature, and (with the card's conformal scores) how prediction sets did."""
    raw = raw_probs(model, card, samples, batch_size=batch_size, num_workers=num_workers, tta=tta, masks=masks)
    probs = with_temperature(raw, card.temperature, multilabel=card.multilabel)
    truth, answers = truth_and_answers(card, samples, probs)
    result = with_calibration(result_of(card, truth, answers, probs, bootstrap=bootstrap, seed=seed), truth, raw,
                              probs, card.temperature)
    if card.conformal_scores is not None and not card.multilabel:
        result = replace(result, prediction_sets=conformal.measure(probs, truth, [s.path for s in samples],
                                                                   card.conformal_scores, card.class_names))
    return with_tta(result, tta), probs


def calibrated(card: ModelCard, samples: list[Sample], raw: np.ndarray, *, temperature: bool = True) -> ModelCard:
    """``card`` calibrated on the validation ``samples`` and their (N, C) probabilities ``raw``: a temperature
    (unless ``temperature`` is False), then on the rescaled probabilities the multi-label thresholds, or the
    single-label prediction sets' conformal scores."""
    truth, _ = truth_and_answers(card, samples, raw)
    fitted = fit_temperature(raw, truth, multilabel=card.multilabel) if temperature else None
    probs = with_temperature(raw, fitted, multilabel=card.multilabel)
    if card.multilabel:
        return replace(card, temperature=fitted, thresholds=tune_thresholds(truth, probs))
    found = conformal.scores(probs, truth, conformal.draw([s.path for s in samples]))
    return replace(card, temperature=fitted, conformal_scores=sorted(round(float(x), 6) for x in found))


def with_twins_left_out(result: Result, card: ModelCard, probs: np.ndarray, samples: list[Sample],
                        twinned: list[bool], *, bootstrap: int, seed: int) -> Result:
    """``result`` with its headline numbers on the images of ``samples`` that have no exact copy in training
    (``twinned``, from ``celltune.audit.leaks.twins_in_training``)."""
    truth, answers = truth_and_answers(card, samples, probs)
    clean = without_twins(twinned, lambda kept: result_of(card, truth[kept], answers[kept], probs[kept],
                                                           bootstrap=bootstrap, seed=seed))
    if clean is not None:
        log.info("without the %d image(s) whose exact copy is in training: %s", clean["left_out"],
                 {k: round(clean[k], 4) for k in result.headline() if k in clean})
    return replace(result, without_twins=clean)


def result_of(card: ModelCard, truth: np.ndarray, answers: np.ndarray, probs: np.ndarray, *, bootstrap: int = 0,
              seed: int = 0) -> Result:
    """The metrics of answers against truth (``truth_and_answers``), with 95% intervals from ``bootstrap``
    resamples."""
    if card.multilabel:
        result: Result = multilabel_metrics(truth, probs, card.class_names, card.thresholds)
    else:
        result = classification_metrics(truth, answers, card.class_names, probs=probs)
    if bootstrap:
        result = with_intervals(result, bootstrap_intervals(truth, answers, num_classes=len(card.class_names),
                                                            resamples=bootstrap, seed=seed))
    return result


def write_scored(out_dir: Path, *, split: str, result: Result, probs: np.ndarray, samples: list[Sample],
                 tag: str = "") -> None:
    """predictions{tag}.csv and (single-label) confusion_matrix{tag}.png under ``out_dir``."""
    predictions = [Prediction(s.path, p.tolist()) for s, p in zip(samples, probs, strict=True)]
    thresholds = result.thresholds if result.multilabel else None  # type: ignore[union-attr]
    write_predictions_csv(out_dir / f"predictions{tag}.csv", predictions, result.class_names,
                          [s.label for s in samples], thresholds)
    if not result.multilabel:
        plot_confusion(result.confusion_matrix, result.class_names,  # type: ignore[union-attr]
                       out_dir / f"confusion_matrix{tag}.png", title=f"{split}: accuracy "
                       f"{result.accuracy:.3f}, ACA {result.mean_class_accuracy:.3f}")  # type: ignore[union-attr]


def align_labels(found: LabelledSplits, class_names: list[str], root: str | Path) -> LabelledSplits:
    """Re-index the dataset's labels to the checkpoint's class order; a class the model never saw is an error.

    Multi-label ids are the model's output indices already; they only need to be in range."""
    if found.multilabel:
        if len(found.class_names) > len(class_names):
            raise DataError(f"{root}: label ids up to {len(found.class_names) - 1}, but the model has "
                            f"{len(class_names)} labels")
        return LabelledSplits(list(class_names), found.splits, found.layout)
    unknown = sorted(set(found.class_names) - set(class_names))
    if unknown:
        raise DataError(f"{root}: classes {unknown} are not among the model's classes {class_names}")
    index = [class_names.index(c) for c in found.class_names]
    splits = {k: [replace(s, label=index[s.label]) for s in v] for k, v in found.splits.items()}  # type: ignore[index]
    return LabelledSplits(list(class_names), splits, found.layout)


def evaluate_checkpoint(checkpoint: str | Path, *, data: str | Path, split: str = "test", seed: int = 0,
                        out_dir: str | Path | None = None, batch_size: int = 64, tta: str = "none",
                        mask_dir: str | Path | None = None, bootstrap: int = EvalConfig.bootstrap,
                        twins: bool = False, calibrate: str = EvalConfig.calibrate) -> Result:
    """Metrics of a checkpoint (or run directory) on one split of ``data``; files go to ``out_dir`` if given. With
    ``twins``, also on the split's images without an exact copy in training (every training image read once);
    ``calibrate`` "none": the raw probabilities, not the card's temperature."""
    model, card, samples, masks, found = _split_of(checkpoint, data, split, seed=seed, mask_dir=mask_dir)
    if calibrate == "none":
        card = uncalibrated(card)
    result, probs = score(model, card, samples, batch_size=batch_size, tta=tta, masks=masks, bootstrap=bootstrap,
                          seed=seed)
    if twins:
        result = with_twins_left_out(result, card, probs, samples, read_twins(found, split), bootstrap=bootstrap,
                                     seed=seed)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_scored(out, split=split, result=result, probs=probs, samples=samples, tag=f"_{split}")
        write_json(out / f"metrics_{split}.json", result.to_dict())
    return result


def _split_of(checkpoint: str | Path, data: str | Path, split: str, *, seed: int, mask_dir: str | Path | None):
    """(model, card, the split's samples, their masks, the data's splits) of a checkpoint on the ``split`` of
    ``data`` as it was made in training (seed, fractions and groups saved in the checkpoint), so that "test" means
    the same images."""
    model, card, saved = load_checkpoint(checkpoint)
    found = align_labels(discover_as_trained(data, saved, defaults=DataConfig(seed=seed)), card.class_names, data)
    if split not in found.splits:
        raise DataError(f"{data}: no {split!r} split here (found {sorted(found.splits)})")
    samples = found.splits[split]
    masks = mask_paths(samples, data_root=data, mask_dir=mask_dir) if mask_dir else None
    return model, card, samples, masks, found


def calibrate_checkpoint(checkpoint: str | Path, *, data: str | Path, seed: int = 0, batch_size: int = 64,
                         tta: str = EvalConfig.tta, mask_dir: str | Path | None = None,
                         calibrate: str = EvalConfig.calibrate) -> tuple[ModelCard, Result]:
    """Calibrate a trained checkpoint (or run directory) again on its validation split of ``data``, as training
    does at its end (a checkpoint written before celltune calibrated, or to calibrate for another ``tta``); its card
    is rewritten in place. (the new card, the result on validation, with the calibration before and after)."""
    path = resolve_checkpoint(checkpoint)
    model, card, samples, masks, _ = _split_of(path, data, "val", seed=seed, mask_dir=mask_dir)
    raw = raw_probs(model, card, samples, batch_size=batch_size, tta=tta, masks=masks)
    card = calibrated(uncalibrated(card), samples, raw, temperature=calibrate != "none")
    replace_card(path, card)
    probs = with_temperature(raw, card.temperature, multilabel=card.multilabel)
    truth, answers = truth_and_answers(card, samples, probs)
    return card, with_calibration(result_of(card, truth, answers, probs), truth, raw, probs, card.temperature)


def _heatmaps(model: nn.Module, card: ModelCard, samples: list[Sample], probs: np.ndarray,
              masks: list[Path] | None) -> list[tuple[str, bytes]] | str | None:
    """The report's Grad-CAM pictures, or why there are none: a report is never lost for want of them (None for
    multi-label, where the report has no such section)."""
    if card.multilabel:
        return None
    try:
        from celltune.explain.heatmaps import report_heatmaps

        return report_heatmaps(model, card, samples, probs, masks=masks)
    except ImportError as err:
        return f"Heatmaps need pytorch-grad-cam ({err}): pip install 'celltune[explain]'."
    except CelltuneError as err:
        return f"No heatmaps: {err}."


def finish_run(run_dir: Path, *, model: nn.Module, card: ModelCard, found: LabelledSplits,
               masks: dict[str, list[Path] | None], history: list[dict], batch_size: int, tta: str,
               bootstrap: int = 0, seed: int = 0, twinned: dict[str, list[bool]] | None = None,
               calibrate: str = "temperature", heatmaps: bool = True) -> RunMetrics:
    """Score the run's best checkpoint and write what a finished run holds: history.csv and its plots, its
    calibration on validation (``calibrated``; ``calibrate`` "none": no temperature), predictions, metrics.json and
    report.html. ``twinned``: per scored split, which images have an exact copy in training (``celltune.audit.leaks``);
    the numbers without them are reported too. ``heatmaps`` False: the report says how to draw them instead."""
    write_history(run_dir / "history.csv", history)
    plot_curves(history, run_dir)
    best = read_checkpoint(run_dir / BEST)
    model.load_state_dict(best["state_dict"])
    # Temperature, thresholds and conformal scores from validation, kept in the checkpoint for evaluate and predict.
    val = found.splits["val"]
    if val:
        card = calibrated(card, val, raw_probs(model, card, val, masks=masks["val"], batch_size=batch_size, tta=tta),
                          temperature=calibrate != "none")
        replace_card(run_dir / BEST, card)
    split = "test" if found.splits.get("test") else "val"
    samples = found.splits[split]
    result, probs = score(model, card, samples, masks=masks[split], batch_size=batch_size, tta=tta,
                          bootstrap=bootstrap, seed=seed)
    result = with_twins_left_out(result, card, probs, samples, (twinned or {}).get(split, []), bootstrap=bootstrap,
                                 seed=seed)
    write_scored(run_dir, split=split, result=result, probs=probs, samples=samples)
    train_seconds = sum(row["seconds"] for row in history)  # all epochs, across resumes
    run = RunMetrics(split=split, result=result, best_epoch=int(best["epoch"]) + 1,
                     best_val=result_from_dict(best["val_metrics"]).headline() if best["val_metrics"] else {},
                     epochs_run=len(history),
                     train_seconds=train_seconds,
                     fit_images_per_second=sum(r["train_images"] for r in history) / train_seconds
                     if train_seconds else 0.0, weights=str(best.get("weights", "raw")))
    write_json(run_dir / "metrics.json", run.to_dict())
    pictures = (_heatmaps(model, card, samples, probs, masks[split]) if heatmaps or card.multilabel else
                f"Grad-CAM left out of this run (eval.heatmaps off, as in celltune tune's trials): celltune explain "
                f"{run_dir} IMAGES draws it for any images.")
    write_report(run_dir, run=run, samples=samples, probs=probs, heatmaps=pictures)
    log.info("%s: %s", split, {k: round(v, 4) for k, v in result.headline().items()})
    return run


def draw_report_heatmaps(run_dir: Path, *, data: str | Path, seed: int = 0, mask_dir: str | Path | None = None,
                         tta: str = "none", batch_size: int = 64) -> Path:
    """Write ``run_dir``'s report.html again, with the Grad-CAM pictures its run left out (eval.heatmaps off, as in
    celltune tune's trials, one of which may be the winner): its best checkpoint on the split it was scored on."""
    run = RunMetrics.from_dict(read_json(run_dir / "metrics.json"))
    model, card, samples, masks, _ = _split_of(run_dir, data, run.split, seed=seed, mask_dir=mask_dir)
    _, probs = score(model, card, samples, batch_size=batch_size, tta=tta, masks=masks)
    return write_report(run_dir, run=run, samples=samples, probs=probs,
                        heatmaps=_heatmaps(model, card, samples, probs, masks))
