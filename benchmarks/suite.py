"""Benchmark suite: recipes on the four real cell sets in ../shared/data, each run with the same wall-clock budget, each
dataset's groups kept whole and one seeded split that every recipe shares.

    python benchmarks/suite.py                                  # recipes defaults and hep2 on every dataset, 10m a run
    python benchmarks/suite.py --recipe hep2 --recipe timm_modern --recipe mine.yaml --datasets mitocheck_hela16
    python benchmarks/suite.py --datasets herlev_pap7_40px --budget 1m --out-dir /tmp/suite   # a quick check
    python benchmarks/suite.py --table [--out-dir runs/suite]   # the table of what has run, running nothing

A recipe is a name below (``RECIPES``), a packaged celltune recipe or a YAML file of options (named by its stem). The
budget is celltune's time_budget: epochs planned from a probe of this machine, scoring and report held within it.
Each run appends a line to OUT/results.jsonl; the table (printed, and OUT/suite.md in Markdown) shows per dataset its
headline number on validation and on test with the test's 95% bootstrap interval, then each recipe's mean rank on
validation (where recipes are chosen) and on test (shown, not for choosing). ``--seed`` is celltune's one seed: the
split's and training's.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from hep2 import CHOSEN_MODEL, FOUNDATION

from celltune.config import TrainConfig, config_from_dict, flat_names
from celltune.config.durations import parse_duration
from celltune.config.recipes import load_config
from celltune.errors import CelltuneError
from celltune.metrics.results import result_from_dict
from celltune.models.checkpoint import BEST, read_checkpoint
from celltune.training.fit import fit

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
RESULTS = "results.jsonl"


@dataclass(frozen=True)
class Dataset:
    name: str
    folder: str  # under DATA
    metric: str  # the headline number: a field of celltune.metrics.results.ClassificationResult
    label: str
    published: str  # for reference: their protocol, not this suite's
    groups: str | None = None  # kept whole in every split (the data README's pattern)
    val_fraction: float = 0.15  # where celltune makes the split
    test_fraction: float = 0.15
    accept: tuple[str, ...] = ()  # data-check errors the published data has (celltune train --accept)

    @property
    def path(self) -> Path:
        return DATA / self.folder

    def options(self, seed: int) -> dict[str, Any]:
        return {"data": str(self.path), "groups": self.groups, "val_fraction": self.val_fraction,
                "test_fraction": self.test_fraction, "seed": seed, "accept": list(self.accept) or None}


DATASETS = {d.name: d for d in (
    Dataset("hep2_icpr2014", "hep2_icpr2014", "mean_class_accuracy", "ACA",
            "Gao et al. 2017: CNN 96.7% MCA (held-out part of the public training set)"),
    Dataset("mitocheck_hela16", "mitocheck_hela16", "macro_f1", "macro-F1",
            "Tomkinson et al. 2024: weighted F1 0.84 on 15 classes (Folded left out), split by cell; "
            "benchmarks/published.py scores a run so",
            groups=r"(PLLT.*?___P\d+_\d+)___T"),
    Dataset("crchisto_nuclei4", "crchisto_nuclei4", "weighted_f1", "weighted F1",
            "Sirinukunwattana et al. 2016: weighted F1 about 0.78 (2-fold CV over images)", groups=r"(img\d+)_",
            accept=("label-conflict",)),  # points labelled in two classes in the source; copies stay in one group
    Dataset("herlev_pap7_40px", "herlev_pap7_40px", "accuracy", "accuracy",
            "Lin et al. 2019: about 64.5% on 7 classes at full resolution (patient-level 5-fold CV)",
            val_fraction=0.2, test_fraction=0.2),  # 917 images: larger parts, so val and test are not tiny
)}

# Flat celltune options (as config_from_dict takes them); every run adds data, split, time_budget, out_dir and name.
RECIPES: dict[str, dict[str, Any]] = {
    "defaults": {},  # the product's defaults: celltune train --data D --time-budget B
    # the defaults before the suite chose them (2026-12-06): free rotation, no weight averaging, smoothing or TTA
    "previous_defaults": {"lr": 1e-3, "label_smoothing": 0.0, "ema": 0.0, "tta": "none", "rot90": False,
                          "rotation": 180.0},
    # the recipe chosen by hand on HEp-2 (benchmarks/hep2.py): the defaults' recipe with tf_efficientnet_lite0
    "hep2": {**{k: v for k, v in FOUNDATION.items() if k != "time_budget"}, "model": CHOSEN_MODEL},
}


def recipe_options(spec: str) -> tuple[str, dict[str, Any]]:
    """(name, flat options) of a name in RECIPES, a packaged celltune recipe or a YAML file; a recipe's options are
    those it sets away from celltune's defaults."""
    if spec in RECIPES:
        return spec, RECIPES[spec]
    given, default = load_config(spec).to_dict(), TrainConfig().to_dict()
    return Path(spec).stem, {name: given[s][f.name] for name, (s, f) in flat_names().items()
                             if given[s][f.name] != default[s][f.name]}


