# The two commands: `make run` (set up everything, then start the bot) and `make test` (what CI runs).
# Both are idempotent: the environment is rebuilt only when pyproject.toml changes, models download only when
# missing. TORCH_INDEX=<an index URL> installs torch from another index (a CPU-only build, say).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
TORCH ?= torch==2.14.1 torchvision==0.29.1
TORCH_INDEX ?=
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip -q --disable-pip-version-check

.PHONY: run test check clean-venv

run: $(VENV)/.installed
	$(BIN)/python -m bot.firstrun
	$(BIN)/python -m bot

check: $(VENV)/.installed
	$(BIN)/python -m bot --check

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.torch: | $(BIN)/python
	$(PIP) install $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(TORCH)
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.torch
	$(PIP) install -e '.[dev]'
	touch $@ $(VENV)/.installed

clean-venv:
	rm -rf $(VENV)
