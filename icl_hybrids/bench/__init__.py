"""Side-by-side speed benchmarks (issue "Performance"; results and method in docs/performance.md).

    python -m icl_hybrids.bench [quick=true] [json=FILE] [threads=N] [only=PREFIX[,PREFIX]] [compile=true]
                                [compile_mode=MODE] [reps=N]

Every comparison runs in this process, on the current device (CUDA if available, else CPU with
``threads=`` intra-op threads, default 1). The two implementations of an entry are interleaved rep by
rep (order alternating each rep), so load from other processes on a shared machine hits both alike.
Reported per implementation: ``min_s`` and ``median_s`` over the timed reps and ``peak_mem_mb`` of one
extra, untimed call (the warm-up). ``speedup`` = reference min / ours min (``speedup_median``: of the
medians). Entries (top-level keys of the printed JSON object):

* ``baselines.<name>``: our batched estimator (``icl_hybrids.baselines``) vs the reference code bases'
  per-prefix (and per-prompt) fits (Garg et al., dtsip/in-context-learning ``src/models.py``),
  on identical prompts; ``max_abs_diff`` over the well-posed prefixes.
* ``train_step.<model>``: steps/s of forward + backward + Adam; gpt2 / llama / mamba also against
  transformers' GPT2Model / LlamaModel / MambaModel of identical shape and weights (``speedup_vs_hf``).
* ``train_step_bf16.<model>``: our bf16 autocast step (``trainer.precision=bf16-mixed``; fp32 master weights)
  vs our fp32 step, same model and batch (``speedup`` = fp32 min / bf16 min).
* every ``train_step*`` entry: ``roofline.<side>`` (FLOPs per step by :mod:`.flops`' documented rule, achieved
  GFLOP/s, ``mfu`` = fraction of the fp32 / bf16 matmul peak measured in the same run, ``meta.matmul_peak``);
  ``mfu`` / ``gflops`` at the entry's top level are ours.
* ``train_step_ratio.mamba_vs_gpt2``: Mamba and GPT-2 train steps at the same width, depth, length and
  batch, interleaved in one run (``ratio`` = mamba min / gpt2 min), plus the Mamba step on the
  pure-PyTorch path (``scan="loop"``, ``nn.Conv1d``) for before/after.
* ``mamba_scan``: our default selective scan vs mambapy's ``pscan`` formulation and our pure-PyTorch
  loop scan (fwd + bwd), with the agreement against ``ops.selective_scan_ref``.
* ``evaluate``: seconds for one checkpoint's evaluation (prompts, model, baselines, summary).
* ``meta``: versions, device, threads, sizes, the memory method and the ``targets`` with pass/fail.

``python -m icl_hybrids.bench scan_sweep=true`` prints the older per-implementation scan table (every
``ops`` scan x chunk sizes at two sizes, and mambapy's ``pscan``; docs/mamba.md).

Layout: :mod:`.harness` (``Runner``: interleaved timing and peak memory; the JSON number helpers),
:mod:`.sizes` (sizes, entries, targets), :mod:`.flops` (FLOP count, matmul peak, roofline), one module per
suite (:mod:`.baselines`, :mod:`.train_step`, :mod:`.mamba`, :mod:`.evaluate`), :mod:`.driver` (``run``,
``main``), :mod:`.gpu_check` (the JSON and summary of scripts/gpu_check.sh). The reference implementations
the suites time ours against (``ref_lasso``, ``ref_two_layer_nn_matched``, ``mambapy_scan``, ...) are
in :mod:`icl_hybrids.refs`, shared with the tests.
"""
from __future__ import annotations

from .baselines import BASELINE_TASKS, bench_baseline
from .driver import add_mfu, entry_names, main, run
from .evaluate import bench_evaluate
from .flops import closed_form_transformer_flops, count_train_step_flops, cpu_bf16_support, matmul_peak
from .harness import Memory, Runner
from .mamba import bench_mamba_scan, scan_sweep
from .sizes import (
    AGREEMENT_TOL,
    BASELINE_NAMES,
    BF16_MODELS,
    EVAL_MODEL,
    SIZES,
    TARGETS,
    TARGETS_MAX,
    TRAIN_MODELS,
)
from .train_step import (
    HF_BUILDERS,
    bench_train_step,
    bench_train_step_bf16,
    bench_train_step_ratio,
    hf_gpt2,
    hf_llama,
    hf_mamba,
)

__all__ = [
    "AGREEMENT_TOL", "BASELINE_NAMES", "BASELINE_TASKS", "BF16_MODELS", "EVAL_MODEL", "HF_BUILDERS", "Memory",
    "Runner", "SIZES", "TARGETS", "TARGETS_MAX", "TRAIN_MODELS", "add_mfu", "bench_baseline", "bench_evaluate",
    "bench_mamba_scan", "bench_train_step", "bench_train_step_bf16", "bench_train_step_ratio",
    "closed_form_transformer_flops", "count_train_step_flops", "cpu_bf16_support", "entry_names", "hf_gpt2",
    "hf_llama", "hf_mamba", "main", "matmul_peak", "run", "scan_sweep",
]
