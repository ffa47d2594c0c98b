# Two entry points for a fresh machine: `make repro` and `make test`. Both are idempotent.
SHELL := /bin/bash
PYTHON ?= python3
# `make VENV=DIR ...` uses another environment.
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
# The stamp holds the hash of what it installed and is judged by it, not by its date: a fresh
# clone's files are newer than an environment made from the same lock, and must not reinstall
# (or re-point the editable install at that clone). A different hash, or none, reinstalls.
LOCK_HASH := $(shell cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
INSTALLED := $(VENV)/.installed
STALE := $(if $(filter $(LOCK_HASH),$(shell cat $(INSTALLED) 2>/dev/null)),,FORCE)
FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
PLOTS_TEMPLATE := .dvc/plots/offline.html
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Stage commands call `python`; put the venv first so they get its packages.
RUN := PATH="$(BIN):$$PATH" TF_CPP_MIN_LOG_LEVEL=2

.PHONY: setup dataset repro test quick-test slow-test lock clean-venv FORCE

# requirements.txt is the lock: every package, transitive ones included, at one version.
# pip-sync (from the lock) then removes what an older lock installed and this one does not.
$(INSTALLED): $(STALE)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/pip-sync -q --python-executable $(BIN)/python requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	echo $(LOCK_HASH) > $@

FORCE:

# After editing requirements.in or pyproject.toml's dependencies: resolve the lock anew.
lock: $(INSTALLED)
	$(BIN)/pip-compile -q --strip-extras --no-emit-index-url --no-emit-find-links \
		--output-file requirements.txt requirements.in pyproject.toml

# dvc plots show loads Vega from a CDN by default; this page carries it inline (works offline).
$(PLOTS_TEMPLATE): $(INSTALLED) scripts/offline_plots_template.py
	$(BIN)/python scripts/offline_plots_template.py $@

setup: $(INSTALLED) $(PLOTS_TEMPLATE) dataset

# Fashion-MNIST comes from Debian's package; without apt-get the prepare stage downloads it.
dataset:
	@if [ ! -f $(FASHION_MNIST) ] && command -v apt-get >/dev/null; then \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; \
	fi

# preflight validates params.yaml in full and, on an image-folder source only, checks the
# folder: one line instead of DVC's parse errors, and no silent hang where DVC would hash a
# FIFO or a link to /dev/zero forever. It runs this checkout's code, as the stage commands do.
repro: setup
	PYTHONPATH=src $(BIN)/python -m cnnpipe.cli preflight
	$(RUN) $(BIN)/dvc repro
	$(BIN)/python scripts/sync_readme.py

# The whole suite, tier by tier: the slow tier runs only once the quick one passes. Two test
# processes (pytest-xdist), a module each at a time so module fixtures are built once: much of
# a tiny pipeline's time is single-threaded (DVC, start-up, graph tracing). Modules go out in
# the order tests/conftest.py gives (longest first), not xdist's order by number of tests.
TEST_WORKERS ?= 2
PYTEST := $(RUN) $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: quick-test slow-test

# Undeclared imports (seconds), then every test not marked slow (minutes): before each push.
quick-test: setup
	$(BIN)/deptry src stages
	$(PYTEST) -m "not slow"

# End-to-end runs of the pipeline, make and the CI workflow on fresh clones.
slow-test: setup
	$(PYTEST) -m slow

clean-venv:
	rm -rf $(VENV)
