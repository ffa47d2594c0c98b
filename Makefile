# Two entry points for a fresh machine: `make repro` and `make test`. Both are idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
INSTALLED := $(VENV)/.installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
PLOTS_TEMPLATE := .dvc/plots/offline.html
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Stage commands call `python`; put the venv first so they get its packages.
RUN := PATH="$(BIN):$$PATH" TF_CPP_MIN_LOG_LEVEL=2

.PHONY: setup dataset repro test clean-venv

$(INSTALLED): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

# dvc plots show loads Vega from a CDN by default; this page carries it inline (works offline).
$(PLOTS_TEMPLATE): $(INSTALLED) scripts/offline_plots_template.py
	$(BIN)/python scripts/offline_plots_template.py $@

setup: $(INSTALLED) $(PLOTS_TEMPLATE) dataset

# Fashion-MNIST comes from Debian's package; without apt-get the prepare stage downloads it.
dataset:
	@if [ ! -f $(FASHION_MNIST) ] && command -v apt-get >/dev/null; then \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; \
	fi

# DVC hashes the image folder before any stage runs, and reading a FIFO or a link to
# /dev/zero there never ends: the check names such entries instead of a silent hang.
repro: setup
	$(BIN)/cnnpipe check-images
	$(RUN) $(BIN)/dvc repro
	$(BIN)/python scripts/sync_readme.py

test: setup
	$(RUN) $(BIN)/python -m pytest

clean-venv:
	rm -rf $(VENV)
