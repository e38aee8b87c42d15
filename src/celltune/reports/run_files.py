"""Files a run leaves behind: history CSV, metrics JSON, curve and confusion-matrix plots (matplotlib OO API), and the
HTML pieces (an image inlined as base64, a table) every offline page is made of."""

from __future__ import annotations

import base64
import csv
import html
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from celltune.data import csvfiles


def write_whole(path: Path, text: str) -> None:
    """``text`` written beside ``path``, then renamed over it: another process reading it (tune, cv, a resume) sees
    the old file or the new one, never half of one, and a process killed while writing leaves the old file whole.
    A missing folder is made (a ``--json FILE`` in a new folder, asked for before minutes of work)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")  # one per process: writers never share one
    try:
        partial.write_text(text)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_json(path: Path, data: dict, *, default: Callable[[Any], Any] | None = None) -> None:
    """``data`` as indented JSON, written whole; ``default``: json.dumps's, for values JSON has no type for."""
    write_whole(path, json.dumps(data, indent=2, default=default) + "\n")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def write_history(path: Path, history: list[dict]) -> None:
    if not history:
        return
    with csvfiles.open_csv(path, "w") as f:
        writer = csvfiles.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def read_history(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def save_figure(fig: Figure, path: Path | BinaryIO) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120, bbox_inches="tight", format="png")


def plot_curves(history: list[dict], out_dir: Path) -> list[Path]:
    """loss.png and accuracy.png: train vs validation per epoch (every tracked validation number on the second)."""
    epochs = [row["epoch"] for row in history]
    written = []
    columns = list(history[0]) if history else []
    scores = ["train_acc", *(k for k in columns if k.startswith("val_") and k != "val_loss")]
    for metric, keys in (("loss", ["train_loss", "val_loss"]), ("accuracy", scores)):
        fig = Figure(figsize=(5, 3.5))
        ax = fig.add_subplot()
        for key in (k for k in keys if k in columns):
            ax.plot(epochs, [row[key] for row in history], marker="o", markersize=3, label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
        path = out_dir / f"{metric}.png"
        save_figure(fig, path)
        written.append(path)
    return written


def plot_confusion(cm: list[list[int]], class_names: list[str], path: Path | BinaryIO, title: str = "",
                   normalized: bool = False) -> Path | BinaryIO:
    """Counts (or, ``normalized``, the fraction of each true class) in each cell; colour by row-normalised rate so
    small classes are as visible as large ones."""
    counts = np.asarray(cm)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    fig = Figure(figsize=(1.0 + 0.7 * n, 0.8 + 0.6 * n))
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of true class")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            text = f"{rates[i, j]:.2f}" if normalized else str(counts[i, j])
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if rates[i, j] > 0.5 else "black")
    if title:
        ax.set_title(title)
    save_figure(fig, path)
    return path


def img_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
