import pytest
from PIL import Image

from celltune.reports.run_files import plot_confusion, plot_curves, read_history, write_history


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
