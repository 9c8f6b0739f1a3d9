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

# ---- sweeps (docs/sweeps.md) -------------------------------------------------------------------------
# make sweep-plan [ARGS="seeds=3 task=linear"]       the paper sweep's job list, nothing run (72 lines)
# make sweep-cpu [JOBS=2]                            reduced sweep on this CPU, then table3 + figures
# make sweep-slurm PARTITION=gpu [ACCOUNT= TIME=minutes GPUS=1 CPUS=8 MEM=32 PARALLEL=64 ARGS=...]
# make table3 SWEEP=<dir> / make figures SWEEP=<dir>
SWEEP ?= multirun_outputs/cpu
ARGS ?=
JOBS ?= 2
PARTITION ?=
ACCOUNT ?=
TIME ?= 1440
GPUS ?= 1
CPUS ?= 8
MEM ?= 32
PARALLEL ?= 64
SLURM_BIN ?= $(CURDIR)/scripts/slurm/bin

sweep-plan: install
	@$(PY) -m icl_hybrids.sweep experiment=paper_sweep $(ARGS)

sweep-cpu: install
	$(PY) -m icl_hybrids.sweep run -j $(JOBS) experiment=cpu_sweep $(ARGS)
	$(MAKE) --no-print-directory table3 figures SWEEP=multirun_outputs/cpu

# The sacct shim (scripts/slurm/bin) is only used where accounting is off; a real sacct is run otherwise.
sweep-slurm: install
	PATH="$(SLURM_BIN):$$PATH" $(PY) -m icl_hybrids experiment=paper_sweep hydra/launcher=slurm \
	  $(if $(PARTITION),hydra.launcher.partition=$(PARTITION)) $(if $(ACCOUNT),hydra.launcher.account=$(ACCOUNT)) \
	  hydra.launcher.timeout_min=$(TIME) hydra.launcher.gpus_per_node=$(GPUS) hydra.launcher.cpus_per_task=$(CPUS) \
	  hydra.launcher.mem_gb=$(MEM) hydra.launcher.array_parallelism=$(PARALLEL) $(ARGS)

table3: install
	$(PY) -m icl_hybrids.aggregate $(SWEEP)

figures: install
	$(PY) -m icl_hybrids.aggregate $(SWEEP) --figures-only
