import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from celltune.audit.check import audit, needed_images, read_all
from celltune.cli import main
from celltune.data.discovery import discover
from celltune.data.synthetic import draw_cell

RNG = np.random.default_rng(7)


def _cell(path: Path, pattern: str = "speckled", size: int = 64) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(draw_cell(pattern, size=size, rng=RNG)).save(path)
    return path


def _codes(result) -> dict[str, list[str]]:
    return {f.code: f.items for f in result.findings}


def test_every_file_and_class_problem_is_found_at_once(tmp_path, capsys):
    root = tmp_path / "d"
    for i in range(10):
        _cell(root / "alpha" / f"{i}.png", "speckled")
        _cell(root / "beta" / f"{i}.png", "golgi")
    _cell(root / "delta" / "0.png", "homogeneous")  # one image: none left for val or test
    (root / "gamma").mkdir()  # an empty class
    good = (root / "alpha" / "0.png").read_bytes()
    (root / "alpha" / "cut.png").write_bytes(good[: len(good) // 2])  # truncated
    (root / "beta" / "empty.png").write_bytes(b"")
    (root / "beta" / "notes.txt").write_text("stained on monday")
    (root / "beta" / ".DS_Store").write_bytes(b"\0")  # junk a file browser leaves: not reported
    result = audit(discover(root), root)
    codes = _codes(result)
    assert [f.level for f in result.findings if f.code in ("unreadable", "not-an-image", "empty-class",
                                                          "class-too-small")] == ["error"] * 4
    assert sorted(i.split(":")[0] for i in codes["unreadable"]) == ["alpha/cut.png", "beta/empty.png"]
    assert any("0 bytes" in i for i in codes["unreadable"]) and any("truncated" in i for i in codes["unreadable"])
    assert codes["not-an-image"] == ["beta/notes.txt"]
    messages = {f.code: f.message for f in result.findings}
    assert "'gamma' has no images" in messages["empty-class"]
    assert "'delta': 1 image(s) leave none for val and test" in messages["class-too-small"]
    # The CLI prints them all and exits 1; --json has every item.
    assert main(["check", str(root), "--json", str(tmp_path / "f.json"), "--workers", "1"]) == 1
    out = capsys.readouterr().out
    for code in ("unreadable", "not-an-image", "empty-class", "class-too-small"):
        assert f"ERROR   {code}:" in out
    assert json.loads((tmp_path / "f.json").read_text())["errors"] == 4


def test_hidden_files_are_no_images_and_check_counts_them_in_one_line(tmp_path, capsys):
    root = tmp_path / "d"
    for i in range(10):
        _cell(root / "alpha" / f"{i}.png", "speckled")
        _cell(root / "beta" / f"{i}.png", "golgi")
    (root / "alpha" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "alpha" / "._0.png").write_bytes(b"\0\x05\x16\x07" + bytes(80))  # AppleDouble: no PNG inside
    (root / "beta" / ".DS_169665.jpg").write_bytes(b"leftover")
    (root / "__MACOSX" / "alpha").mkdir(parents=True)  # a Mac zip's folder: no class
    (root / "__MACOSX" / "alpha" / "._1.png").write_bytes(b"\0\x05\x16\x07")
    found = discover(root)
    assert found.class_names == ["alpha", "beta"] and len(found.samples) == 20
    result = audit(found, root)
    assert result.errors == []
    hidden = next(f for f in result.findings if f.code == "hidden-files")
    assert hidden.level == "info" and hidden.items == ["__MACOSX/", "alpha/.DS_Store", "alpha/._0.png",
                                                       "beta/.DS_169665.jpg"]
    # 10 - 2 val - 2 test (15% each, rounded) = 6 per class in train: said once, not "1.0:1 (alpha 6, alpha 6)"
    balance = next(f.message for f in result.findings if f.code == "imbalance")
    assert balance == "classes balanced in train: 6 images each"
    assert main(["check", str(root), "--workers", "1"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line for line in printed if "hidden-files" in line] == [f"INFO    hidden-files: {hidden.message}"]
    assert not any(line.strip() in hidden.items for line in printed)  # one line; --json has the items


def test_a_class_needs_enough_images_for_every_part():
    # 0.15 of 4 rounds to 1, of 3 to 0: four images leave one for val, one for test and two for training.
    assert needed_images(0.15, 0.15) == 4
    assert needed_images(0.25, 0.0) == 3  # 0.25 * 2 = 0.5 rounds to 0 (half to even)


def _jpeg_resized(src: Path, dst: Path, size: int) -> Path:
    buffer = io.BytesIO()
    Image.open(src).resize((size, size), Image.Resampling.BILINEAR).save(buffer, format="JPEG", quality=85)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(buffer.getvalue())
    return dst


def test_duplicates_and_near_duplicates_within_and_across_splits(tmp_path):
    root = tmp_path / "d"
    for split, n in (("train", 8), ("val", 4)):
        for cls, pattern in (("golgi", "golgi"), ("speckled", "speckled")):
            for i in range(n):
                _cell(root / split / cls / f"{cls[0]}{split}{i}.png", pattern)
    copied = (root / "train" / "speckled" / "strain0.png")
    (root / "val" / "speckled" / "copy.png").write_bytes(copied.read_bytes())  # an exact leak
    _jpeg_resized(root / "train" / "speckled" / "strain1.png", root / "val" / "speckled" / "resized.jpg", 48)
    _jpeg_resized(root / "train" / "golgi" / "gtrain1.png", root / "train" / "golgi" / "again.jpg", 64)
    result = audit(discover(root), root, workers=1)
    codes = _codes(result)
    assert codes["exact-leak"] == ["train/speckled/strain0.png (train) = val/speckled/copy.png (val)"]
    assert codes["near-leak"] == ["train/speckled/strain1.png (train) = val/speckled/resized.jpg (val)"]
    assert codes["near-duplicate"] == ["train/golgi/again.jpg (train) = train/golgi/gtrain1.png (train)"]
    # Leaks are listed before the duplicates within a split.
    order = [f.code for f in result.findings]
    assert order.index("exact-leak") < order.index("near-duplicate")
    assert not result.errors


def test_a_near_duplicate_pair_under_two_labels_is_a_label_conflict_listed_with_both_files(tmp_path):
    """The issue's red-cell case: the same cell annotated twice, once under each class (a resized, re-encoded crop)."""
    root = tmp_path / "d"
    for split, n in (("train", 8), ("val", 4)):
        for cls in ("golgi", "speckled"):
            for i in range(n):
                _cell(root / split / cls / f"{cls[0]}{split}{i}.png", cls)
    _jpeg_resized(root / "train" / "speckled" / "strain1.png", root / "val" / "golgi" / "relabelled.jpg", 48)
    codes = _codes(audit(discover(root), root, workers=1))
    assert codes["near-label-conflict"] == [
        "train/speckled/strain1.png (speckled, train) = val/golgi/relabelled.jpg (golgi, val)"]
    assert "near-leak" not in codes  # listed once, as the conflict


def test_the_same_image_under_two_labels_is_an_error(tmp_path):
    root = tmp_path / "d"
    for cls in ("golgi", "speckled"):
        for i in range(6):
            _cell(root / cls / f"{i}.png", cls)
    (root / "golgi" / "twin.png").write_bytes((root / "speckled" / "0.png").read_bytes())
    codes = _codes(audit(discover(root), root, workers=1))
    assert codes["label-conflict"] == ["golgi/twin.png (golgi) = speckled/0.png (speckled)"]


def test_size_that_goes_with_the_class_and_class_names_in_file_names(tmp_path):
    root = tmp_path / "d"
    for i in range(12):
        _cell(root / "speckled" / f"speckled_{i:03d}.png", "speckled", size=64)
        _cell(root / "golgi" / f"{i:03d}.png", "golgi", size=48)
    result = audit(discover(root), root, workers=1)
    confound = next(f for f in result.findings if f.code == "property-confound" and "width" in f.message)
    assert "width 64 occurs only in speckled (12 images)" in confound.items
    assert "100% right from it alone, against 50%" in confound.message
    named = next(f for f in result.findings if f.code == "class-in-name")
    assert len(named.items) == 12 and named.items[0].startswith("speckled/speckled_")
    assert named.message.startswith("12 of 24 file names")


def test_masks_missing_or_of_another_size(tmp_path):
    root = tmp_path / "d"
    for cls in ("golgi", "speckled"):
        for i in range(6):
            _cell(root / cls / f"{i}.png", cls)
            if (cls, i) != ("golgi", 3):
                size = (32, 32) if (cls, i) == ("speckled", 1) else (64, 64)
                mask = tmp_path / "masks" / cls / f"{i}.{'bmp' if i % 2 else 'tif'}"  # matched by stem
                mask.parent.mkdir(parents=True, exist_ok=True)
                Image.new("L", size, 255).save(mask)
    Image.new("L", (64, 64), 255).save(tmp_path / "masks" / "golgi" / "4.jpg")  # a second mask of golgi/4.png
    codes = _codes(audit(discover(root), root, mask_dir=tmp_path / "masks", workers=1))
    assert codes["mask-missing"] == ["golgi/3.png"]
    assert codes["mask-size"] == ["speckled/1.bmp: 32x32, its image 64x64"]
    assert codes["mask-ambiguous"] == ["golgi/4.png: golgi/4.jpg, golgi/4.tif"]


def test_a_group_across_pre_made_splits_is_an_error(tmp_path):
    root = tmp_path / "d"
    for split, patients in (("train", ("p1", "p2")), ("val", ("p2", "p3"))):
        for cls in ("golgi", "speckled"):
            for p in patients:
                _cell(root / split / cls / f"{p}_{cls}.png", cls)
    result = audit(discover(root, groups=r"(p\d+)_"), root, workers=1)
    assert _codes(result)["group-across-splits"] == ["p2: train 2, val 2"]


def test_reading_in_worker_processes_gives_what_one_process_does(tmp_path):
    paths = [_cell(tmp_path / f"{i}.png", "speckled", size=32) for i in range(400)]
    (tmp_path / "bad.png").write_bytes(b"nope")
    serial = read_all([*paths, tmp_path / "bad.png"], workers=1)
    done: list[int] = []
    parallel = read_all([*paths, tmp_path / "bad.png"], workers=2, progress=done.append)
    assert serial.keys() == parallel.keys() and sum(done) == 401
    assert all(serial[p].sha1 == parallel[p].sha1 and serial[p].error == parallel[p].error for p in serial)
    assert parallel[tmp_path / "bad.png"].error is not None


def test_files_of_several_pages_or_frames_are_named(tmp_path):
    root = tmp_path / "d"
    for cls in ("golgi", "speckled"):
        for i in range(5):
            _cell(root / cls / f"{i}.png", cls)
    pages = [Image.fromarray(draw_cell("golgi", size=64, rng=RNG)) for _ in range(3)]
    pages[0].save(root / "golgi" / "stack.tif", save_all=True, append_images=pages[1:])
    pages[0].save(root / "speckled" / "movie.png", format="GIF", save_all=True, append_images=pages[1:2])
    codes = _codes(audit(discover(root), root, workers=1))
    assert codes["several-frames"] == ["golgi/stack.tif: 3 pages (TIFF)", "speckled/movie.png: 2 frames (GIF)"]