def run_one(recipe: str, options: Mapping[str, Any], dataset: Dataset, *, budget: str, seed: int,
            out_dir: Path) -> dict[str, Any]:
    """Train ``recipe`` on ``dataset`` within ``budget``; what it scored, as one results.jsonl line."""
    name = f"{dataset.name}-{recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    config = config_from_dict({**options, **dataset.options(seed), "time_budget": budget, "out_dir": str(out_dir),
                               "name": name}, source=f"recipe {recipe}")
    start = time.perf_counter()
    run_dir = fit(config)
    return record(run_dir, recipe, options, dataset, budget=budget, seed=seed, wall=time.perf_counter() - start)


def record(run_dir: Path, recipe: str, options: Mapping[str, Any], dataset: Dataset, *, budget: str, seed: int,
           wall: float) -> dict[str, Any]:
    """A finished run's results.jsonl line, from its metrics.json, config.yaml and (for a number that is not a
    headline one) best.pt."""
    m = json.loads((run_dir / "metrics.json").read_text())  # the test result, flat, beside best_val and epochs_run
    saved = load_config(run_dir / "config.yaml")
    val = m["best_val"].get(dataset.metric)
    if val is None:  # not a headline number (weighted F1): from the validation result kept with the best checkpoint
        val = getattr(result_from_dict(read_checkpoint(run_dir / BEST)["val_metrics"]), dataset.metric)
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "recipe": recipe, "options": dict(options),
            "dataset": dataset.name, "metric": dataset.metric, "budget": budget, "seed": seed, "val": val,
            "split": m["split"], "test": m[dataset.metric], "test_ci": m.get("ci", {}).get(dataset.metric),
            "test_accuracy": m["accuracy"], "test_aca": m["mean_class_accuracy"], "test_macro_f1": m["macro_f1"],
            "epochs": m["epochs_run"], "image_size": saved.data.image_size, "model": saved.model.name,
            "wall_seconds": round(wall, 1), "run_dir": str(run_dir)}


def mean_ranks(scores: Mapping[str, Mapping[str, float]],
               recipes: Sequence[str]) -> tuple[dict[str, float | None], list[str]]:
    """(each recipe's mean rank, the datasets ranked) from ``scores[dataset][recipe]`` (higher is better): rank 1 is
    the best, tied recipes share the mean of their places, and only datasets where every recipe has a score count."""
    ranked = [d for d, s in scores.items() if all(r in s for r in recipes)]
    total = dict.fromkeys(recipes, 0.0)
    for d in ranked:
        s = scores[d]
        for r in recipes:
            total[r] += 1 + sum(s[o] > s[r] for o in recipes) + (sum(s[o] == s[r] for o in recipes) - 1) / 2
    return {r: total[r] / len(ranked) if ranked else None for r in recipes}, ranked


@dataclass(frozen=True)
class Table:
    recipes: list[str]  # rows, in the order they first ran
    datasets: list[str]  # columns
    cells: dict[tuple[str, str], dict[str, Any]]  # (recipe, dataset) -> its latest results.jsonl line
    val_rank: dict[str, float | None]
    test_rank: dict[str, float | None]
    ranked: list[str]  # the datasets the ranks are over: those every recipe ran on


def table(records: Sequence[Mapping[str, Any]]) -> Table:
    """The suite's table from results.jsonl lines; a later line for a (recipe, dataset) replaces an earlier one."""
    cells = {(r["recipe"], r["dataset"]): dict(r) for r in records}
    recipes = list(dict.fromkeys(r["recipe"] for r in records))
    seen = {r["dataset"] for r in records}
    datasets = [d for d in DATASETS if d in seen] + sorted(seen - DATASETS.keys())

    def scores(key: str) -> dict[str, dict[str, float]]:
        return {d: {r: cells[r, d][key] for r in recipes if (r, d) in cells} for d in datasets}

    val_rank, ranked = mean_ranks(scores("val"), recipes)
    test_rank, _ = mean_ranks(scores("test"), recipes)
    return Table(recipes, datasets, cells, val_rank, test_rank, ranked)


