"""``report.html``: one self-contained page per run (every image inline), readable offline in any browser."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from celltune.data import Sample, read_image
from celltune.report import plot_confusion

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.figs img { max-width: 48%; margin-right: 1%; }
.thumbs { display: flex; flex-wrap: wrap; gap: 10px; }
.thumbs figure { margin: 0; width: 130px; font-size: 12px; }
.thumbs img { width: 128px; height: 128px; image-rendering: pixelated; border: 1px solid #999; }
pre { background: #f5f5f5; padding: 0.8em; overflow-x: auto; }
"""


def _img_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


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


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.4f}"


def _multilabel_sections(metrics: dict) -> str:
    summary = [["macro-F1", _fmt(metrics["macro_f1"])], ["micro-F1", _fmt(metrics["micro_f1"])],
               ["micro precision / recall", f"{metrics['micro_precision']:.4f} / {metrics['micro_recall']:.4f}"],
               ["exact match (all labels right)", _fmt(metrics["exact_match"])],
               ["ROC AUC (macro over labels)", _fmt(metrics.get("roc_auc_macro"))],
               ["images", str(metrics["num_samples"])], ["test-time augmentation", metrics.get("tta", "none")],
               ["best epoch", f"{metrics['best_epoch']} of {metrics['epochs_run']}"],
               ["best validation macro-F1 (at 0.5)", _fmt(metrics["best_val"]["macro_f1"])]]
    per_label = [[c, str(r["support"]), f"{r['frequency']:.3f}", f"{r['threshold']:.2f}", _fmt(r["precision"]),
                  _fmt(r["recall"]), _fmt(r["f1"]), _fmt(r.get("roc_auc"))] for c, r in metrics["per_class"].items()]
    return (f"<h2>Result on the {html.escape(metrics['split'])} split (multi-label)</h2>"
            f"{_table(['metric', 'value'], summary)}<h2>Per label</h2><p>Thresholds tuned per label on the "
            "validation split for the best F1.</p>"
            + _table(["label", "images", "frequency", "threshold", "precision", "recall", "F1", "ROC AUC"],
                     per_label))


def write_report(run_dir: Path, *, samples: list[Sample], probs: np.ndarray) -> Path:
    """Write ``run_dir/report.html`` from the files the run wrote (config, dataset, metrics, plots)."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    dataset = json.loads((run_dir / "dataset.json").read_text())
    config = (run_dir / "config.yaml").read_text()
    names = metrics["class_names"]
    splits = list(dataset["counts"])
    counts = [[c, *(str(dataset["counts"][s][c]) for s in splits)] for c in dataset["classes"]]
    counts.append(["total images", *(str(dataset["totals"][s]) for s in splits)])
    sizes = dataset["image_sizes"]
    if metrics.get("multilabel"):
        body = _multilabel_sections(metrics)
    else:
        body = _single_label_sections(metrics, names, samples, probs, run_dir)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>celltune report: {html.escape(run_dir.name)}</title>
<style>{_STYLE}</style></head><body>
<h1>celltune report: {html.escape(run_dir.name)}</h1>
{body}
<h2>Training curves</h2>
<div class="figs">{_img_tag(_png_file(run_dir / "loss.png"), "loss")}
{_img_tag(_png_file(run_dir / "accuracy.png"), "accuracy")}</div>
<h2>Dataset</h2>
<p>{html.escape(dataset["layout"])}; image sizes: most common {html.escape(", ".join(sizes["most_common"]))},
min {sizes["min"][0]}x{sizes["min"][1]}, max {sizes["max"][0]}x{sizes["max"][1]}</p>
{_table(["class" if not metrics.get("multilabel") else "label (images)", *splits], counts)}
<h2>Configuration</h2>
<pre>{html.escape(config)}</pre>
</body></html>
"""
    path = run_dir / "report.html"
    path.write_text(page)
    return path


def _single_label_sections(metrics: dict, names: list[str], samples: list[Sample], probs: np.ndarray,
                           run_dir: Path) -> str:
    summary_rows = [["accuracy", _fmt(metrics["accuracy"])], ["mean class accuracy (ACA)",
                    _fmt(metrics["mean_class_accuracy"])], ["macro-F1", _fmt(metrics["macro_f1"])],
                    ["ROC AUC (macro, one-vs-rest)", _fmt(metrics.get("roc_auc_macro"))],
                    ["expected calibration error", _fmt(metrics.get("expected_calibration_error"))],
                    ["images", str(metrics["num_samples"])], ["test-time augmentation", metrics.get("tta", "none")],
                    ["best epoch", f"{metrics['best_epoch']} of {metrics['epochs_run']}"],
                    ["best validation ACA", _fmt(metrics["best_val"]["mean_class_accuracy"])]]
    per_class = [[c, _fmt(r["precision"]), _fmt(r["recall"]), _fmt(r["f1"]), _fmt(r.get("roc_auc")),
                  str(r["support"])] for c, r in metrics["per_class"].items()]
    confused = [[p["true"], p["predicted"], str(p["count"]), f"{p['fraction_of_true']:.3f}"]
                for p in metrics.get("most_confused", [])]

    normalized = io.BytesIO()
    plot_confusion(metrics["confusion_matrix"], names, normalized, title="fraction of each true class",
                   normalized=True)
    thumbs = "".join(
        f"<figure>{_img_tag(_thumbnail(s.path), s.path.name) if s.path.is_file() else ''}"
        f"<figcaption>{html.escape(s.path.name)}<br>"
        f"true <b>{html.escape(names[true])}</b><br>predicted <b>{html.escape(names[p])}</b> {conf:.2f}"
        f"</figcaption></figure>"
        for s, true, p, conf in worst_misclassified(samples, probs))

    return f"""<h2>Result on the {html.escape(metrics["split"])} split</h2>
{_table(["metric", "value"], summary_rows)}
<h2>Per class</h2>
{_table(["class", "precision", "recall", "F1", "ROC AUC", "support"], per_class)}
<h2>Confusion matrix</h2>
<div class="figs">{_img_tag(_png_file(run_dir / "confusion_matrix.png"), "confusion matrix, counts")}
{_img_tag(normalized.getvalue(), "confusion matrix, normalised")}</div>
<h3>Most confused pairs</h3>
{_table(["true", "predicted as", "count", "fraction of true"], confused) if confused else "<p>none</p>"}
<h2>Most confident mistakes</h2>
<div class="thumbs">{thumbs or "<p>no misclassified images</p>"}</div>
"""
