import csv
import shutil
from pathlib import Path

import pytest

from celltune.data import csvfiles
from celltune.errors import ExistsError
from celltune.predict.predictor import Prediction, Predictor, inputs_under
from celltune.predict.to_csv import BatchOutcome, predict_to_csv, write_predictions_csv

from conftest import PROB_ATOL, bomb_png, png, random_checkpoint


def _predictor(tmp_path: Path) -> Predictor:
    return Predictor(random_checkpoint(tmp_path / "best.pt", [str(i) for i in range(6)]))


def _watch_batches(predictor: Predictor, monkeypatch) -> list[list[Path]]:
    """The batches ``predictor`` computes from now on, as lists of paths."""
    batches: list[list[Path]] = []
    real = predictor.predict_paths

    def spy(batch, batch_size):
        batches.append(list(batch))
        return real(batch, batch_size)

    monkeypatch.setattr(predictor, "predict_paths", spy)
    return batches


def test_a_resumed_csv_has_the_bytes_of_the_uninterrupted_one_each_image_in_its_own_batch(tiny_data, tmp_path,
                                                                                          monkeypatch):
    """18 images in batches of 4 (the last holds 2), interrupted after every number of whole rows and in the middle
    of a row: the resumed file is the uninterrupted one byte for byte, and every image it computes again is computed
    in the batch it had, so that no CPU's batch-dependent last bits can differ."""
    predictor = _predictor(tmp_path)
    batches = _watch_batches(predictor, monkeypatch)
    paths = list(inputs_under(tiny_data / "test"))
    full = tmp_path / "full.csv"
    assert predict_to_csv(predictor, iter(paths), full, batch_size=4) == BatchOutcome(18, 0, 0)
    straight = list(batches)
    assert [len(b) for b in straight] == [4, 4, 4, 4, 2]
    reference = full.read_bytes()
    lines = reference.splitlines(keepends=True)  # header, then a line per row
    partial = tmp_path / "partial.csv"
    for rows in range(19):
        for cut in (b"", lines[rows + 1][:20] if rows < 18 else b"x,y"):  # whole rows, then a row cut off
            partial.write_bytes(b"".join(lines[: rows + 1]) + cut)
            batches.clear()
            outcome = predict_to_csv(predictor, iter(paths), partial, batch_size=4, resume=True)
            assert partial.read_bytes() == reference, (rows, cut)
            first = rows // 4 if rows < 18 else 5  # the first batch holding an image without a row (5: none)
            assert batches == straight[first:], (rows, cut)
            kept = sum(map(len, straight[:first]))
            assert outcome == BatchOutcome(written=18 - kept, failed=0, skipped=kept)


def test_resume_refuses_a_csv_of_other_images_and_leaves_it_as_it_was(tiny_data, tmp_path):
    predictor = _predictor(tmp_path)
    folder = tmp_path / "images"
    shutil.copytree(tiny_data / "test", folder)
    out = tmp_path / "p.csv"
    predict_to_csv(predictor, inputs_under(folder), out, batch_size=4)
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:8]))  # 7 rows done
    written = out.read_bytes()
    first = sorted(folder.rglob("*.png"))[0]
    png(first.with_name("0000_new.png"))  # a new image, sorted before the others of its folder
    with pytest.raises(ExistsError, match=r"row 1 is .*, but image 1 now is .*0000_new\.png.*--overwrite"):
        predict_to_csv(predictor, inputs_under(folder), out, batch_size=4, resume=True)
    first.with_name("0000_new.png").unlink()
    with pytest.raises(ExistsError, match="there are only 5 images now"):
        predict_to_csv(predictor, list(inputs_under(folder))[:5], out, batch_size=4, resume=True)
    other = Predictor(random_checkpoint(tmp_path / "other.pt", ["a", "b"]))
    with pytest.raises(ExistsError, match="columns are not this model's"):
        predict_to_csv(other, inputs_under(folder), out, resume=True)
    assert out.read_bytes() == written
    out.write_bytes(b"")  # killed before the header was written: a fresh start
    assert predict_to_csv(predictor, inputs_under(folder), out, batch_size=4, resume=True).written == 18


def test_streaming_reads_paths_one_batch_ahead_at_most(tiny_data, tmp_path, monkeypatch):
    """Only one batch of paths is taken from the iterator before its predictions are written."""
    predictor = _predictor(tmp_path)
    taken: list = []
    batches: list[int] = []
    real_predict = predictor.predict_paths

    def spy(batch, batch_size):  # the real prediction, watched
        batches.append(len(batch))
        assert len(taken) <= sum(batches)  # the stream was read no further than this batch
        return real_predict(batch, batch_size)

    def stream():
        for p in inputs_under(tiny_data / "test"):
            taken.append(p)
            yield p

    monkeypatch.setattr(predictor, "predict_paths", spy)
    out = tmp_path / "s.csv"
    assert predict_to_csv(predictor, stream(), out, batch_size=4).written == 18
    assert batches == [4, 4, 4, 4, 2] and len(list(csv.DictReader(out.open()))) == 18