def render(t: Table, *, markdown: bool = False) -> str:
    """The table as aligned text or Markdown, with what its cells mean and the published results beneath."""
    def cell(r: Mapping[str, Any] | None) -> str:
        if r is None:
            return "-"
        ci = r.get("test_ci")
        return f"{100 * r['val']:.2f} / {100 * r['test']:.2f}" + (
            f" [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]" if ci else "")

    def rank(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    label = {d: DATASETS[d].label if d in DATASETS else next(c["metric"] for (_, e), c in t.cells.items() if e == d)
             for d in t.datasets}
    header = ["recipe", *(f"{d} ({label[d]})" for d in t.datasets), "mean rank, val", "mean rank, test (not for "
              "choosing)"]
    rows = [[r, *(cell(t.cells.get((r, d))) for d in t.datasets), rank(t.val_rank[r]), rank(t.test_rank[r])]
            for r in t.recipes]
    notes = ["cells: the dataset's headline number in %, validation (best epoch) / test [test 95% bootstrap "
             "interval]; rank 1 is the best",
             f"ranks over {len(t.ranked)} of {len(t.datasets)} datasets (those every recipe ran on): "
             + (", ".join(t.ranked) or "none"),
             *(f"published, {d} ({label[d]}): {DATASETS[d].published}" for d in t.datasets if d in DATASETS)]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows), "", *(f"- {n}" for n in notes)])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    return "\n".join([*lines, "", *notes])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", action="append", metavar="NAME|FILE",
                   help=f"repeatable; one of {', '.join(RECIPES)} (the default: all of them), a packaged celltune "
                   "recipe or a YAML file of options")
    p.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS), metavar="NAME",
                   help=f"some of {', '.join(DATASETS)} (default: all)")
    p.add_argument("--budget", default="10m", help="wall-clock budget of each run (celltune's --time-budget)")
    p.add_argument("--out-dir", default="runs/suite")
    p.add_argument("--seed", type=int, default=0, help="the split's and training's seed, the same for every recipe")
    p.add_argument("--table", action="store_true", help="print the table of OUT/results.jsonl, running nothing")
    args = p.parse_args()
    out = Path(args.out_dir)
    failed = 0
    if not args.table:
        try:
            parse_duration(args.budget, flag="--budget")
            recipes = [recipe_options(spec) for spec in args.recipe or RECIPES]
        except CelltuneError as err:
            print(err, file=sys.stderr)
            return 2
        present = present_datasets(args.datasets)
        if not present:
            return 2
        for dataset in present:
            for recipe, options in recipes:
                line = recorded(out, f"{dataset.name} / {recipe}", partial(
                    run_one, recipe, options, dataset, budget=args.budget, seed=args.seed, out_dir=out))
                failed += line is None
    if not show_table(out):
        return 1 if failed else 2
    return 1 if failed else 0


def present_datasets(names: Sequence[str]) -> list[Dataset]:
    """The datasets of ``names`` whose data is there (the others named as skipped), with logging set up to run."""
    present = [DATASETS[name] for name in names if DATASETS[name].path.is_dir()]
    for name in sorted(set(names) - {d.name for d in present}):
        print(f"{name}: no data at {DATASETS[name].path}; skipped", file=sys.stderr)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    return present


def recorded(out: Path, what: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    """``run()``'s results.jsonl line, appended to OUT/results.jsonl; None (said) when it failed, so that one run
    failing (out of memory too) leaves the others to run."""
    try:
        line = run()
    except Exception as err:
        print(f"{what}: failed: {type(err).__name__}: {err}", file=sys.stderr)
        return None
    append_result(out, line)
    return line


def append_result(out: Path, record: Mapping[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / RESULTS).open("a") as f:
        f.write(json.dumps(record) + "\n")


def show_table(out: Path) -> bool:
    """Print the table of OUT/results.jsonl and write it to OUT/suite.md; False when nothing has run yet."""
    results = out / RESULTS
    if not results.is_file():
        print(f"{results}: no results yet", file=sys.stderr)
        return False
    t = table([json.loads(line) for line in results.read_text().splitlines() if line.strip()])
    print(render(t))
    (out / "suite.md").write_text(render(t, markdown=True) + "\n")
    return True


if __name__ == "__main__":
    sys.exit(main())
