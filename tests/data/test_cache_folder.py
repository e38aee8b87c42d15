import os
import re
import time

import numpy as np

from celltune.cli import main
from celltune.data.cache import build_cache, space_error
from celltune.data.cache_folder import ABANDONED_SECONDS, cache_entries, removable, remove
from celltune.data.discovery import discover

from conftest import class_tree

DAY = 86400.0


def _aged(path, seconds: float) -> None:
    """Every file under ``path`` (or the file) last written ``seconds`` ago."""
    when = time.time() - seconds
    for f in [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]:
        os.utime(f, (when, when))


def _folder(tmp_path):
    """A cache folder as months of use leave it: two caches (one used 40 days ago), a cache of the first format (one
    .npy), a build killed two hours ago, a build still running, and files celltune did not write."""
    root = class_tree(tmp_path / "d", {"a": 3, "b": 3}, size=(20, 20))
    samples = [s for split in discover(root, val_fraction=0.34, test_fraction=0.0).splits.values() for s in split]
    folder = tmp_path / "cache"
    fresh = build_cache(samples, size=16, channels=None, intensity="scale", cache_dir=folder)
    old = build_cache(samples, size=12, channels=None, intensity="scale", cache_dir=folder)
    _aged(old.directory, 40 * DAY)
    np.save(folder / "0123456789abcdef01234567.npy", np.zeros((4, 3, 8, 8), np.uint8))
    killed = folder / "89abcdef0123456789abcdef.4242.partial"
    killed.mkdir()
    (killed / "shard-00000.npy").write_bytes(b"\0" * 1000)
    _aged(killed, ABANDONED_SECONDS + 3600)
    running = folder / "fedcba9876543210fedcba98.4343.partial"
    running.mkdir()
    (running / "shard-00000.npy").write_bytes(b"\0" * 10)
    (folder / "notes.txt").write_text("mine")
    (folder / "0123456789abcdef01234567.npy.bak").write_text("mine too")
    (folder / "results").mkdir()
    return folder, samples, fresh, old, killed, running


def test_the_folder_lists_its_caches_and_clearing_keeps_what_is_used_or_building(tmp_path):
    folder, samples, fresh, old, killed, running = _folder(tmp_path)
    entries = cache_entries(folder)
    states = {e.path.name: e.state for e in entries}
    assert states == {fresh.directory.name: "ready", old.directory.name: "ready",
                      "0123456789abcdef01234567.npy": "old format", killed.name: "unfinished",
                      running.name: "unfinished"}  # never notes.txt, the .bak or results/
    assert entries[0].path == old.directory  # the least recently used first
    ready = next(e for e in entries if e.path == fresh.directory)
    assert (ready.images, ready.shape) == (len(samples), (3, 16, 16))
    assert ready.bytes == sum(f.stat().st_size for f in fresh.directory.iterdir())

    # by default: what this version cannot read and the killed build
    assert {e.path.name for e in removable(entries)} == {"0123456789abcdef01234567.npy", killed.name}
    assert {e.path for e in removable(entries, older_than=30 * DAY)} == {
        folder / "0123456789abcdef01234567.npy", killed, old.directory}
    assert running not in {e.path for e in removable(entries, everything=True)}
    gone = removable(entries, older_than=30 * DAY)
    assert remove(gone) == sum(e.bytes for e in gone) and remove(gone) == 0  # a second time: nothing left to free
    assert sorted(p.name for p in folder.iterdir()) == sorted([
        fresh.directory.name, running.name, "notes.txt", "0123456789abcdef01234567.npy.bak", "results"])


def test_a_cache_used_again_counts_as_recently_used(tmp_path):
    folder, samples, _, old, *_ = _folder(tmp_path)
    assert build_cache(samples, size=12, channels=None, intensity="scale", cache_dir=folder) == old  # a hit
    assert old.directory not in {e.path for e in removable(cache_entries(folder), older_than=30 * DAY)}


def test_celltune_cache_lists_then_clears(tmp_path, capsys):
    folder, *_ = _folder(tmp_path)
    assert main(["cache", "--cache-dir", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "old format" in out and "unfinished (killed)" in out and "unfinished\n" in out
    # what it cannot use: the first format's 896 bytes (a 128-byte .npy header and 4x3x8x8) and the killed 1,000
    assert re.search(rf"5 caches, \d+\.\d kB in {folder}; 2 \(1\.9 kB\) this version cannot use: `celltune cache "
                     r"--clear` removes them", out)
    assert main(["cache", "--cache-dir", str(folder), "--older-than", "30d"]) == 2
    assert "give --clear too" in capsys.readouterr().err
    assert main(["cache", "--cache-dir", str(folder), "--clear", "--older-than", "30d"]) == 0
    assert f"{folder}: removed 3 of 5 caches" in capsys.readouterr().out
    assert main(["cache", "--cache-dir", str(folder), "--clear", "--all"]) == 0
    assert "removed 1 of 2 caches" in capsys.readouterr().out  # the build still running stays
    assert main(["cache", "--cache-dir", str(tmp_path / "none")]) == 0
    assert "0 caches" in capsys.readouterr().out


def test_running_out_of_space_says_what_old_caches_hold_and_how_to_clear_them(tmp_path):
    folder, *_ = _folder(tmp_path)
    message = str(space_error(10**12, folder))
    assert "needs 1000.00 GB" in message and re.search(r"older caches hold \d+\.\d kB of it, 1\.9 kB of which this "
                                                        "version cannot read", message)
    assert f"`celltune cache --cache-dir {folder}` lists them, `--clear --older-than 30d` removes" in message
    assert "older caches" not in str(space_error(10**12, tmp_path / "empty"))
