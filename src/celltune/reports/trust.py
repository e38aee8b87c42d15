"""The report's sections on how far its answers can be trusted: calibration (a reliability diagram, the error before
and after temperature scaling) and prediction sets (coverage and set sizes, per class)."""

from __future__ import annotations

import html
import io
from typing import BinaryIO

from matplotlib.figure import Figure

from celltune.metrics.results import Result
from celltune.reports.run_files import html_table, img_tag, save_figure


def plot_reliability(after: list[list[float]], before: list[list[float]] | None, out: BinaryIO) -> None:
    """Accuracy against confidence per bin (celltune.metrics.calibration.reliability), before and after temperature
    scaling; a disc's area grows with its images. On the diagonal a confidence means what it says."""
    fig = Figure(figsize=(4.2, 4.2))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    total = sum(n for *_, n in after) or 1
    after_label = "after temperature scaling" if before else "the model's probabilities"
    for bins, label, colour in ((before, "before temperature scaling", "tab:orange"), (after, after_label,
                                                                                     "tab:blue")):
        if not bins:
            continue
        conf, acc, n = [b[1] for b in bins], [b[2] for b in bins], [b[3] for b in bins]
        ax.plot(conf, acc, color=colour, linewidth=1, marker="o", markersize=3, label=label)
        ax.scatter(conf, acc, s=[10 + 400 * k / total for k in n], color=colour, alpha=0.4)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence (top class probability)")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    save_figure(fig, out)


def calibration_html(result: Result) -> str:
    """The calibration section: the temperature, the error before and after it, the reliability diagram."""

    info = result.calibration
    if not info:
        return ""
    temperature = info.get("temperature")
    text = ("<p>No temperature was fitted (<code>--calibrate none</code>, or too few validation images): the "
            "probabilities are the network's own.</p>" if not temperature else
            f"<p>Probabilities are divided in log space by a temperature of "
            f"{html.escape(', '.join(f'{t:.3g}' for t in temperature))}, fitted on the validation split after "
            "training (above 1: the network was over-confident). The answers stay the same; a probability of 0.9 "
            "is then right about nine times in ten.</p>")
    rows = [["before temperature scaling", f"{result.uncalibrated_ece:.4f}"]] if result.uncalibrated_ece is not None \
        else []
    if result.expected_calibration_error is not None:
        rows.append(["as reported", f"{result.expected_calibration_error:.4f}"])
    picture = ""
    if info.get("after"):
        buf = io.BytesIO()
        plot_reliability(info["after"], info.get("before"), buf)
        picture = f'<div class="figs">{img_tag(buf.getvalue(), "reliability diagram")}</div>'
    return (f"<h2>Calibration</h2>{text}" + (html_table(["", "expected calibration error"], rows) if rows else "")
            + picture)


def sets_html(result: Result) -> str:
    """The prediction-set section: for each coverage, how often the set held the true class and how large sets
    were, overall and per class."""

    summaries = result.prediction_sets
    if not summaries:
        return ""
    overall = [[f"{s['target']:.0%}", f"{s['covered']:.1%}", f"{s['mean_size']:.2f}", f"{s['to_review']:.1%}",
                ", ".join(f"{k}: {v}" for k, v in s["sizes"].items())] for s in summaries]
    names = list(summaries[0]["per_class"])
    per_class = [[name, *(f"{s['per_class'][name]['covered']:.1%} / {s['per_class'][name]['mean_size']:.2f}"
                          for s in summaries)] for name in names]
    return ("<h2>Prediction sets</h2><p>For each image, the fewest classes that hold the true one for the target "
            "share of images (split conformal prediction with adaptive sets, calibrated on the validation split). "
            "An image whose set holds more than one class is one for a person to look at; "
            "<code>celltune predict RUN IMAGES --coverage 0.95</code> gives the sets of new images.</p>"
            + html_table(["target", "held the true class", "mean set size", "more than one class",
                          "images per set size"], overall)
            + "<h3>Per true class (held / mean size)</h3>"
            + html_table(["class", *(f"{s['target']:.0%}" for s in summaries)], per_class))
