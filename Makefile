# icl_hybrids: every target installs what is missing first.
#   make demo   a real CPU run (a few minutes) with its score and plot
#   make test   the test suite (what CI runs)
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Use the active virtualenv if there is one, else .venv/ in the repo root.
ifdef VIRTUAL_ENV
VENV := $(VIRTUAL_ENV)
else
VENV := $(CURDIR)/.venv
endif
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.icl_hybrids-installed
# The torch pin: 2.13.0 (a CPU wheel on CPU machines; never a CUDA build pulled by a range).
TORCH_PIN := torch==2.13.0
export OMP_NUM_THREADS ?= 1
export WANDB_MODE ?= offline

.PHONY: help install demo test test-fast sweep-plan sweep-cpu sweep-slurm table3 figures bench models clean

help:
	@echo "make demo    - install if needed, then a real CPU training run with score + plot"
	@echo "make test    - install if needed, then run the test suite"
	@echo "make models  - table of the named architectures and their parameter counts"
	@echo "make bench   - side-by-side speed benchmark (quick mode)"
	@echo "make sweep-plan | sweep-cpu | sweep-slurm | table3 | figures  (see README)"

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q --upgrade "pip>=23"
	@# Keep a torch that is already there (e.g. a CUDA build of 2.13.0); otherwise take the pin,
	@# which resolves to the local CPU wheel on CPU machines.
	@if $(PY) -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then \
	  echo "keeping installed torch $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	else $(PIP) install -q "$(TORCH_PIN)"; fi
	$(PIP) install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m icl_hybrids.demo

test: install
	$(PY) -m pytest -q -x --durations=15

test-fast: install
	$(PY) -m pytest -q -x -m "not slow and not system"

models: install
	$(PY) -m icl_hybrids.models

bench: install
	$(PY) -m icl_hybrids.bench --quick

clean:
	rm -rf outputs demo_outputs .pytest_cache
