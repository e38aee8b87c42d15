from __future__ import annotations

from pathlib import Path

import pytest

from celltune.synthetic import make_dataset


@pytest.fixture(autouse=True)
def _private_caches(tmp_path_factory, monkeypatch):
    """Each test gets an empty torch hub cache and image cache, so no test reads or writes the user's."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    monkeypatch.setenv("CELLTUNE_CACHE_DIR", str(tmp_path_factory.mktemp("image_cache")))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """train/val/test class folders of 32 px synthetic cells: 6 classes, 6/3/3 images each."""
    return make_dataset(tmp_path_factory.mktemp("tiny") / "cells", per_class=(6, 3, 3), size=32, seed=1)
