"""``celltune <verb>``: the only place that parses flags and prints.

Only torch-free modules are imported here at start-up (config, flags, errors), so ``--help`` answers at once; each
verb imports what it runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from celltune.config import DataConfig, EvalConfig, OptimConfig, Split, TrainConfig, config_from_dict
from celltune.errors import CelltuneError, MissingError
from celltune.flags import add_config_flags, add_flags, given_options
from celltune.recipes import load_config, recipe_names, recipe_summary

if TYPE_CHECKING:
    from celltune.metrics import Result

log = logging.getLogger("celltune")


def _train_config(args: argparse.Namespace) -> TrainConfig:
    """The recipe (or the resumed run's config), then the flags given."""
    given = given_options(args)
    source = Path(args.resume) / "config.yaml" if args.resume else args.recipe
    return load_config(source, given) if source else config_from_dict(given, source="command line")


def _cell(value: object, width: int) -> str:
    if value is None:
        return f"{'-':>{width}}"
    return f"{value:>{width}d}" if isinstance(value, int) else f"{value:>{width}.4f}"


def format_result(result: Result) -> str:
    """The headline numbers, the per-class table and (single-label) the confusion matrix, as text."""
    from celltune.metrics import labelled

    headline = result.headline()
    lines = [f"images {result.num_samples}  " + "  ".join(
        f"{label} {value:.4f}" for name, label, value in labelled(result) if name in headline), ""]
    rows = result.per_class
    columns = [label for _, label, _ in labelled(rows[0])] if rows else []
    width = max(len(c) for c in result.class_names) + 2
    widths = [max(len(c) + 2, 8) for c in columns]
    lines.append(f"{'label' if result.multilabel else 'class':<{width}}"
                 + "".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        values = [v for _, _, v in labelled(row)]
        lines.append(f"{row.name:<{width}}" + "".join(_cell(v, w) for v, w in zip(values, widths, strict=True)))
    if not result.multilabel:
        lines += ["", "confusion matrix (rows true, columns predicted):"]
        lines += ["  " + " ".join(f"{v:>6d}" for v in row) for row in result.confusion_matrix]  # type: ignore[union-attr]
    return "\n".join(lines)


def _print_run(run_dir: Path) -> None:
    from celltune.metrics import RunMetrics, labelled
    from celltune.report import read_json
    from celltune.runtime import global_rank

    if global_rank() != 0:
        return  # another process of a distributed run (torchrun, SLURM, Lightning's ddp): rank 0 reports
    run = RunMetrics.from_dict(read_json(run_dir / "metrics.json"))
    selection = run.result.selection
    label = next(label for name, label, _ in labelled(run.result) if name == selection)
    print(f"\nrun directory: {run_dir}")
    print(f"best epoch {run.best_epoch} of {run.epochs_run}, validation {label} {run.best_val[selection]:.4f}; "
          f"{run.train_seconds:.0f} s, {run.fit_images_per_second:.1f} training images/s")
    print(f"\n{run.split} split:\n{format_result(run.result)}")
    print(f"\nreport: {run_dir / 'report.html'}")


def cmd_train(args: argparse.Namespace) -> int:
    from celltune.train import fit

    _print_run(fit(_train_config(args), resume=args.resume))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from celltune.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, data=args.data, split=args.split, out_dir=args.out_dir,
                                 batch_size=args.batch_size, tta=args.tta, mask_dir=args.mask_dir)
    print(f"{args.split} split of {args.data}:\n{format_result(result)}")
    if args.out_dir:
        print(f"\nwrote metrics_{args.split}.json, predictions_{args.split}.csv"
              + ("" if result.multilabel else f", confusion_matrix_{args.split}.png") + f" to {args.out_dir}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from celltune.errors import ExistsError
    from celltune.images import names_channel_files
    from celltune.predict import Predictor, inputs_under, predict_to_csv

    predictor = Predictor(args.checkpoint, tta=args.tta)
    card = predictor.card
    inputs = [Path(p) for p in args.images]
    # With per-channel files an image is named by its stem (data/abc for data/abc_red.png ...), which is no file.
    missing = [p for p in inputs if not p.exists() and not names_channel_files(card.channels)]
    if missing:
        raise MissingError(f"{missing[0]}: no such image or folder")
    folders = [p for p in inputs if p.is_dir()]
    files = [p for p in inputs if not p.is_dir()]
    out = Path(args.output)
    if folders and out.exists() and not (args.overwrite or args.resume):
        raise ExistsError(f"{out} exists; choose another --output, --resume it, or pass --overwrite")
    for pred in predictor.predict_paths(files, batch_size=args.batch_size):
        hits = (pred.above(predictor.class_names, predictor.thresholds) if card.multilabel
                else pred.topk(predictor.class_names, args.topk))
        print(f"{pred.path}: " + (", ".join(f"{c} {p:.3f}" for c, p in hits) or "(no label above threshold)"))
    if folders:
        paths = (p for folder in folders for p in inputs_under(folder, card.channels))
        written = predict_to_csv(predictor, paths, out, batch_size=args.batch_size, resume=args.resume)
        print(f"wrote {written} predictions to {out}")
    return 0


def cmd_summarize(args: argparse.Namespace) -> int:
    from celltune.data import discover, summarize

    s = summarize(discover(args.data, seed=args.seed, groups=args.groups, groups_csv=args.groups_csv))
    splits = list(s["counts"])
    width = max(len(c) for c in s["classes"]) + 2
    print(f"{args.data}: {s['layout']}, {len(s['classes'])} classes")
    print(f"{'class':<{width}}" + "".join(f"{sp:>8}" for sp in splits))
    for c in s["classes"]:
        print(f"{c:<{width}}" + "".join(f"{s['counts'][sp][c]:>8d}" for sp in splits))
    print(f"{'total':<{width}}" + "".join(f"{s['totals'][sp]:>8d}" for sp in splits))
    sizes = s["image_sizes"]
    print(f"image sizes: most common {', '.join(sizes['most_common'])}; min {sizes['min'][0]}x{sizes['min'][1]}, "
          f"max {sizes['max'][0]}x{sizes['max'][1]}; modes {s['modes']}")
    if "groups" in s:
        print("groups: " + ", ".join(f"{split} {n}" for split, n in s["groups"].items()))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    import json
    import time

    from celltune.audit import audit
    from celltune.data import discover
    from celltune.findings import format_findings
    from celltune.progress import bar

    found = discover(args.data, val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed,
                     label_names=args.label_names, groups=args.groups, groups_csv=args.groups_csv)
    start = time.perf_counter()
    with bar(len(found.samples), "reading") as reading:
        result = audit(found, args.data, mask_dir=args.mask_dir, fractions=(args.val_fraction, args.test_fraction),
                       workers=args.workers, progress=reading.update)
    counts = {level: sum(f.level == level for f in result.findings) for level in ("error", "warning")}
    print(f"{args.data}: {found.layout}, {len(found.class_names)} classes, {len(result.facts)} files read in "
          f"{time.perf_counter() - start:.1f} s\n")
    print(format_findings(result.findings) or "no findings")
    print(f"\n{counts['error']} error(s), {counts['warning']} warning(s)")
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        print(f"every finding with all its files: {args.json}")
    return 1 if counts["error"] else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from celltune.demo import demo_config
    from celltune.train import fit

    config = demo_config(data=args.data, workdir=Path(args.workdir), epochs=args.epochs,
                         max_steps_per_epoch=args.max_steps_per_epoch)
    print(f"demo: fine-tuning {config.model.name} on {config.data.root}" + ("" if args.data else
                                                                            " (SYNTHETIC cells)"))
    _print_run(fit(config))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from celltune.models import available_models

    print("\n".join(n for n in available_models() if args.filter in n))
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    width = max(map(len, recipe_names())) + 2
    for name in recipe_names():
        print(f"{name:<{width}}{recipe_summary(name)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="celltune", description="Fine-tune ImageNet-pretrained CNNs on cell, "
                                     "microscopy and medical images; honest metrics and a report in one command.")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="VERB")

    p = sub.add_parser("train", help="fine-tune a pretrained model")
    p.add_argument("--recipe", "--config", dest="recipe", metavar="NAME|FILE",
                   help="a packaged recipe (`celltune recipes`) or a YAML file; flags given here override it")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run in its own directory")
    add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score a checkpoint on a labelled split")
    p.add_argument("checkpoint", help="run directory or best.pt")
    p.add_argument("--data", required=True, help="the data folder, in any layout training reads")
    p.add_argument("--split", default="test", choices=get_args(Split))
    p.add_argument("--out-dir", help="write metrics, predictions and confusion matrix here")
    p.add_argument("--batch-size", type=int, default=64)
    add_flags(p, EvalConfig, with_defaults=True)
    p.add_argument("--mask-dir", help="masks with the images' file names, as in training")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="class probabilities for images; folders go to a CSV")
    p.add_argument("checkpoint", help="run directory or best.pt")
    p.add_argument("images", nargs="+", help="image files and/or folders")
    p.add_argument("--topk", type=int, default=3)
    p.add_argument("--output", default="predictions.csv", help="CSV for folder arguments")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    p.add_argument("--resume", action="store_true", help="continue an interrupted --output CSV, skipping done images")
    p.add_argument("--batch-size", type=int, default=64)
    add_flags(p, EvalConfig, with_defaults=True)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("summarize", help="counts per class and split, image sizes")
    p.add_argument("data")
    p.add_argument("--seed", type=int, default=0, help="seed of the split for a single class-folder tree")
    add_flags(p, DataConfig, only={"groups", "groups_csv"})
    p.set_defaults(func=cmd_summarize)

    p = sub.add_parser("check", help="every problem of a dataset at once: unreadable files, duplicates and leaks, "
                       "classes, masks, groups, confounds (exit 1 on errors)")
    p.add_argument("data", help="the data folder, in any layout training reads")
    add_flags(p, DataConfig, only={"mask_dir", "groups", "groups_csv", "val_fraction", "test_fraction", "seed",
                                   "label_names"}, with_defaults=True)
    p.add_argument("--json", metavar="FILE", help="write every finding with all its files here")
    p.add_argument("--workers", type=int, default=None, help="reading processes (default: the cores, at most 4)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("demo", help="fine-tune the offline pretrained model on synthetic HEp-2-like cells")
    p.add_argument("--data", help="run the same recipe on this real data folder instead")
    p.add_argument("--workdir", default="celltune-demo", help="where the synthetic data and the runs go")
    p.add_argument("--epochs", type=int, default=None)
    add_flags(p, OptimConfig, only={"max_steps_per_epoch"})
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("models", help="list model names")
    p.add_argument("filter", nargs="?", default="")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("recipes", help="list the packaged training recipes")
    p.set_defaults(func=cmd_recipes)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("lightning.pytorch").propagate = False  # Lightning prints its own lines already
    try:
        return args.func(args)
    except CelltuneError as err:
        print(f"celltune: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
