from pathlib import Path

import pytest
from PIL import Image

from celltune.reports.run_files import plot_confusion, plot_curves, read_history, read_json, write_history, write_json


def test_history_round_trips_as_numbers(tmp_path):
    rows = [{"epoch": 1, "train_loss": 0.5, "val_aca": 0.25}, {"epoch": 2, "train_loss": 0.25, "val_aca": 0.5}]
    write_history(tmp_path / "h.csv", rows)
    assert read_history(tmp_path / "h.csv") == [{k: float(v) for k, v in r.items()} for r in rows]


def test_curves_plot_every_tracked_validation_number(tmp_path, monkeypatch):
    drawn: list[str] = []
    from matplotlib.axes import Axes

    real_plot = Axes.plot
    monkeypatch.setattr(Axes, "plot", lambda self, *a, label=None, **k: drawn.append(label) or real_plot(
        self, *a, label=label, **k))
    history = [{"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.5, "val_loss": 0.9, "val_macro_f1": 0.4,
                "val_micro_f1": 0.5, "val_exact_match": 0.1, "lr": 0.001} for e in (1, 2)]
    paths = plot_curves(history, tmp_path)
    assert [p.name for p in paths] == ["loss.png", "accuracy.png"]
    assert drawn == ["train_loss", "val_loss", "train_acc", "val_macro_f1", "val_micro_f1", "val_exact_match"]
    assert Image.open(paths[1]).size[0] > 100


@pytest.mark.parametrize("normalized", [False, True])
def test_confusion_plot_is_a_png(tmp_path, normalized):
    path = plot_confusion([[3, 1], [0, 2]], ["a", "b"], tmp_path / "cm.png", title="t", normalized=normalized)
    assert Image.open(path).format == "PNG"


def test_a_json_write_killed_halfway_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_json(path, {"epochs_run": 3})
    real_write = Path.write_text

    def dies_halfway(self, text, *args, **kwargs):
        real_write(self, text[: len(text) // 2], *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        write_json(path, {"epochs_run": 4, "accuracy": 0.5})
    monkeypatch.undo()
    assert read_json(path) == {"epochs_run": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no partial file left behind
    write_json(path, {"epochs_run": 4})
    assert read_json(path) == {"epochs_run": 4}


def test_a_json_write_makes_its_missing_folder(tmp_path):
    write_json(tmp_path / "out" / "deeper" / "c.json", {"a": 1})
    assert read_json(tmp_path / "out" / "deeper" / "c.json") == {"a": 1}
