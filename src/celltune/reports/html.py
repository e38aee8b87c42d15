"""``report.html``: one self-contained page per run (every image inline), readable offline in any browser."""

from __future__ import annotations

import html
import io
import json
from dataclasses import fields
from pathlib import Path

import numpy as np
from PIL import Image

from celltune.data.class_choice import describe
from celltune.data.images import read_image
from celltune.data.samples import Sample
from celltune.metrics.results import ClassificationResult, MultilabelResult, RunMetrics, labelled
from celltune.reports.run_files import html_table, img_tag, plot_confusion
from celltune.reports.trust import calibration_html, sets_html

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.figs img { max-width: 48%; margin-right: 1%; }
.thumbs { display: flex; flex-wrap: wrap; gap: 10px; }
.thumbs figure { margin: 0; width: 130px; font-size: 12px; }
.thumbs img { width: 128px; height: 128px; image-rendering: pixelated; border: 1px solid #999; }
.cams figure { margin: 0 0 1em; }
.cams img { max-width: 100%; }
.cams figcaption { font-size: 13px; }
pre { background: #f5f5f5; padding: 0.8em; overflow-x: auto; }
"""


def _png_file(path: Path) -> bytes:
    return path.read_bytes() if path.is_file() else b""


def _thumbnail(path: Path, size: int = 128) -> bytes:
    image = read_image(path)  # (3, H, W) in [0, 1]
    array = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(array).resize((size, size), Image.Resampling.NEAREST).save(buf, format="PNG")
    return buf.getvalue()


def worst_misclassified(samples: list[Sample], probs: np.ndarray,
                        k: int = 12) -> list[tuple[Sample, int, int, float]]:
    """Single-label mistakes, most confident first: (sample, true label, predicted label, its probability)."""
    predicted = probs.argmax(axis=1)
    wrong = [(i, s.label) for i, s in enumerate(samples) if isinstance(s.label, int) and predicted[i] != s.label]
    wrong.sort(key=lambda x: -probs[x[0], predicted[x[0]]])
    return [(samples[i], true, int(predicted[i]), float(probs[i, predicted[i]])) for i, true in wrong[:k]]


def _fmt(x: float | int | str | None) -> str:
    if x is None:
        return "–"
    return x if isinstance(x, str) else str(x) if isinstance(x, int) else f"{x:.4f}"


def _summary(run: RunMetrics) -> str:
    """Every labelled number of the result, then how the best epoch was chosen."""
    result = run.result

    def ci(name: str) -> str:
        return f"{result.ci[name][0]:.4f} – {result.ci[name][1]:.4f}" if name in result.ci else ""

    rows = [[label, _fmt(value), ci(name)] for name, label, value in labelled(result)]
    selection = next(f.metadata["label"] for f in fields(result) if f.name == result.selection)
    rows += [["test-time augmentation", result.tta, ""]]
    rows += ([["best epoch", f"{run.best_epoch} of {run.epochs_run}", ""],
              [f"best validation {selection}", _fmt(run.best_val.get(result.selection)), ""]] if run.best_val else
             [["validation", f"none (no group could be spared for it): the weights after the last of "
                             f"{run.epochs_run} epochs", ""]])
    return html_table(["metric", "value", "95% confidence interval (bootstrap)"], rows) + _without_twins(run)


def _without_twins(run: RunMetrics) -> str:
    """The headline numbers on the scored images without an exact copy in training, when some have one."""
    clean = run.result.without_twins
    if clean is None or not clean["images"]:
        return ""
    result = run.result

    def ci(name: str) -> str:
        return "{:.4f} – {:.4f}".format(*clean["ci"][name]) if name in clean.get("ci", {}) else ""

    rows = [[label, _fmt(clean[name]), ci(name)] for name, label, _ in labelled(result) if name in clean]
    return (f"<p>{clean['left_out']} of the {result.num_samples} {html.escape(run.split)} images have an exact copy "
            "(the same pixels) among the training images: the model has seen them. On the other "
            f"{clean['images']}:</p>" + html_table(["metric", "value", "95% confidence interval (bootstrap)"], rows))


def _per_class(result: ClassificationResult | MultilabelResult) -> str:
    columns = [label for _, label, _ in labelled(result.per_class[0])] if result.per_class else []
    rows = [[row.name, *(_fmt(v) for _, _, v in labelled(row))] for row in result.per_class]
    return html_table(["label" if result.multilabel else "class", *columns], rows)


def _multilabel_sections(run: RunMetrics) -> str:
    return (f"<h2>Result on the {html.escape(run.split)} split (multi-label)</h2>{_summary(run)}"
            "<h2>Per label</h2><p>Thresholds tuned per label on the validation split for the best F1.</p>"
            + _per_class(run.result) + calibration_html(run.result))


def _single_label_sections(run: RunMetrics, samples: list[Sample], probs: np.ndarray, run_dir: Path) -> str:
    result = run.result
    assert isinstance(result, ClassificationResult)
    names = result.class_names
    confused = [[p.true, p.predicted, str(p.count), f"{p.fraction_of_true:.3f}"] for p in result.most_confused]
    normalized = io.BytesIO()
    plot_confusion(result.confusion_matrix, names, normalized, title="fraction of each true class", normalized=True)
    thumbs = "".join(
        f"<figure>{img_tag(_thumbnail(s.path), s.path.name) if s.path.is_file() else ''}"
        f"<figcaption>{html.escape(s.path.name)}<br>"
        f"true <b>{html.escape(names[true])}</b><br>predicted <b>{html.escape(names[p])}</b> {conf:.2f}"
        f"</figcaption></figure>"
        for s, true, p, conf in worst_misclassified(samples, probs))
    return f"""<h2>Result on the {html.escape(run.split)} split</h2>
{_summary(run)}
<h2>Per class</h2>
{_per_class(result)}
<h2>Confusion matrix</h2>
<div class="figs">{img_tag(_png_file(run_dir / "confusion_matrix.png"), "confusion matrix, counts")}
{img_tag(normalized.getvalue(), "confusion matrix, normalised")}</div>
<h3>Most confused pairs</h3>
{html_table(["true", "predicted as", "count", "fraction of true"], confused) if confused else "<p>none</p>"}
<h2>Most confident mistakes</h2>
<div class="thumbs">{thumbs or "<p>no misclassified images</p>"}</div>
{calibration_html(result)}
{sets_html(result)}
"""


def _data_checks(run_dir: Path) -> str:
    """The findings the checks before training made (data_checks.json), with the first files of each."""
    path = run_dir / "data_checks.json"
    findings = json.loads(path.read_text())["findings"] if path.is_file() else []
    if not findings:
        return "<p>The checks before training (unreadable images, classes, masks, groups, exact duplicates) found " \
               "nothing. <code>celltune check DATA</code> also looks for near-duplicates and confounds.</p>"
    rows = [[f["level"], f["message"], f["fix"], str(len(f["items"])),
             "; ".join(f["items"][:3]) + (" ..." if len(f["items"]) > 3 else "")] for f in findings]
    return (html_table(["level", "finding", "fix", "items", "first items"], rows)
            + "<p>Every item: <code>data_checks.json</code>; more checks: <code>celltune check DATA</code>.</p>")


def _heatmaps(heatmaps: list[tuple[str, bytes]] | str | None) -> str:
    if heatmaps is None:
        return ""
    if isinstance(heatmaps, str):  # why there are none: no description of pictures that are not there
        return f"<h2>Where the model looked</h2><p>{html.escape(heatmaps)}</p>"
    intro = ("<h2>Where the model looked</h2><p>Grad-CAM at the last convolutional stage: red where the image most "
             "supported the answer shown (for a mistake, the wrong answer). First the most confident mistakes, then "
             "the most confident correct image of each class. More with <code>celltune explain RUN IMAGES</code>."
             "</p>")
    figures = "".join(f"<figure>{img_tag(png, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>"
                      for caption, png in heatmaps)
    return intro + f'<div class="cams">{figures or "<p>no images to explain</p>"}</div>'


def write_report(run_dir: Path, *, run: RunMetrics, samples: list[Sample], probs: np.ndarray,
                 heatmaps: list[tuple[str, bytes]] | str | None = None) -> Path:
    """Write ``run_dir/report.html`` from ``run`` and the files the run wrote (config, dataset summary, plots);
    ``heatmaps``: (caption, PNG) pictures from ``celltune.explain.heatmaps.report_heatmaps``, or why there are none."""
    dataset = json.loads((run_dir / "dataset.json").read_text())
    config = (run_dir / "config.yaml").read_text()
    splits = list(dataset["counts"])
    counts = [[c, *(str(dataset["counts"][s][c]) for s in splits)] for c in dataset["classes"]]
    counts.append(["total images", *(str(dataset["totals"][s]) for s in splits)])
    if "groups" in dataset:  # patients, slides: each whole in one split
        counts.append(["groups", *(str(dataset["groups"].get(s, 0)) for s in splits)])
    sizes = dataset["image_sizes"]
    multilabel = run.result.multilabel
    body = _multilabel_sections(run) if multilabel else _single_label_sections(run, samples, probs, run_dir)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>celltune report: {html.escape(run_dir.name)}</title>
<style>{STYLE}</style></head><body>
<h1>celltune report: {html.escape(run_dir.name)}</h1>
{body}
{_heatmaps(heatmaps)}
<h2>Training curves</h2>
<div class="figs">{img_tag(_png_file(run_dir / "loss.png"), "loss")}
{img_tag(_png_file(run_dir / "accuracy.png"), "accuracy")}</div>
<h2>Data checks</h2>
{_data_checks(run_dir)}
<h2>Dataset</h2>
<p>{html.escape(dataset["layout"])}; image sizes: most common {html.escape(", ".join(sizes["most_common"]))},
min {sizes["min"][0]}x{sizes["min"][1]}, max {sizes["max"][0]}x{sizes["max"][1]}</p>
{html_table(["label (images)" if multilabel else "class", *splits], counts)}
{left_out_html(dataset.get("classes_left_out", {}))}
<h2>Configuration</h2>
<pre>{html.escape(config)}</pre>
</body></html>
"""
    path = run_dir / "report.html"
    path.write_text(page)
    return path


def left_out_html(left_out: dict[str, dict]) -> str:
    """A paragraph naming the classes left out of every split and score (``celltune.data.class_choice``), or nothing."""
    return f"<p>Classes left out of every split and score: {html.escape(describe(left_out))}.</p>" if left_out else ""


def _label_issues(issues: dict | None) -> str:
    """The images whose given label looks most likely wrong, as thumbnails with the given and suggested label."""
    if not issues:
        return ""
    figures = "".join(
        f"<figure>{img_tag(_thumbnail(Path(i['path'])), Path(i['path']).name) if Path(i['path']).is_file() else ''}"
        f"<figcaption>{html.escape(Path(i['path']).name)}<br>given <b>{html.escape(i['given'])}</b><br>suggested "
        f"<b>{html.escape(i['suggested'])}</b> (label quality {i['quality']:.2f})</figcaption></figure>"
        for i in issues["top"])
    return (f"<h2>Labels that look wrong</h2><p>Confident learning (cleanlab) on the out-of-fold probabilities flags "
            f"{issues['flagged']} image(s); <code>label_issues.csv</code> ranks every image, most likely wrongly "
            f"labelled first. The first {len(issues['top'])}, for a person to look at:</p>"
            f'<div class="cams">{figures}</div>')


def _repeated(repeats: int) -> str:
    return (f", in each of {repeats} repeats on new folds (labels that look wrong are ranked on the out-of-fold "
            "probabilities averaged over the repeats)") if repeats > 1 else ""


def write_cv_report(parent: Path, summary: dict) -> Path:
    """``parent/cv.html``: the folds side by side, mean and standard deviation, per-class numbers across folds and
    the pooled out-of-fold result with its confusion matrix (single-label)."""
    headline, labels, pooled = summary["headline"], summary["labels"], summary["pooled"]
    repeats = summary.get("repeats", 1)
    names = [f"fold {r['fold']}" + (f" (repeat {r['repeat']})" if repeats > 1 else "") for r in summary["per_fold"]]
    rows = [[name, str(r["images"]), *(_fmt(r[m]) for m in headline)]
            for name, r in zip(names, summary["per_fold"], strict=True)]
    rows.append(["mean ± std", "", *(f"{summary['mean'][m]:.4f} ± {summary['std'][m]:.4f}" for m in headline)])
    def with_ci(numbers: dict, m: str) -> str:
        low_high = numbers.get("ci", {}).get(m)
        return _fmt(numbers[m]) + (f" ({low_high[0]:.4f} – {low_high[1]:.4f})" if low_high else "")

    pooled_name = "pooled out-of-fold" + (" (repeat 1)" if repeats > 1 else "")
    rows.append([pooled_name, str(summary["images"]), *(with_ci(pooled, m) for m in headline)])
    clean = pooled.get("without_twins")
    if clean and clean["images"]:  # held-out images with an exact copy in their fold's training part left out
        rows.append(["pooled, without images seen in their fold's training", str(clean["images"]),
                     *(with_ci(clean, m) for m in headline)])
    metric = summary["per_class_metric"]
    per_class = [[c, f"{v['mean']:.4f} ± {v['std']:.4f}", *(_fmt(x) for x in v["per_fold"])]
                 for c, v in summary["per_class"].items()]
    matrix = ""
    if not pooled.get("multilabel"):
        png = io.BytesIO()
        plot_confusion(pooled["confusion_matrix"], pooled["class_names"], png,
                       title="out-of-fold: fraction of each true class", normalized=True)
        matrix = ("<h2>Pooled out-of-fold confusion matrix</h2>"
                  f"<div class=\"figs\">{img_tag(png.getvalue(), 'confusion matrix')}</div>")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>celltune cross-validation: {html.escape(parent.name)}</title>
<style>{STYLE}</style></head><body>
<h1>celltune cross-validation: {html.escape(parent.name)}</h1>
<p>{summary['folds']} folds; every one of the {summary['images']} images held out once{_repeated(repeats)}.
Each fold is a run directory (<code>fold-1</code> ...) with its own report; <code>oof_predictions.csv</code> holds the
out-of-fold predictions.</p>
{left_out_html(summary.get("classes_left_out", {}))}
<h2>Per fold</h2>
{html_table(["", "images", *(labels[m] for m in headline)], rows)}
<h2>Per class ({html.escape(metric)} across folds)</h2>
{html_table(["class", "mean ± std", *(f"fold {r['fold']}" for r in summary['per_fold'])], per_class)}
{matrix}
{_label_issues(summary.get("label_issues"))}
</body></html>
"""
    path = parent / "cv.html"
    path.write_text(page)
    return path
