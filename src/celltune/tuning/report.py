"""What a finished search leaves: the winner scored once on test (``winner.json``), its recipe as ``best.yaml``,
every trial as data (``tune.json``) and one offline page (``tune.html``): each trial's recipe, its validation curve,
where and why it stopped, and which settings mattered (``tuning.importance``)."""

from __future__ import annotations

import html
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from optuna.trial import FrozenTrial, TrialState

from celltune.config import TrainConfig
from celltune.config.recipes import load_config
from celltune.errors import CelltuneError
from celltune.metrics.results import RunMetrics
from celltune.reports.html import STYLE
from celltune.reports.run_files import html_table, img_tag, read_json, save_figure, write_json, write_whole
from celltune.tuning.folds import mean_headline
from celltune.tuning.importance import importance
from celltune.tuning.study import trial_seconds

try:
    import fcntl  # POSIX; elsewhere processes finishing at the same moment may both score the winner
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

WINNER = "winner.json"


def why_stopped(trial: FrozenTrial) -> str:
    epochs, folds = trial.user_attrs.get("epochs"), trial.user_attrs.get("fold_scores")
    step = "fold" if folds is not None else "epoch"  # what a cross-validated trial reports after
    if trial.state == TrialState.COMPLETE:
        return f"ran its {len(folds)} folds ({epochs} epochs each on average)" if folds else f"ran its {epochs} epochs"
    if trial.state == TrialState.PRUNED and "too_short" in trial.user_attrs:
        where = f"before fold {len(folds) + 1}" if folds else "before training"  # the folds before it trained
        return f"pruned {where}: {trial.user_attrs['too_short']}"
    if trial.state == TrialState.PRUNED:
        return (f"pruned after {step} {trial.user_attrs.get('pruned_after', trial.last_step)}: behind the trials "
                f"that reached that {step}")
    if trial.state == TrialState.FAIL:
        return f"failed: {trial.user_attrs.get('error', 'see the log')}"
    return trial.state.name.lower()


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """Every trial as plain data, in the order they began."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING:
            continue
        rows.append({"trial": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params,
                     "curve": {int(k): v for k, v in sorted(t.intermediate_values.items())},
                     "epochs": t.user_attrs.get("epochs"), "why": why_stopped(t), "seconds": trial_seconds(t),
                     "run_dir": t.user_attrs.get("run_dir")})
    return rows


Retrain = Callable[[FrozenTrial], Path]  # a cross-validated winner trained once more: its run directory


def score_winner(tune_dir: Path, winner: FrozenTrial, config: TrainConfig, *, has_test: bool,
                 retrain: Retrain | None = None) -> dict[str, Any]:
    """The winner's validation and (once per winner) test headline numbers, and how far validation overstated test.
    A cross-validated winner is first trained once more (``retrain``); its validation numbers are its folds' mean.
    Processes that finish at once take turns (a lock file), so the test split is scored once."""
    with (tune_dir / "winner.lock").open("w") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        return _score_winner(tune_dir, winner, config, has_test=has_test, retrain=retrain)


def _score_winner(tune_dir: Path, winner: FrozenTrial, config: TrainConfig, *, has_test: bool,
                  retrain: Retrain | None) -> dict[str, Any]:
    saved = read_json(tune_dir / WINNER) if (tune_dir / WINNER).is_file() else {}
    if saved.get("trial") == winner.number:
        return saved
    trial_dir = Path(winner.user_attrs["run_dir"])
    run_dir = trial_dir if retrain is None else retrain(winner)
    if retrain is None and config.eval.heatmaps:  # the winner is a trial, whose report left Grad-CAM out
        from celltune.evaluation.evaluate import draw_report_heatmaps

        draw_report_heatmaps(run_dir, data=config.data.root, seed=config.data.seed, mask_dir=config.data.mask_dir,
                             tta=config.eval.tta)
    run = RunMetrics.from_dict(read_json(run_dir / "metrics.json"))
    val, selection, epochs = run.result.headline(), run.result.selection, winner.user_attrs["epochs"]
    if retrain is not None:
        folds = len(winner.user_attrs["fold_scores"])
        val, selection, epochs = mean_headline(trial_dir), f"{selection}, mean of {folds} folds", run.epochs_run
    out: dict[str, Any] = {"trial": winner.number, "run_dir": str(run_dir), "params": winner.params,
                           "selection": selection, "val": val, "test": None, "epochs": epochs}
    if has_test:
        from celltune.evaluation.evaluate import evaluate_checkpoint

        try:
            test = evaluate_checkpoint(run_dir, data=config.data.root, split="test", seed=config.data.seed,
                                       out_dir=tune_dir / "winner", tta=config.eval.tta,
                                       mask_dir=config.data.mask_dir, bootstrap=config.eval.bootstrap, twins=True)
        except CelltuneError as err:  # e.g. an unreadable test image that --skip-unreadable let training pass
            log.warning("the winner could not be scored on test: %s; `celltune evaluate %s --split test` after "
                        "fixing it", err, run_dir)
            out["test_error"] = str(err)
        else:
            out["test"] = test.headline()
            out["test_ci"] = getattr(test, "ci", None)
            out["test_without_twins"] = test.without_twins
            out["overstated_by"] = {k: out["val"][k] - v for k, v in out["test"].items()}
    write_json(tune_dir / WINNER, out, default=str)
    return out


def write_best_recipe(tune_dir: Path, winner: FrozenTrial, scored: dict[str, Any], *, heatmaps: bool = True) -> Path:
    """best.yaml: the config of the winner's run (``scored``, from ``score_winner``) with its epochs fixed at those
    it ran, no time budget, a new run name, and ``heatmaps`` as the search was asked (its trials had none)."""
    config = load_config(Path(scored["run_dir"]) / "config.yaml").updated(
        time_budget=None, heatmaps=heatmaps, epochs=int(scored.get("epochs") or winner.user_attrs["epochs"]),
        name=None, out_dir="runs")
    path = tune_dir / "best.yaml"
    header = (f"# celltune tune's winner: trial {winner.number} of {tune_dir} (validation score "
              f"{winner.value:.4f}).\n# Rerun it with `celltune train --recipe {path}`; flags given there override "
              "it.\n")
    path.write_text(header + yaml.safe_dump(config.to_dict(), sort_keys=False))
    return path


def plot_curves(rows: list[dict[str, Any]], winner: int | None, *, step: str = "epoch") -> bytes:
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    for row in rows:
        if not row["curve"]:
            continue
        epochs, values = list(row["curve"]), list(row["curve"].values())
        style = {"linewidth": 2.5, "color": "black"} if row["trial"] == winner else {"linewidth": 1, "alpha": 0.7}
        ax.plot(epochs, values, linestyle="--" if row["state"] == "pruned" else "-", **style,
                label=f"trial {row['trial']}" + (" (winner)" if row["trial"] == winner else ""))
        if row["state"] == "pruned":
            ax.plot(epochs[-1], values[-1], "x", color="red")
    ax.set_xlabel(step)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs and folds are whole
    ax.set_ylabel("best validation score so far" if step == "epoch" else "mean validation score of the folds so far")
    ax.set_title("every trial (dashed and x: pruned there)")
    ax.grid(alpha=0.3)
    if len(rows) <= 12:
        ax.legend(fontsize=7)
    buf = io.BytesIO()
    save_figure(fig, buf)
    return buf.getvalue()


def plot_importance(shares: dict[str, float]) -> bytes:
    fig = Figure(figsize=(5, 0.4 * len(shares) + 1))
    ax = fig.add_subplot()
    names = list(shares)[::-1]
    ax.barh(names, [shares[n] for n in names])
    ax.set_xlabel("share of the validation score's variance")
    buf = io.BytesIO()
    save_figure(fig, buf)
    return buf.getvalue()


def _winner_html(winner: dict[str, Any] | None) -> str:
    if winner is None:
        return "<p>No trial has completed yet: no winner.</p>"
    lines = [f"<p>Trial {winner['trial']} ({html.escape(winner['run_dir'])}), chosen on validation "
             f"({winner['selection']}).</p>"]
    rows = [[name, f"{v:.4f}", "–" if winner["test"] is None else f"{winner['test'][name]:.4f}",
             "–" if winner["test"] is None else f"{winner['overstated_by'][name]:+.4f}"]
            for name, v in winner["val"].items()]
    lines.append(html_table(["", "validation", "test (scored once)", "validation minus test"], rows))
    clean = winner.get("test_without_twins")
    if clean and clean.get("images"):
        lines.append(f"<p>{clean['left_out']} test images have an exact copy among the training images; on the "
                     f"other {clean['images']}: " + ", ".join(f"{name} {clean[name]:.4f}" for name in winner["val"]
                                                              if name in clean) + ".</p>")
    if winner.get("test_error"):
        lines.append(f"<p>Not scored on test: {html.escape(winner['test_error'])}</p>")
    elif winner["test"] is None:
        lines.append("<p>This data has no test split: the validation score, which chose the winner, overstates "
                     "what to expect on new images.</p>")
    return "".join(lines)


def write_tune_report(tune_dir: Path, rows: list[dict[str, Any]], winner: dict[str, Any] | None,
                      shares: dict[str, float] | None, basis: str, *, folds: int = 1) -> Path:
    counts = {s: sum(r["state"] == s for r in rows) for s in ("complete", "pruned", "fail", "running")}
    trials = html_table(["trial", "state", "validation", "epochs", "seconds", "why it stopped", "recipe"], [
        [str(r["trial"]), r["state"], "–" if r["value"] is None else f"{r['value']:.4f}", str(r["epochs"] or "–"),
         "–" if r["seconds"] is None else f"{r['seconds']:.0f}", r["why"],
         ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items())]
        for r in rows])
    winner_trial = winner["trial"] if winner else None
    curves = plot_curves(rows, winner_trial, step="fold" if folds > 1 else "epoch")
    matter = f"<p>{'' if shares is None else 'Computed on '}{html.escape(basis)}.</p>"
    if shares is not None:
        matter += img_tag(plot_importance(shares), "setting importance")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>celltune tune</title><style>{STYLE}</style>"
            f"</head><body><h1>celltune tune: {html.escape(str(tune_dir))}</h1>"
            f"<p>{len(rows)} trials: {counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} "
            f"failed, {counts['running']} running. {_chosen_on(folds)}</p><h2>Winner</h2>{_winner_html(winner)}"
            f"<h2>Curves</h2>{img_tag(curves, 'validation curves')}"
            f"<h2>Which settings mattered</h2>{matter}<h2>Trials</h2>{trials}</body></html>")
    path = tune_dir / "tune.html"
    write_whole(path, page)
    return path


def _chosen_on(folds: int) -> str:
    if folds == 1:
        return "Trials were chosen on the validation split."
    return (f"Trials were chosen on the mean of {folds} folds of the training and validation images (groups whole); "
            "the winner was then trained once more on the training split and scored on test.")


def finish_tune(tune_dir: Path, study: optuna.Study, config: TrainConfig, *, has_test: bool,
                retrain: Retrain | None = None, folds: int = 1) -> dict[str, Any]:
    """Score the winner (``retrain`` it first when chosen on ``folds``), write best.yaml, tune.json and tune.html;
    returns tune.json's data."""
    rows = trial_rows(study)
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    winner = None
    if complete:
        best = max(complete, key=lambda t: t.value if t.value is not None else float("-inf"))
        winner = score_winner(tune_dir, best, config, has_test=has_test, retrain=retrain)
        write_best_recipe(tune_dir, best, winner, heatmaps=config.eval.heatmaps)
    else:
        log.warning("%s: no trial completed; no winner", tune_dir)
    shares, basis = importance(study, folds=folds)
    summary = {"trials": rows, "winner": winner, "importance": shares, "importance_basis": basis, "folds": folds}
    write_json(tune_dir / "tune.json", summary, default=str)
    write_tune_report(tune_dir, rows, winner, shares, basis, folds=folds)
    return summary
