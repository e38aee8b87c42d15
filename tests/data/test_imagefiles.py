from pathlib import Path

from celltune.data.imagefiles import hidden_under, is_hidden, is_image_file


def test_dot_files_and_mac_zip_folders_are_hidden_and_never_images():
    for name in (".DS_Store", "._cell.jpg", ".DS_169665.jpg", "__MACOSX", ".ipynb_checkpoints"):
        assert is_hidden(name) and not is_image_file(Path("class") / name)
    for name in ("cell.JPG", "a.tiff", "b.bmp", "_cell.png", "MACOSX.png"):
        assert not is_hidden(name) and is_image_file(Path(name))
    assert not is_image_file(Path("notes.txt"))


def test_hidden_under_lists_each_hidden_thing_once_without_looking_inside_hidden_folders(tmp_path):
    for name in ("a/1.png", "a/._1.png", "__MACOSX/a/._1.png", ".git/objects/x", "b/.DS_Store", "b/c/.hidden.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in hidden_under(tmp_path)] == [
        ".git", "__MACOSX", "a/._1.png", "b/.DS_Store", "b/c/.hidden.png"]
