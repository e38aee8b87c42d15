"""``celltune evaluate``, ``compare`` and ``predict``: trained models on images."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import get_args

from celltune.cli.output import format_calibration, format_result
from celltune.config import DataConfig, EvalConfig, Split
from celltune.config.flags import add_flags

SCORING = {"tta", "calibrate", "bootstrap"}  # the evaluation options of scoring; heatmaps are for a run's report


def cmd_evaluate(args: argparse.Namespace) -> int:
    from celltune.evaluation.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, data=args.data, split=args.split, out_dir=args.out_dir,
                                 batch_size=args.batch_size, tta=args.tta, mask_dir=args.mask_dir,
                                 bootstrap=args.bootstrap, twins=args.twins, calibrate=args.calibrate)
    print(f"{args.split} split of {args.data}:\n{format_result(result)}")
    if args.out_dir:
        print(f"\nwrote metrics_{args.split}.json, predictions_{args.split}.csv"
              + ("" if result.multilabel else f", confusion_matrix_{args.split}.png") + f" to {args.out_dir}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from celltune.evaluation.evaluate import calibrate_checkpoint
    from celltune.metrics.calibration import MIN_IMAGES

    card, result = calibrate_checkpoint(args.checkpoint, data=args.data, batch_size=args.batch_size, tta=args.tta,
                                        mask_dir=args.mask_dir, calibrate=args.calibrate)
    print(f"validation split of {args.data}, {result.num_samples} images:")
    print(format_calibration(result) or f"  no temperature (--calibrate none, or fewer than {MIN_IMAGES} validation "
          "images)")
    if card.conformal_scores is not None:
        print(f"  prediction sets: {len(card.conformal_scores)} validation scores kept for predict --coverage")
    print(f"rewrote {args.checkpoint}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from celltune.errors import ConfigError
    from celltune.evaluation.compare import compare_cv, compare_runs, is_cv_dir
    from celltune.reports.run_files import write_json

    cv = [is_cv_dir(r) for r in (args.run_a, args.run_b)]
    if all(cv):
        if args.data or args.mask_dir:
            raise ConfigError("--data and --mask-dir are for two runs; two cv directories compare the predictions "
                              "their folds made (leave both out)")
        c = compare_cv(args.run_a, args.run_b, resamples=args.bootstrap)
        where = f"out-of-fold predictions as the folds scored them, {c.images} images (each once)"
    elif any(cv):
        raise ConfigError("compare two runs or two cv directories, not one of each")
    elif args.data is None:
        raise ConfigError("--data: the data folder both runs were trained on (two cv directories need none)")
    else:
        c = compare_runs(args.run_a, args.run_b, data=args.data, split=args.split, batch_size=args.batch_size,
                         tta=args.tta, mask_dir=args.mask_dir, resamples=args.bootstrap, twins=args.twins,
                         calibrate=args.calibrate)
        where = f"{c.split} split of {args.data}, {c.images} images"
    width = max(map(len, c.labels.values())) + 2
    print(f"{where}; A = {c.runs[0]}, B = {c.runs[1]}\n")
    print(f"{'':<{width}}{'A':>9}{'B':>9}{'A - B':>9}   95% CI of A - B (paired bootstrap)")
    for name, label in c.labels.items():
        low, high = c.interval[name]
        print(f"{label:<{width}}{c.a[name]:>9.4f}{c.b[name]:>9.4f}{c.difference[name]:>+9.4f}   "
              f"[{low:+.4f}, {high:+.4f}]")
    if c.without_twins:
        clean = c.without_twins
        print(f"\nwithout the {clean['left_out']} image(s) whose exact copy is in training ({clean['images']} left):")
        for name, label in c.labels.items():
            low, high = clean["interval"][name]
            print(f"{label:<{width}}{'':>18}{clean['difference'][name]:>+9.4f}   [{low:+.4f}, {high:+.4f}]")
    width = max(map(len, c.f1_per_class)) + 2
    print(f"\n{'F1 per class':<{width}}{'A':>9}{'B':>9}{'A - B':>9}")
    for name, (f1_a, f1_b) in c.f1_per_class.items():
        print(f"{name:<{width}}{f1_a:>9.4f}{f1_b:>9.4f}{f1_a - f1_b:>+9.4f}")
    print(f"\nMcNemar (exact): {c.only_a} images only A gets right, {c.only_b} only B; p = {c.p_value:.4g}")
    if args.json:
        write_json(Path(args.json), c.to_dict())
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from celltune.errors import ExistsError
    from celltune.predict.predictor import Predictor, inputs_under, require_inputs
    from celltune.predict.to_csv import predict_to_csv
    from celltune.progress import bar

    predictor = Predictor(args.checkpoint, tta=args.tta, calibrate=args.calibrate)
    card = predictor.card
    limit = None if args.coverage is None else predictor.set_limit(args.coverage)
    inputs = [Path(p) for p in args.images]
    require_inputs(inputs, card.channels)
    folders = [p for p in inputs if p.is_dir()]
    files = [p for p in inputs if not p.is_dir()]
    out = Path(args.output)
    if folders and out.exists() and not (args.overwrite or args.resume):
        raise ExistsError(f"{out} exists; choose another --output, --resume it, or pass --overwrite")
    failed = 0
    for pred in predictor.predict_paths(files, batch_size=args.batch_size):
        if pred.error is not None:
            failed += 1
            print(f"{pred.path}: error: {pred.error}")
            continue
        hits = (pred.above(predictor.class_names, predictor.thresholds) if card.multilabel
                else pred.topk(predictor.class_names, args.topk))
        print(f"{pred.path}: " + (", ".join(f"{c} {p:.3f}" for c, p in hits) or "(no label above threshold)")
              + ("" if limit is None else _set_text(pred.prediction_set(predictor.class_names, limit), args.coverage)))
    if folders:
        def paths():
            return (p for folder in folders for p in inputs_under(folder, card.channels))

        with bar(sum(1 for _ in paths()), "predicting") as progress:
            outcome = predict_to_csv(predictor, paths(), out, batch_size=args.batch_size, resume=args.resume,
                                     progress=progress.update, coverage=args.coverage)
        skipped = f" ({outcome.skipped} already there)" if outcome.skipped else ""
        print(f"wrote {outcome.written} predictions to {out}{skipped}")
        if outcome.failed:
            print(f"{outcome.failed} image(s) could not be read: their rows in {out} give the reason in the error "
                  "column")
        failed += outcome.failed
    return 1 if failed else 0


def _set_text(chosen: list[str], coverage: float) -> str:
    """How ``predict`` prints an image's prediction set."""
    look = "; more than one class: for a person to look at" if len(chosen) > 1 else ""
    return f"  | {coverage:.0%} set: {{{', '.join(chosen)}}}{look}"


