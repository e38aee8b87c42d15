import json
import re
import subprocess

import numpy as np
import pytest

from celltune.data.samples import Sample
from celltune.reports.html import worst_misclassified
from celltune.training.fit import fit

from conftest import chromium, quick_config, require


def test_worst_misclassified_are_the_most_confident_mistakes(tmp_path):
    samples = [Sample(tmp_path / f"{i}.png", label) for i, label in enumerate([0, 1, 1, 0])]
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7]])
    worst = worst_misclassified(samples, probs)
    assert [(s.path.name, true, predicted) for s, true, predicted, _ in worst] == [("1.png", 1, 0), ("3.png", 0, 1)]
    assert [p for *_, p in worst] == [0.8, 0.7]


@pytest.fixture(scope="module")
def run_with_report(tiny_data, tmp_path_factory):
    return fit(quick_config(tiny_data, tmp_path_factory.mktemp("report"), epochs=1, tta="flips"))


@pytest.mark.slow
def test_report_html_is_self_contained_and_complete(run_with_report):
    page = (run_with_report / "report.html").read_text()
    for heading in ("Per class", "Confusion matrix", "Training curves", "Most confident mistakes", "Dataset",
                    "Configuration", "Where the model looked", "mean class accuracy (ACA)",
                    "best validation mean class accuracy (ACA)", "Calibration", "Prediction sets"):
        assert heading in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing fetched from the network
    images = re.findall(r'src="data:image/png;base64,', page)
    metrics = json.loads((run_with_report / "metrics.json").read_text())
    wrong = metrics["num_samples"] - round(metrics["accuracy"] * metrics["num_samples"])
    right_classes = sum(row["recall"] > 0 for row in metrics["per_class"].values())
    heatmaps = min(wrong, 6) + right_classes  # the most confident mistakes, one correct image per class
    # 2 confusion matrices, 2 curves, the reliability diagram, thumbnails, heatmaps
    assert len(images) == 5 + min(wrong, 12) + heatmaps
    cams = page[page.index('<div class="cams">'):]
    assert cams.count("<figure>") == heatmaps and ("predicted" in cams) == (wrong > 0)
    assert metrics["tta"] == "flips" and "roc_auc_macro" in metrics
    assert f"<td>accuracy</td><td>{metrics['accuracy']:.4f}</td>" in page


@pytest.mark.slow
def test_report_renders_in_headless_chromium(run_with_report, tmp_path):
    browser = chromium()
    require(browser is not None, "Chromium not installed (Debian package chromium)")
    assert browser is not None
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([browser, *flags, "--dump-dom", (run_with_report / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert "Most confident mistakes" in dom and "celltune report" in dom
    # Every inline image decodes: the rendered page reports each image's natural width.
    script = ("<script>window.onload=()=>{document.title=[...document.images].every(i=>i.naturalWidth>0)"
              "?'ALL-IMAGES-OK':'BROKEN'}</script>")
    probe = tmp_path / "probe.html"
    probe.write_text((run_with_report / "report.html").read_text().replace("</body>", script + "</body>"))
    dom = subprocess.run([browser, *flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert "<title>ALL-IMAGES-OK</title>" in dom
