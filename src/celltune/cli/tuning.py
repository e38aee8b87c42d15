"""``celltune tune``: search for this dataset's best recipe within a time budget (``celltune.tuning.search``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from celltune.config.flags import add_config_flags, given_options
from celltune.tuning.folds import AUTO_FOLDS, SMALL_VALIDATION


def cmd_tune(args: argparse.Namespace) -> int:
    import optuna

    from celltune.config import config_from_dict
    from celltune.config.recipes import load_config
    from celltune.errors import ConfigError
    from celltune.tuning.search import new_tune, run_tune

    optuna.logging.disable_default_handler()  # Optuna's lines through celltune's logging (and -q)
    optuna.logging.enable_propagation()
    given = given_options(args)
    if args.resume:
        extra = set(given) - {"time_budget"}
        if extra or args.recipe or args.space or args.trial_budget or args.trials is not None or args.storage or (
                args.folds != "auto"):
            raise ConfigError("--resume joins the search as it was set up: give it alone (with --time-budget for "
                              "how long this process searches)")
        tune_dir = Path(args.resume)
    else:
        config = load_config(args.recipe, given) if args.recipe else config_from_dict(given, source="command line")
        tune_dir = new_tune(config, space=args.space, trial_budget=args.trial_budget, max_trials=args.trials,
                            storage=args.storage, folds=args.folds)
        print(f"tune directory: {tune_dir} (another process or machine joins with `celltune tune --resume "
              f"{tune_dir}`)")
    run_tune(tune_dir, budget=given.get("time_budget") if args.resume else None)
    summary = json.loads((tune_dir / "tune.json").read_text())
    if summary.get("folds", 1) > 1:
        print(f"\ntrials chosen on {summary['folds']} folds of the training and validation images: "
              "'validation' is the folds' mean")
    print(f"\n{'trial':>5}  {'state':<9}{'validation':>11}{'epochs':>7}  why it stopped")
    for row in summary["trials"]:
        value = "-" if row["value"] is None else f"{row['value']:.4f}"
        print(f"{row['trial']:>5}  {row['state']:<9}{value:>11}{row['epochs'] or '-':>7}  {row['why']}")
    winner = summary["winner"]
    if winner is None:
        print("\nno trial completed: no winner yet; `celltune tune --resume` continues the search")
        return 1
    print(f"\nwinner: trial {winner['trial']}, {winner['params']}")
    for name, value in winner["val"].items():
        test = winner.get("test_error") or "no test split" if winner["test"] is None else (
            f"test {winner['test'][name]:.4f} (validation overstated it by {winner['overstated_by'][name]:+.4f})")
        print(f"  {name}: validation {value:.4f}, {test}")
    print(f"\nrerun the winner: celltune train --recipe {tune_dir / 'best.yaml'}\nreport: {tune_dir / 'tune.html'}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("tune", help="search for this data's best recipe within a time budget (Optuna: successive "
                       "halving on validation; the winner scored once on test)",
                       description="Trains trials (ordinary run directories) with recipes drawn from a search space "
                       "and stops those behind after each epoch; --time-budget is the whole search's; the other "
                       "options given are the base recipe every trial starts from.")
    p.add_argument("--recipe", "--config", dest="recipe", metavar="NAME|FILE",
                   help="the base recipe: a packaged recipe or a YAML file; flags given here override it")
    p.add_argument("--space", metavar="FILE", help="the search space, a YAML file (default: the packaged "
                   "celltune/tuning/space.yaml, which documents the format)")
    p.add_argument("--trial-budget", metavar="DURATION", help="each trial's time budget (default: a quarter of "
                   "--time-budget; without either, trials run --epochs)")
    p.add_argument("--trials", type=int, metavar="N", help="stop after N trials (all processes together)")
    p.add_argument("--storage", metavar="URL", help="the study's database (default: sqlite in the tune directory); "
                   "an RDB URL such as postgresql://host/db lets processes on several machines share it")
    p.add_argument("--folds", default="auto", metavar="N|auto",
                   help="choose trials on N folds of the training and validation images together (groups whole), "
                   "then train the winner once more on the training split; 1: on the validation split alone. auto "
                   f"(default): {AUTO_FOLDS} (at most one a group) where validation holds fewer than "
                   f"{SMALL_VALIDATION} images, else 1")
    p.add_argument("--resume", metavar="TUNE_DIR", help="continue a search, or join one from another process")
    add_config_flags(p)
    p.set_defaults(func=cmd_tune)