def _damaged_copy(source: Path, target: Path) -> dict[str, str]:
    """``source``'s images under ``target`` with four of them damaged: truncated, zero bytes, text, a bomb header.
    Returns {damaged path: the words its error must hold}."""
    shutil.copytree(source, target)
    files = sorted(target.rglob("*.png"))
    truncated, empty, text, bomb = files[1], files[6], files[7], files[12]
    truncated.write_bytes(truncated.read_bytes()[:60])
    empty.write_bytes(b"")
    text.write_text("not an image")
    bomb_png(bomb)
    return {str(truncated): "cannot read image", str(empty): "cannot read image", str(text): "cannot read image",
            str(bomb): "900,000,000 pixels"}


def test_a_damaged_folder_gets_every_good_row_and_a_reason_for_each_bad_one(tiny_data, tmp_path):
    predictor = _predictor(tmp_path)
    clean_csv, damaged_csv = tmp_path / "clean.csv", tmp_path / "damaged.csv"
    predict_to_csv(predictor, inputs_under(tiny_data / "test"), clean_csv, batch_size=4)
    damaged = _damaged_copy(tiny_data / "test", tmp_path / "damaged")
    outcome = predict_to_csv(predictor, inputs_under(tmp_path / "damaged"), damaged_csv, batch_size=4)
    assert outcome == BatchOutcome(written=18, failed=4, skipped=0)
    rows, clean = list(csv.DictReader(damaged_csv.open())), list(csv.DictReader(clean_csv.open()))
    assert len(rows) == 18
    for row, reference in zip(rows, clean, strict=True):
        if row["path"] in damaged:
            assert damaged[row["path"]] in row["error"] and row["predicted"] == row["confidence"] == row["p_0"] == ""
        else:  # the answers of the undamaged folder, in a batch with fewer neighbours (README: within PROB_ATOL)
            assert row["error"] == ""
            for column in (k for k in row if k.startswith("p_")):
                assert float(row[column]) == pytest.approx(float(reference[column]), abs=PROB_ATOL)
    # Resuming keeps the rows of finished batches, error rows included, and counts their failures.
    lines = damaged_csv.read_bytes().splitlines(keepends=True)
    damaged_csv.write_bytes(b"".join(lines[:10]))  # 9 rows: batches 1 and 2 finished
    assert predict_to_csv(predictor, inputs_under(tmp_path / "damaged"), damaged_csv, batch_size=4,
                          resume=True) == BatchOutcome(written=10, failed=4, skipped=8)
    assert damaged_csv.read_bytes().splitlines(keepends=True) == lines


# File names a spreadsheet would run; the first is a folder '=HYPERLINK("http:' holding 'x","y").png'.
_HOSTILE = ['=HYPERLINK("http://x","y").png', "+cmd.png", "-2+3.png", "@SUM(A1).png", "\tx.png", "'quoted.png"]


def test_names_that_look_like_formulas_are_written_as_text_and_resume_reads_them_back(tiny_data, tmp_path,
                                                                                      monkeypatch):
    source = sorted((tiny_data / "test").rglob("*.png"))
    folder = tmp_path / "hostile"
    folder.mkdir()
    for name, image in zip(_HOSTILE, source, strict=False):
        (folder / name).parent.mkdir(exist_ok=True)
        shutil.copy(image, folder / name)
    monkeypatch.chdir(folder)  # `celltune predict RUN .`: each path cell begins with the file's name
    predictor, out = _predictor(tmp_path), tmp_path / "p.csv"
    assert predict_to_csv(predictor, inputs_under(Path(".")), out, batch_size=4).written == len(_HOSTILE)
    cells = [row[0] for row in list(csv.reader(out.open(newline="")))[1:]]
    assert sorted(cells) == sorted("'" + str(Path(name)) for name in _HOSTILE)  # each shown as text, none run
    assert [row[0] for row in list(csvfiles.reader(out.open(newline="")))[1:]] == [
        str(p) for p in inputs_under(Path("."))]
    whole = out.read_bytes()
    out.write_bytes(b"".join(whole.splitlines(keepends=True)[:6]))  # 5 rows done
    assert predict_to_csv(predictor, inputs_under(Path(".")), out, batch_size=4, resume=True).skipped == 4
    assert out.read_bytes() == whole


def test_a_table_with_true_labels_guards_class_names_too(tmp_path):
    names = ["=cmd", "-neg", "pos"]
    out = tmp_path / "t.csv"
    predictions = [Prediction(Path("@a.png"), [0.7, 0.2, 0.1]), Prediction(Path("b.png"), [0.1, 0.1, 0.8])]
    write_predictions_csv(out, predictions, names, labels=[1, 0])
    rows = list(csv.reader(out.open(newline="")))
    assert rows[0] == ["path", "true", "predicted", "confidence", "p_=cmd", "p_-neg", "p_pos"]
    assert rows[1][:3] == ["'@a.png", "'-neg", "'=cmd"] and rows[2][:3] == ["b.png", "'=cmd", "pos"]
    assert list(csvfiles.reader(out.open(newline="")))[1][:3] == ["@a.png", "-neg", "=cmd"]