def _twins_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--twins", action=argparse.BooleanOptionalAction, default=True,
                   help="also score the images without an exact copy (the same pixels) in the training split, "
                   "reading every training image once (default: on)")


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="score a checkpoint on a labelled split")
    p.add_argument("checkpoint", help="run directory or best.pt")
    p.add_argument("--data", required=True, help="the data folder, in any layout training reads")
    p.add_argument("--split", default="test", choices=get_args(Split))
    p.add_argument("--out-dir", help="write metrics, predictions and confusion matrix here")
    p.add_argument("--batch-size", type=int, default=64)
    add_flags(p, EvalConfig, only=SCORING, with_defaults=True)
    p.add_argument("--mask-dir", help="masks as in training (the images' relative folders and stems)")
    _twins_flag(p)
    add_flags(p, DataConfig, only={"max_image_pixels"}, with_defaults=True)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compare", help="two trained models on the same images (or two cv runs on their out-of-fold "
                       "predictions): differences with paired bootstrap intervals, McNemar's test")
    p.add_argument("run_a", metavar="RUN_A", help="run directory or best.pt; or a cv directory")
    p.add_argument("run_b", metavar="RUN_B", help="run directory or best.pt; or a cv directory over the same folds")
    p.add_argument("--data", help="the data folder both runs were trained on (not for two cv directories)")
    p.add_argument("--split", default="test", choices=get_args(Split))
    p.add_argument("--batch-size", type=int, default=64)
    add_flags(p, EvalConfig, only=SCORING, with_defaults=True)
    p.add_argument("--mask-dir", help="masks, as in training")
    add_flags(p, DataConfig, only={"max_image_pixels"}, with_defaults=True)
    p.add_argument("--json", metavar="FILE", help="write the comparison here")
    _twins_flag(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("predict", help="class probabilities for images; folders go to a CSV")
    p.add_argument("checkpoint", help="run directory, best.pt, or a .onnx from celltune export (run by onnxruntime)")
    p.add_argument("images", nargs="+", help="image files and/or folders")
    p.add_argument("--topk", type=int, default=3)
    p.add_argument("--output", default="predictions.csv", help="CSV for folder arguments")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    p.add_argument("--resume", action="store_true", help="continue an interrupted --output CSV, skipping done images")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--coverage", type=float, metavar="SHARE",
                   help="also give each image's prediction set: the fewest classes that hold the true one for this "
                   "share of images (0.95: 95%%), from the validation split (split conformal prediction); an image "
                   "whose set has more than one class is marked for review")
    add_flags(p, EvalConfig, only={"tta", "calibrate"}, with_defaults=True)
    add_flags(p, DataConfig, only={"max_image_pixels"}, with_defaults=True)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("calibrate", help="calibrate a trained model again on its validation split: temperature, "
                       "prediction sets (for runs trained before celltune did it, or for another --tta)")
    p.add_argument("checkpoint", help="run directory or best.pt (rewritten in place)")
    p.add_argument("--data", required=True, help="the data folder it was trained on")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--mask-dir", help="masks, as in training")
    add_flags(p, EvalConfig, only={"tta", "calibrate"}, with_defaults=True)
    add_flags(p, DataConfig, only={"max_image_pixels"}, with_defaults=True)
    p.set_defaults(func=cmd_calibrate)
