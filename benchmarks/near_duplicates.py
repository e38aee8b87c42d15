"""Near-duplicate precision, measured: how many distinct generated cells ``celltune check`` pairs, and a contact sheet
of a seeded sample of the pairs it reports on real data, to look at and count the ones that are truly the same cell.

    python benchmarks/near_duplicates.py --discs 500
    python benchmarks/near_duplicates.py --dataset mitocheck_hela16 [--sample 50]

The discs are the scale issue's generator: on a 32x32 grid, ``255 / (1 + exp(dist - r))`` with the centre uniform in
12..20 px and the radius in 6..10 px, Gaussian noise of sd 3, saved as 8-bit PNG, each a different cell (two classes
at random). A dataset's run prints how many pairs it reports and how many of them stand within one of the dataset's
groups (a movie, a source image: where the same cell can be captured twice), and writes OUT/near-DATASET.png: each
row five pairs, the two images of each side by side, numbered, with their labels and detail correlation
(OUT/near-DATASET.txt lists the numbered pairs' files).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image
from suite import DATASETS

from celltune.audit.check import read_all
from celltune.audit.duplicates import near_pairs
from celltune.data.discovery import discover_pool
from celltune.reports.run_files import save_figure


def write_discs(root: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32]
    paths = []
    for i in range(n):
        cy, cx = rng.uniform(12, 20, size=2)
        r = rng.uniform(6, 10)
        disc = 255 / (1 + np.exp(np.hypot(yy - cy, xx - cx) - r)) + rng.normal(0, 3, (32, 32))
        path = root / f"class{rng.integers(2)}" / f"disc{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(disc.round().clip(0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def discs(n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_discs(Path(tmp), n)
        start = time.perf_counter()
        facts = read_all(paths, workers=1)
        pairs = near_pairs([facts[p] for p in paths])
        seconds = time.perf_counter() - start
    paired = {i for i, j, _ in pairs} | {j for i, j, _ in pairs}
    return {"discs": n, "pairs": len(pairs), "images_in_a_pair": len(paired), "share": len(paired) / n,
            "seconds": round(seconds, 1)}


def sheet(paths: list[Path], labels: list[str], pairs: list[tuple[int, int, float]], out: Path, *, sample: int,
          seed: int) -> list[int]:
    """The contact sheet of a seeded sample of ``pairs``; the sampled pairs' indices."""
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(pairs), size=min(sample, len(pairs)), replace=False).tolist())
    columns = 5  # pairs per row
    rows = (len(chosen) + columns - 1) // columns
    fig = Figure(figsize=(columns * 2.4, rows * 1.4))
    for slot, k in enumerate(chosen):
        i, j, corr = pairs[k]
        for part, index in enumerate((i, j)):
            ax = fig.add_subplot(rows, columns * 2, 2 * slot + part + 1)
            ax.imshow(np.asarray(Image.open(paths[index]).convert("L")), cmap="gray", interpolation="nearest")
            ax.set_axis_off()
            ax.set_title(f"#{slot + 1} {labels[index][:8]}" if part == 0 else f"{labels[index][:8]} {corr:.2f}",
                         fontsize=7)
    save_figure(fig, out)
    return chosen


def dataset_pairs(name: str, *, sample: int, seed: int, out: Path) -> dict:
    dataset = DATASETS[name]
    found = discover_pool(dataset.path)
    samples = found.samples
    paths = [s.path for s in samples]
    start = time.perf_counter()
    facts = read_all(paths)
    pairs = near_pairs([facts[p] for p in paths])
    seconds = time.perf_counter() - start
    labels = [found.class_names[int(s.label)] for s in samples]  # type: ignore[arg-type]
    group = re.compile(dataset.groups) if dataset.groups else None

    def group_of(p: Path) -> str | None:
        match = group.search(p.relative_to(dataset.path).as_posix()) if group else None
        return match.group(1) if match else None

    within = sum(group_of(paths[i]) is not None and group_of(paths[i]) == group_of(paths[j]) for i, j, _ in pairs)
    chosen = sheet(paths, labels, pairs, out / f"near-{name}.png", sample=sample, seed=seed)
    rel = [p.relative_to(dataset.path) for p in paths]
    listing = [f"#{n + 1} {rel[pairs[k][0]]} = {rel[pairs[k][1]]} r={pairs[k][2]:.3f}" for n, k in enumerate(chosen)]
    (out / f"near-{name}.txt").write_text("\n".join(listing) + "\n")
    return {"dataset": name, "images": len(paths), "pairs": len(pairs), "within_one_group": within,
            "other_labels": sum(labels[i] != labels[j] for i, j, _ in pairs), "seconds": round(seconds, 1),
            "sheet": str(out / f"near-{name}.png")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--discs", type=int, help="generated distinct discs to pair")
    p.add_argument("--dataset", choices=list(DATASETS))
    p.add_argument("--sample", type=int, default=50, help="pairs on the contact sheet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default="runs/near")
    args = p.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.discs:
        print(json.dumps(discs(args.discs)))
    if args.dataset:
        if not DATASETS[args.dataset].path.is_dir():
            print(f"no data at {DATASETS[args.dataset].path}", file=sys.stderr)
            return 2
        print(json.dumps(dataset_pairs(args.dataset, sample=args.sample, seed=args.seed, out=out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
