"""`celltune evaluate`, `predict` and `calibrate` from the command line."""

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from celltune.cli import main
from celltune.data.synthetic import HPA_CHANNELS, make_multilabel_dataset

from conftest import PROB_ATOL, class_tree, random_checkpoint

slow = pytest.mark.slow


@slow
def test_evaluate_prints_and_writes_metrics(trained_run, tiny_data, tmp_path, capsys):
    assert main(["-q", "evaluate", str(trained_run), "--data", str(tiny_data), "--split", "val",
                 "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mean class accuracy (ACA)" in out and "confusion matrix" in out
    metrics = json.loads((tmp_path / "metrics_val.json").read_text())
    assert metrics["num_samples"] == 18 and len(metrics["per_class"]) == 6
    assert f"accuracy {metrics['accuracy']:.4f}" in out
    assert (tmp_path / "confusion_matrix_val.png").is_file() and (tmp_path / "predictions_val.csv").is_file()
    assert metrics["tta"] == "flips"  # the default
    assert main(["-q", "evaluate", str(trained_run), "--data", str(tiny_data), "--split", "val", "--tta", "dihedral",
                 "--out-dir", str(tmp_path / "tta")]) == 0
    assert json.loads((tmp_path / "tta" / "metrics_val.json").read_text())["tta"] == "dihedral"


@slow
def test_predict_topk_for_images_and_csv_for_folders(trained_run, tiny_data, tmp_path, capsys):
    image = next((tiny_data / "test" / "golgi").glob("*.png"))
    out_csv = tmp_path / "preds.csv"
    assert main(["-q", "predict", str(trained_run / "best.pt"), str(image), str(tiny_data / "test"), "--topk", "2",
                 "--output", str(out_csv)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(str(image)))
    probs = [float(part.rsplit(" ", 1)[1]) for part in line.split(": ", 1)[1].split(", ")]
    assert len(probs) == 2 and probs[0] >= probs[1]
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 18
    assert sum(float(rows[0][k]) for k in rows[0] if k.startswith("p_")) == pytest.approx(1.0, abs=1e-4)
    # An existing CSV is never silently replaced.
    assert main(["-q", "predict", str(trained_run), str(tiny_data / "test"), "--output", str(out_csv)]) == 2
    assert len(list(csv.DictReader(out_csv.open()))) == 18


def _probs_by_hand(checkpoint: Path, image: Path, views) -> torch.Tensor:
    """The checkpoint's softmax for ``image``, averaged over ``views`` of the preprocessed image, computed here."""
    from celltune.data.images import load_input
    from celltune.data.transforms import eval_transform
    from celltune.models.checkpoint import load_checkpoint

    model, card, _ = load_checkpoint(checkpoint)
    x = eval_transform(image_size=card.image_size, mean=tuple(card.mean), std=tuple(card.std))(load_input(image))
    with torch.inference_mode():
        return torch.stack([model(v[None]).softmax(1)[0] for v in views(x)]).mean(0)


def _dihedral(x):
    return [torch.rot90(v, k, dims=(-2, -1)) for v in (x, x.flip(-1)) for k in range(4)]


def _flips(x):
    return [x, x.flip(-1), x.flip(-2), x.flip(-2, -1)]


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def test_evaluate_with_dihedral_tta_averages_the_eight_views(tiny_data, tmp_path):
    names = sorted(d.name for d in (tiny_data / "train").iterdir())
    checkpoint = random_checkpoint(tmp_path / "best.pt", names)
    assert main(["-q", "evaluate", str(checkpoint), "--data", str(tiny_data), "--split", "test", "--tta", "dihedral",
                 "--out-dir", str(tmp_path / "out")]) == 0
    row = _rows(tmp_path / "out" / "predictions_test.csv")[0]
    got = torch.tensor([float(row[f"p_{n}"]) for n in names])
    assert torch.allclose(got, _probs_by_hand(checkpoint, Path(row["path"]), _dihedral), atol=PROB_ATOL, rtol=0)
    assert not torch.allclose(got, _probs_by_hand(checkpoint, Path(row["path"]), lambda x: [x]), atol=PROB_ATOL,
                              rtol=0)


def test_evaluate_aligns_class_folders_in_another_order(tmp_path):
    data = tmp_path / "d"
    for split in ("train", "val", "test"):
        class_tree(data / split, {"a": 2, "b": 2, "c": 2})
    # The model's classes in another order than the data's folders: labels must follow the names, not positions.
    checkpoint = random_checkpoint(tmp_path / "best.pt", ["c", "a", "b"])
    assert main(["-q", "evaluate", str(checkpoint), "--data", str(data), "--split", "test",
                 "--out-dir", str(tmp_path / "out")]) == 0
    rows = _rows(tmp_path / "out" / "predictions_test.csv")
    assert len(rows) == 6 and all(r["true"] == Path(r["path"]).parent.name for r in rows)
    metrics = json.loads((tmp_path / "out" / "metrics_test.json").read_text())
    assert metrics["class_names"] == ["c", "a", "b"]
    assert metrics["accuracy"] == pytest.approx(sum(r["true"] == r["predicted"] for r in rows) / 6)


def test_predict_overwrite_resume_and_tta_from_the_command_line(tiny_data, tmp_path, capsys):
    names = sorted(d.name for d in (tiny_data / "train").iterdir())
    checkpoint = random_checkpoint(tmp_path / "best.pt", names)
    out = tmp_path / "preds.csv"
    out.write_text("precious\n")
    assert main(["-q", "predict", str(checkpoint), str(tiny_data / "test"), "--output", str(out)]) == 2
    assert out.read_text() == "precious\n" and "--overwrite" in capsys.readouterr().err
    predict = ["-q", "predict", str(checkpoint), str(tiny_data / "test"), "--output", str(out), "--tta", "flips",
               "--batch-size", "4"]  # 18 images: batches of 4, 4, 4, 4 and 2
    assert main([*predict, "--overwrite"]) == 0
    full = _rows(out)
    assert len(full) == 18
    got = torch.tensor([float(full[0][f"p_{n}"]) for n in names])
    assert torch.allclose(got, _probs_by_hand(checkpoint, Path(full[0]["path"]), _flips), atol=PROB_ATOL, rtol=0)
    whole = out.read_bytes()
    out.write_bytes(b"".join(whole.splitlines(keepends=True)[:6]))  # interrupted after 5 rows
    capsys.readouterr()
    assert main([*predict, "--resume"]) == 0
    # the first batch kept, the second (rows 5 to 8) computed again as it was: the same bytes on any CPU
    printed = capsys.readouterr().out
    assert "wrote 14 predictions" in printed and "(4 already there)" in printed
    assert out.read_bytes() == whole


def test_predict_goes_on_past_bad_files_counts_them_and_exits_1(tiny_data, tmp_path, capsys):
    names = sorted(d.name for d in (tiny_data / "train").iterdir())
    checkpoint = random_checkpoint(tmp_path / "best.pt", names)
    folder = tmp_path / "images"
    shutil.copytree(tiny_data / "test", folder)
    broken = sorted(folder.rglob("*.png"))[:2]
    for path in broken:
        path.write_bytes(path.read_bytes()[:50])  # truncated
    out = tmp_path / "preds.csv"
    assert main(["-q", "predict", str(checkpoint), str(broken[0]), str(folder), "--output", str(out)]) == 1
    printed = capsys.readouterr().out
    assert f"{broken[0]}: error: cannot read image" in printed
    assert "wrote 18 predictions" in printed and "2 image(s) could not be read" in printed
    rows = _rows(out)
    assert [r["path"] for r in rows if r["error"]] == [str(p) for p in broken]
    assert all(r["predicted"] in names for r in rows if not r["error"])
    # --resume: every row is there, error rows included; nothing is predicted again, and the failures still count.
    assert main(["-q", "predict", str(checkpoint), str(folder), "--output", str(out), "--resume"]) == 1
    assert "wrote 0 predictions" in capsys.readouterr().out and len(_rows(out)) == 18


def test_multilabel_predict_prints_exactly_the_labels_above_their_thresholds(tmp_path, capsys):
    from celltune.models.checkpoint import ModelCard, read_checkpoint, replace_card
    from celltune.predict.predictor import Predictor

    data = make_multilabel_dataset(tmp_path / "hpa", n_images=12, size=32, num_labels=6, seed=5)
    names = [f"label{i}" for i in range(6)]
    checkpoint = random_checkpoint(tmp_path / "best.pt", names, channels=list(HPA_CHANNELS),
                                   intensity="percentile", multilabel=True, thresholds=[0.5] * 6)
    stem = data / "train" / "cell00003"
    (pred,) = Predictor(checkpoint).predict_paths([stem])
    # Thresholds just under the even labels' probabilities and just over the odd ones': labels 0, 2, 4 are in.
    thresholds = [p - 1e-3 if i % 2 == 0 else p + 1e-3 for i, p in enumerate(pred.probs)]
    saved = read_checkpoint(checkpoint)
    replace_card(checkpoint, ModelCard(**{k: saved[k] for k in ModelCard.__dataclass_fields__} | {
        "thresholds": thresholds}))
    expected = {names[i] for i, (p, t) in enumerate(zip(pred.probs, thresholds, strict=True)) if p >= t}
    assert expected == {"label0", "label2", "label4"}
    assert main(["-q", "predict", str(checkpoint), str(stem), "--tta", "none"]) == 0  # as Predictor's default
    line = capsys.readouterr().out.strip().splitlines()[-1]
    printed = {part.rsplit(" ", 1)[0] for part in line.split(": ", 1)[1].split(", ")}
    assert printed == expected


def test_predict_coverage_prints_sets_and_writes_them_to_the_csv(tiny_data, tmp_path, capsys):
    names = sorted(d.name for d in (tiny_data / "train").iterdir())
    # Validation scores all 0.9: the 95% limit is 0.9, so an image's set is its classes within 0.9 of mass (the
    # last one by a random share): one class where the top one holds more, several where it holds less.
    checkpoint = random_checkpoint(tmp_path / "best.pt", names, conformal_scores=[0.9] * 40)
    image = next(iter(sorted((tiny_data / "test").rglob("*.png"))))
    assert main(["-q", "predict", str(checkpoint), str(image), "--coverage", "0.95"]) == 0
    assert "95% set: {" in capsys.readouterr().out
    out = tmp_path / "sets.csv"
    assert main(["-q", "predict", str(checkpoint), str(tiny_data / "test"), "--output", str(out), "--coverage",
                 "0.95"]) == 0
    rows = _rows(out)
    assert list(rows[0])[-3:] == ["set", "review", "error"]
    for row in rows:
        chosen = row["set"].split()
        assert chosen[0] == row["predicted"] and (row["review"] == "yes") == (len(chosen) > 1)
    assert {row["review"] for row in rows} == {"yes", ""}  # both kinds of answer were checked above
    # A model without validation scores says how to get them.
    bare = random_checkpoint(tmp_path / "bare.pt", names)
    assert main(["-q", "predict", str(bare), str(image), "--coverage", "0.95"]) == 2
    assert "celltune calibrate RUN_DIR --data DATA_DIR" in capsys.readouterr().err


@slow
def test_calibrate_command_adds_sets_to_a_run(trained_run, tiny_data, capsys):
    assert main(["-q", "calibrate", str(trained_run), "--data", str(tiny_data)]) == 0
    printed = capsys.readouterr().out
    # tiny_data has 18 validation images: too few to fit a temperature, enough to keep their scores.
    assert "no temperature" in printed and "18 validation scores kept" in printed
    best = torch.load(trained_run / "best.pt", weights_only=True)
    assert best["temperature"] is None and len(best["conformal_scores"]) == 18
