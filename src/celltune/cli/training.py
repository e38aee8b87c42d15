"""``celltune train``, ``cv`` and ``demo``: fine-tuning from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from celltune.cli.output import print_run
from celltune.config import OptimConfig, TrainConfig, config_from_dict
from celltune.config.flags import add_config_flags, add_flags, given_options
from celltune.config.recipes import load_config


def _train_config(args: argparse.Namespace) -> TrainConfig:
    """The recipe (or the resumed run's config), then the flags given."""
    given = given_options(args)
    source = Path(args.resume) / "config.yaml" if args.resume else args.recipe
    return load_config(source, given) if source else config_from_dict(given, source="command line")


def cmd_train(args: argparse.Namespace) -> int:
    from celltune.training.fit import fit

    print_run(fit(_train_config(args), resume=args.resume))
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    import json

    from celltune.errors import ConfigError
    from celltune.training.crossval import collect_cv, fold_runs, run_cv

    if (args.resume or args.collect) and (given_options(args) or args.recipe or args.folds is not None
                                          or args.repeats is not None):
        # the folds and repeats are the plan's (CV_DIR/cv_plan.json): a --repeats 3 here would do nothing
        raise ConfigError("--resume and --collect take a cross-validation as it was set up (its options, folds and "
                          "repeats in CV_DIR): give them alone; for other folds or repeats start a new one")
    if args.fold is not None and not args.resume:
        raise ConfigError("--fold K trains one fold of a planned cross-validation: celltune cv --resume CV_DIR "
                          "--fold K (plan one with celltune cv --data DATA --folds N --plan-only)")
    if args.collect:
        parent = collect_cv(args.collect)
    else:
        config = _train_config(argparse.Namespace(**{**vars(args), "resume": None}))
        # only what was given: run_cv's own defaults stand for the rest (None marks a flag not given, for --resume)
        given_counts = {name: value for name, value in (("folds", args.folds), ("repeats", args.repeats))
                        if value is not None}
        parent = run_cv(config, **given_counts, resume=args.resume, fold=args.fold, plan_only=args.plan_only)
        if args.plan_only:
            runs = fold_runs(json.loads((parent / "cv_plan.json").read_text()))
            print(f"planned {runs} fold runs: {parent}\nrun each (any machine that sees this folder), e.g. as a "
                  f"SLURM array 1-{runs}:\n  celltune cv --resume {parent} --fold K\nthen:\n  celltune cv "
                  f"--collect {parent}")
            return 0
        if args.fold is not None:
            print(f"fold {args.fold} done: {parent / f'fold-{args.fold}'}\nwhen every fold is done: celltune cv "
                  f"--collect {parent}")
            return 0
    s = json.loads((parent / "cv.json").read_text())
    widths = {m: max(len(s["labels"][m]), 17) + 3 for m in s["headline"]}
    repeats = s.get("repeats", 1)
    print(f"\n{s['folds']}-fold cross-validation{f', {repeats} times on new folds' if repeats > 1 else ''}, "
          f"{s['images']} images: {parent}\n")
    print(f"{'':<20}" + "".join(f"{s['labels'][m]:>{widths[m]}}" for m in s["headline"]))
    for row in s["per_fold"]:
        name = f"fold {row['fold']}" + (f" (repeat {row['repeat']})" if repeats > 1 else "")
        print(f"{name:<20}" + "".join(f"{row[m]:>{widths[m]}.4f}" for m in s["headline"]))
    print(f"{'mean +- std':<20}" + "".join(f"{s['mean'][m]:.4f} +- {s['std'][m]:.4f}".rjust(widths[m])
                                          for m in s["headline"]))
    pooled = "pooled out-of-fold" + (" (repeat 1)" if repeats > 1 else "")
    print(f"{pooled:<20}" + "".join(f"{s['pooled'][m]:>{widths[m]}.4f}" for m in s["headline"]))
    if s["pooled"].get("ci"):
        print(f"{'  95% CI':<20}" + "".join("{:.4f}-{:.4f}".format(*s["pooled"]["ci"][m]).rjust(widths[m])
                                            for m in s["headline"]))
    clean = s["pooled"].get("without_twins")
    if clean and clean["images"]:
        print(f"{'without seen copies':<20}" + "".join(f"{clean[m]:>{widths[m]}.4f}" for m in s["headline"])
              + f"   ({clean['left_out']} held-out image(s) with an exact copy in their fold's training left out)")
    print(f"\nreport: {parent / 'cv.html'}; out-of-fold predictions: {parent / 'oof_predictions.csv'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from celltune.training.demo import demo_config
    from celltune.training.fit import fit

    config = demo_config(data=args.data, workdir=Path(args.workdir), epochs=args.epochs,
                         max_steps_per_epoch=args.max_steps_per_epoch)
    print(f"demo: fine-tuning {config.model.name} on {config.data.root}" + ("" if args.data else
                                                                            " (SYNTHETIC cells)"))
    print_run(fit(config))
    return 0


def _folds(text: str) -> int | str:
    if text == "groups":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--folds {text}: a number of folds, or groups") from None


def register(sub) -> None:
    p = sub.add_parser("train", help="fine-tune a pretrained model")
    p.add_argument("--recipe", "--config", dest="recipe", metavar="NAME|FILE",
                   help="a packaged recipe (`celltune recipes`) or a YAML file; flags given here override it")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run in its own directory")
    add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("cv", help="stratified (grouped) k-fold cross-validation: a run per fold, mean +- std, "
                       "pooled out-of-fold result")
    p.add_argument("--folds", type=_folds, metavar="N|groups",
                   help="folds, every image held out once (default: 5); groups: one fold per group of --groups, each "
                   "held out in turn (leave one group out)")
    p.add_argument("--repeats", type=int, metavar="R",
                   help="cross-validate R times, each on new folds with a new seed (R times the fold runs, sharing a "
                   "--time-budget); label_issues.csv then ranks on the out-of-fold probabilities averaged over the "
                   "repeats, which finds wrong labels more surely; the pooled result is the first repeat's "
                   "(default: 1)")
    p.add_argument("--recipe", "--config", dest="recipe", metavar="NAME|FILE",
                   help="a packaged recipe or a YAML file; flags given here override it")
    p.add_argument("--resume", metavar="CV_DIR", help="continue a killed cross-validation with its unfinished folds")
    p.add_argument("--plan-only", action="store_true",
                   help="plan the folds (CV_DIR/cv_plan.json) and stop, for folds run as separate jobs")
    p.add_argument("--fold", type=int, metavar="K", help="with --resume CV_DIR: train fold K of its plan alone "
                   "(one job of a cluster array; with a time budget, its share of it), no summary")
    p.add_argument("--collect", metavar="CV_DIR", help="the summary (cv.json, cv.html, out-of-fold predictions, "
                   "label issues) of a cross-validation whose folds were run with --fold")
    add_config_flags(p)
    p.set_defaults(func=cmd_cv)

    p = sub.add_parser("demo", help="fine-tune the offline pretrained model on synthetic HEp-2-like cells")
    p.add_argument("--data", help="run the same recipe on this real data folder instead")
    p.add_argument("--workdir", default="celltune-demo", help="where the synthetic data and the runs go")
    p.add_argument("--epochs", type=int, default=None)
    add_flags(p, OptimConfig, only={"max_steps_per_epoch"})
    p.set_defaults(func=cmd_demo)
