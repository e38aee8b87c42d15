"""Text the verbs print: results, runs, findings."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from celltune.metrics.results import Result


def _cell(value: object, width: int) -> str:
    if value is None:
        return f"{'-':>{width}}"
    return f"{value:>{width}d}" if isinstance(value, int) else f"{value:>{width}.4f}"


def format_result(result: Result) -> str:
    """The headline numbers, the per-class table and (single-label) the confusion matrix, as text."""
    from celltune.metrics.results import labelled

    headline = result.headline()

    def number(name: str, label: str, value: float) -> str:
        low_high = result.ci.get(name)
        return f"{label} {value:.4f}" + (f" (95% CI {low_high[0]:.4f}-{low_high[1]:.4f})" if low_high else "")

    lines = [f"images {result.num_samples}", *(f"  {number(name, label, value)}" for name, label, value in
                                              labelled(result) if name in headline), ""]
    clean = result.without_twins
    if clean is not None and clean["images"]:
        lines += [f"without the {clean['left_out']} image(s) whose exact copy is in training ({clean['images']} left):",
                  *(f"  {label} {clean[name]:.4f}" + (" (95% CI {:.4f}-{:.4f})".format(*clean["ci"][name])
                                                      if name in clean.get("ci", {}) else "")
                    for name, label, _ in labelled(result) if name in clean), ""]
    calibration = format_calibration(result)
    if calibration:
        lines += ["calibration:", calibration, ""]
    if result.prediction_sets:
        lines += [format_sets(result.prediction_sets), ""]
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


def print_run(run_dir: Path) -> None:
    from celltune.metrics.results import RunMetrics, labelled
    from celltune.reports.run_files import read_json
    from celltune.training.budget import PLAN, clock
    from celltune.training.runtime import global_rank

    if global_rank() != 0:
        return  # another process of a distributed run (torchrun, SLURM, Lightning's ddp): rank 0 reports
    run = RunMetrics.from_dict(read_json(run_dir / "metrics.json"))
    selection = run.result.selection
    label = next(label for name, label, _ in labelled(run.result) if name == selection)
    print(f"\nrun directory: {run_dir}")
    chosen = (f"best epoch {run.best_epoch} of {run.epochs_run}, validation {label} {run.best_val[selection]:.4f}"
              if run.best_val else f"{run.epochs_run} epochs without validation (no group could be spared for it): "
              "the last epoch's weights")
    print(f"{chosen}; {run.train_seconds:.0f} s, {run.fit_images_per_second:.1f} training images/s")
    if run.weights == "ema":
        print("the best checkpoint holds the averaged (EMA) weights, which scored better on validation")
    if (run_dir / PLAN).is_file():
        plan = read_json(run_dir / PLAN)
        print(f"time budget {clock(plan['budget_seconds'])}: {plan['epochs_run']} of {plan['epochs']} planned epochs "
              f"at {plan['image_size']} px, batch {plan['batch_size']}; finished in {clock(plan['finished_seconds'])}"
              + ("" if plan["within_budget"] else ", OVER the budget") + f" (plan and probe: {run_dir / PLAN})")
    print(f"\n{run.split} split:\n{format_result(run.result)}")
    print(f"\nreport: {run_dir / 'report.html'}")



def format_calibration(result: Result) -> str:
    """The temperature and the calibration error before and after it, as text; "" without a temperature."""
    temperature = (result.calibration or {}).get("temperature")
    if not temperature:
        return ""
    values = ", ".join(f"{t:.3g}" for t in temperature)
    before, after = result.uncalibrated_ece, result.expected_calibration_error
    lines = [f"  temperature {values} (fitted on validation)"]
    if before is not None and after is not None:
        lines.append(f"  expected calibration error {before:.4f} before, {after:.4f} after")
    return "\n".join(lines)


def format_sets(summaries: list[dict]) -> str:
    """How prediction sets did (celltune.metrics.conformal.set_summary), as text: each coverage, then per class at the
    last."""
    lines = ["prediction sets (split conformal, calibrated on validation):"]
    for s in summaries:
        lines.append(f"  target {s['target']:.0%}: held the true class for {s['covered']:.1%} of {s['images']} "
                     f"images; mean size {s['mean_size']:.2f}; {s['to_review']:.1%} with more than one class")
    last = summaries[-1]
    lines.append(f"  per class at {last['target']:.0%} (held, mean size): " + ", ".join(
        f"{name} {c['covered']:.1%} {c['mean_size']:.2f}" for name, c in last["per_class"].items()))
    return "\n".join(lines)
