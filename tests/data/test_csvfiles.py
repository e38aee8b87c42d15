import csv
import io

from hypothesis import given
from hypothesis import strategies as st

from celltune.data import csvfiles


def test_formula_cells_get_an_apostrophe_and_numbers_do_not():
    for cell in ['=HYPERLINK("http://x","y")', "+cmd", "-2+3", "@SUM(A1)", "\tx", "\rx", "'quoted"]:
        assert csvfiles.guard(cell) == "'" + cell
    for cell in ["-0.25", "+3", "1e-05", "-.5", "cell.png", "", "a=b", "0.403565"]:
        assert csvfiles.guard(cell) == cell
    assert csvfiles.guard(-1.5) == -1.5 and csvfiles.guard(None) is None  # not text: written as it is


@given(st.text())
def test_reading_gives_back_every_value_written_and_no_cell_starts_like_a_formula(value):
    f = io.StringIO(newline="")
    csvfiles.Writer(f).writerow([value, "x"])
    f.seek(0)
    (raw,) = list(csv.reader(f))
    assert not raw[0].startswith(csvfiles.FORMULA_STARTS) or csvfiles._NUMBER.fullmatch(raw[0])
    f.seek(0)
    assert list(csvfiles.reader(f)) == [[value, "x"]]


def test_dict_tables_round_trip_and_guard_once(tmp_path):
    path = tmp_path / "t.csv"
    with csvfiles.open_csv(path, "w") as f:
        writer = csvfiles.DictWriter(f, ["path", "true"])
        writer.writeheader()
        writer.writerows([{"path": "=a.png", "true": "-neg"}, {"path": "b.png", "true": "pos"}])
    assert path.read_text().splitlines() == ["path,true", "'=a.png,'-neg", "b.png,pos"]
    with csvfiles.open_csv(path) as f:
        assert csvfiles.read_dicts(f) == (["path", "true"], [{"path": "=a.png", "true": "-neg"},
                                                             {"path": "b.png", "true": "pos"}])
