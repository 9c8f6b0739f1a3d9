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
# torch: pyproject.toml takes a range (TORCH_RANGE); when torch is absent, or outside the range, the pin
# is installed first (a CPU wheel on CPU machines; never a CUDA build pulled in by the range).
TORCH_PIN := torch==2.13.0
TORCH_RANGE := >=2.4,<2.14
# the same range as (major, minor) bounds, checked without `packaging` (a fresh venv may not have it)
TORCH_OK := import re, sys, torch; v = tuple(map(int, re.match(r"(\d+)\.(\d+)", torch.__version__).groups())); \
  sys.exit(0 if (2, 4) <= v < (2, 14) else 1)
export OMP_NUM_THREADS ?= 1
export WANDB_MODE ?= offline

.PHONY: help install demo test lint test-fast sweep-plan sweep-cpu sweep-slurm table3 figures replicate-cpu bench models clean

help:
	@echo "make demo    - install if needed, then a real CPU training run with score + plot"
	@echo "make test    - install if needed, then run the test suite"
	@echo "make lint    - ruff over icl_hybrids/ and tests/ (run by make test)"
	@echo "make models  - table of the named architectures and their parameter counts"
	@echo "make bench   - side-by-side speed benchmark (quick mode)"
	@echo "make sweep-plan | sweep-cpu | sweep-slurm | table3 | figures  (see README)"
	@echo "make replicate-cpu - reduced-scale replication of the paper's claims (~66 min on 2 cores; OPTIONAL=true ~71) -> docs/replication.md"

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q --upgrade "pip>=23"
	@# Keep a torch that is already there (CUDA or CPU build) when it satisfies the range; otherwise take the pin.
	@if $(PY) -c '$(TORCH_OK)' 2>/dev/null; then \
	  echo "keeping installed torch $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	else $(PIP) install -q "$(TORCH_PIN)"; fi
	$(PIP) install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m icl_hybrids.demo

# pytest-xdist workers: one per core, at most 4 (the tests are single-threaded; a file's tests share a worker,
# so module fixtures such as the SLURM cluster start once). TEST_JOBS=0 runs them in this process.
TEST_JOBS ?= $(shell python3 -c 'import os; print(min(4, len(os.sched_getaffinity(0))))' 2>/dev/null || echo 2)
TEST_DIST := $(if $(filter 0,$(TEST_JOBS)),-p no:xdist,-n $(TEST_JOBS) --dist loadfile)

test: install lint
	$(PY) -m pytest -q -x $(TEST_DIST) --durations=15

# ruff (pyproject.toml [tool.ruff]); part of make test, so CI fails on a lint error
lint: install
	$(PY) -m ruff check icl_hybrids tests

test-fast: install
	$(PY) -m pytest -q -x $(TEST_DIST) -m "not slow and not system"

models: install
	$(PY) -m icl_hybrids.models

bench: install
	$(PY) -m icl_hybrids.bench quick=true

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
	$(PY) -m icl_hybrids.sweep run jobs=$(JOBS) experiment=cpu_sweep $(ARGS)
	$(MAKE) --no-print-directory table3 figures SWEEP=multirun_outputs/cpu

# The sacct shim (scripts/slurm/bin) is only used where accounting is off; a real sacct is run otherwise.
sweep-slurm: install
	PATH="$(SLURM_BIN):$$PATH" $(PY) -m icl_hybrids experiment=paper_sweep hydra/launcher=slurm \
	  $(if $(PARTITION),hydra.launcher.partition=$(PARTITION)) $(if $(ACCOUNT),hydra.launcher.account=$(ACCOUNT)) \
	  hydra.launcher.timeout_min=$(TIME) hydra.launcher.gpus_per_node=$(GPUS) hydra.launcher.cpus_per_task=$(CPUS) \
	  hydra.launcher.mem_gb=$(MEM) hydra.launcher.array_parallelism=$(PARALLEL) $(ARGS)

table3: install
	$(PY) -m icl_hybrids.aggregate dir=$(SWEEP)

figures: install
	$(PY) -m icl_hybrids.aggregate dir=$(SWEEP) figures_only=true

# ---- replication at CPU scale (docs/replication.md) -----------------------------------------------------
# make replicate-cpu [JOBS=2] [ARGS="..."]   the claim groups (conf/experiment/replicate_cpu_*.yaml), resumable,
#                                            then docs/replication.md + docs/replication/*.png from the results
REPLICATE ?= multirun_outputs/replicate_cpu
# OPTIONAL=true: also the c6_* groups (the paper's outliers under model/profile=paper_code; ~12% more time)
OPTIONAL ?= false

# (the report is written even when a run failed; the target then exits with the run's status)
replicate-cpu: install
	$(PY) -m icl_hybrids.replicate run jobs=$(JOBS) optional=$(OPTIONAL) $(ARGS); rc=$$?; \
	$(PY) -m icl_hybrids.replicate report dir=$(REPLICATE) && exit $$rc

# ---- GPU check (docs/performance.md, "GPU check") ---------------------------------------------------------
# make gpu-wheels   download the pure-Python wheels a bare CUDA machine (its own torch, no network) lacks, into
#                   $(GPU_WHEELS)/, pinned to the versions installed here (the combination the tests ran with)
# make gpu-check    scripts/gpu_check.sh: install them, then CUDA tests, bench, 2000-step run, evaluation (<= 8 min)
GPU_WHEELS ?= gpu_wheels
# the project's runtime needs a CUDA image may lack (pyproject.toml), their pure-Python dependencies, and
# setuptools for the editable install's isolated build (--no-index: it comes from this folder too)
GPU_WHEEL_PKGS := hydra-core omegaconf lightning lightning-utilities torchmetrics submitit hydra-submitit-launcher \
  hydra-joblib-launcher tensorboardX packaging typing-extensions fsspec tqdm cloudpickle joblib setuptools
# the version of each package installed here, name==version (the bare name for one not installed here)
GPU_PIN = $(shell $(PY) -c 'import importlib.metadata as m, sys; v = lambda n: f"{n}=={m.version(n)}" if \
  any(m.distributions(name=n)) else n; print(" ".join(map(v, sys.argv[1:])))' $(1))

.PHONY: gpu-wheels gpu-check
gpu-wheels: install
	mkdir -p $(GPU_WHEELS)
	$(PIP) download -q --only-binary=:all: --no-deps -d $(GPU_WHEELS) $(call GPU_PIN,$(GPU_WHEEL_PKGS))
	@# antlr4 4.9.3 (what omegaconf 2.3 / hydra 1.3 require) is an sdist only on PyPI: built here, pure Python
	$(PIP) wheel -q --no-deps -w $(GPU_WHEELS) antlr4-python3-runtime==4.9.3
	@# PyYAML is compiled: the wheels for CPython 3.10-3.13 on x86-64 Linux (the script installs only the one
	@# that fits, and only where PyYAML is missing)
	for v in 3.10 3.11 3.12 3.13; do \
	  $(PIP) download -q --only-binary=:all: --no-deps -d $(GPU_WHEELS) --python-version $$v --implementation cp \
	    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 $(call GPU_PIN,PyYAML) || exit 1; \
	done
	@ls $(GPU_WHEELS) | wc -l | xargs echo "wheels in $(GPU_WHEELS)/:"; du -sh $(GPU_WHEELS)

gpu-check:
	bash scripts/gpu_check.sh --wheels $(GPU_WHEELS) $(ARGS)
