"""Progress bars for long loops (reading a dataset, building the image cache, predicting a folder): on stderr, drawn
only when it is a terminal, and gone when the loop ends."""

from __future__ import annotations

from tqdm import tqdm


def bar(total: int | None, desc: str, *, unit: str = "image") -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, leave=False, disable=None, dynamic_ncols=True)
