"""Shared test scaffolding: one thread, W&B off, the task/model lists derived from conf/ (never written out
in a test), composed configs, and one tiny trained run reused by the tests that need a checkpoint.

Markers (``--strict-markers``): ``slow`` (subprocess runs / multiruns, seconds each; ``make test-fast``
skips them), ``system`` (real services: SLURM), ``cuda`` (needs a CUDA device; skipped without one).
"""
import os

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from icl_hybrids import paper  # noqa: E402
from icl_hybrids.config import compose_config, group_options  # noqa: E402

torch.set_num_threads(1)

#: every task and named model configured in conf/ (a new YAML is tested without editing a test)
TASKS = group_options("task")
MODELS = group_options("model")
#: the paper's twelve (Table 3 rows), from the paper data module
PAPER_MODELS = list(paper.MODEL_IDS)


def pytest_collection_modifyitems(config, items):
    """``cuda``-marked tests skip cleanly on a machine without a CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def compose():
    """``compose(*overrides)``: a run config composed in-process exactly as ``python -m icl_hybrids`` would."""
    return lambda *ov: compose_config(list(ov))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One finished smoke run (sparse linear, GPT-2, experiment=smoke: 30 steps, checkpoints at 15 and 30),
    trained once per session. Returns its run directory; tests must not modify it."""
    from icl_hybrids.train import run

    root = tmp_path_factory.mktemp("tiny_run")
    run(compose_config(["experiment=smoke", f"out_root={root}", "task=sparse_linear", "model=gpt2"]))
    return root / "sparse_linear" / "gpt2" / "seed0"
