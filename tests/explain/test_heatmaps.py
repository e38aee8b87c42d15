"""celltune explain: the heatmap's peak lands where the evidence is, pictures for files and folders, clear errors."""

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from celltune.cli import main
from celltune.data.synthetic import HPA_CHANNELS
from celltune.errors import ConfigError
from celltune.explain.heatmaps import explain_images
from celltune.training.fit import fit

from conftest import quick_config, random_checkpoint

SIZE = 64


def blob_images(root: Path, per_class: dict[str, int], *, seed: int = 0) -> Path:
    """Noise (class ``empty``) or noise plus a bright Gaussian blob in a random quadrant (class ``blob``); the
    quadrant, 0..3 in reading order, starts the file name (``q2_007.png``)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for split, n in per_class.items():
        for cls in ("blob", "empty"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                image = rng.normal(60, 20, (SIZE, SIZE))
                q = int(rng.integers(4))
                if cls == "blob":  # its centre well inside the quadrant: a quarter to three quarters across it
                    cy, cx = (np.array([q // 2, q % 2]) + rng.uniform(0.25, 0.75, 2)) * SIZE / 2
                    image += 150 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 4.0**2))
                Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"q{q}_{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def blob_run(tmp_path_factory):
    """resnet18 from scratch, trained to tell a blob from noise (its validation accuracy reaches 1 in 4 epochs)."""
    data = blob_images(tmp_path_factory.mktemp("blobs"), {"train": 40, "val": 10, "test": 12})
    run = fit(quick_config(data, tmp_path_factory.mktemp("runs"), model="resnet18", image_size=SIZE, epochs=4,
                           max_steps_per_epoch=None, batch_size=16, lr=3e-3, label_smoothing=0.0, rot90=False,
                           rotation=180))
    return run, data


def _in_blob_quadrant(explanations) -> float:
    """The fraction of images whose map peaks in the quadrant that holds the blob."""
    hits = [int(e.path.name[1]) == 2 * int(e.peak[0] >= 0.5) + int(e.peak[1] >= 0.5) for e in explanations]
    return sum(hits) / len(hits)


@pytest.mark.slow
def test_the_heatmap_peaks_where_the_blob_is(blob_run, tmp_path):
    run, data = blob_run
    found = explain_images(run, [data / "test" / "blob"], out=tmp_path / "cams", target="blob")
    assert len(found) == 12 and all(e.png.is_file() and e.target == "blob" for e in found)
    assert found[0].layer == "layer4" and found[0].top[0][0] == "blob"
    # A map that ignored the blob would peak in its quadrant one time in four.
    assert _in_blob_quadrant(found) > 0.5


@pytest.mark.slow
def test_explain_from_the_command_line(blob_run, tmp_path, capsys):
    run, data = blob_run
    out = tmp_path / "cams"
    args = ["-q", "explain", str(run), str(data / "test"), "--method", "gradcam++", "--layer", "layer3",
            "--target", "blob", "--out", str(out)]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"wrote 24 picture(s) under {out} (maps of layer layer3)" and len(lines) == 1  # 24 > 20
    pictures = sorted(out.rglob("*.png"))
    assert {p.parent.name for p in pictures} == {"blob", "empty"}  # each class folder kept: no name clashes
    assert all(p.name.endswith(".gradcam++.png") for p in pictures)
    assert main(args) == 2  # a second time: nothing written over
    assert re.search(r"gradcam\+\+\.png exists; choose another --out or pass --overwrite", capsys.readouterr().err)
    # at the finer layer3 map too, the evidence for "blob" is where the blob is
    found = explain_images(run, [data / "test" / "blob"], out=out, method="gradcam++", target="blob",
                           layer="layer3", overwrite=True)
    assert _in_blob_quadrant(found) > 0.5


def test_an_unreadable_image_is_reported_and_the_others_explained(tmp_path, capsys):
    run = random_checkpoint(tmp_path / "run" / "best.pt", ["a", "b"]).parent
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(folder / "ok.png")
    (folder / "torn.png").write_bytes(b"\x89PNG\r\n")
    assert main(["-q", "explain", str(run), str(folder)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(rf"{folder}/ok\.png: [ab] \d\.\d{{3}}, [ab] \d\.\d{{3}}; evidence for [ab] -> "
                        rf"{run}/explain/ok\.gradcam\.png", lines[0])
    assert lines[1].startswith(f"{folder}/torn.png: error: cannot read image")
    # at 32 px the resnet's layer4 map is one pixel: the last map to show anything is layer3's 2x2
    assert lines[2:] == [f"wrote 1 picture(s) under {run}/explain (maps of layer layer3)",
                         "1 image(s) could not be read"]
    with Image.open(run / "explain" / "ok.gradcam.png") as picture:
        assert picture.width > 2 * picture.height  # image, overlay and bars side by side


def test_four_channel_images_and_bad_requests(tmp_path):
    run = random_checkpoint(tmp_path / "run" / "best.pt", ["a", "b"], channels=list(HPA_CHANNELS)).parent
    rng = np.random.default_rng(1)
    for channel in HPA_CHANNELS:  # one image as four channel files, named by its stem
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(tmp_path / f"cell_{channel}.png")
    (found,) = explain_images(run, [tmp_path / "cell"], out=tmp_path / "cams", method="eigencam")
    assert found.error is None and found.png == tmp_path / "cams" / "cell.eigencam.png" and found.png.is_file()
    with pytest.raises(ConfigError, match=r"--target 'c' is not a class of this model; its classes: a, b"):
        explain_images(run, [tmp_path / "cell"], out=tmp_path / "other", target="c")
    with pytest.raises(ConfigError, match=r"explain needs the run's PyTorch weights .* not an ONNX export"):
        explain_images(tmp_path / "m.onnx", [tmp_path / "cell"], out=tmp_path / "other")
