"""Sizes, entries and targets of the benchmark (``full``, ``quick`` = ``make bench``, ``tiny`` = tests)."""
from __future__ import annotations

# ----------------------------------------------------------------------------------------------------
# Sizes. "full": the paper's sizes; "quick": `make bench` (< 3 min on 2 CPU cores); "tiny": the tests.
# ----------------------------------------------------------------------------------------------------
SIZES = {
    "full": dict(
        prompts=dict(B=64, N=41, d=20),
        # prompts the slow references fit (ours always runs on all B; reference time is scaled by B/n)
        ref_prompts=dict(least_squares=64, averaging=64, knn=64, lasso=64, decision_tree=64, two_layer_nn=2),
        nn_ref_prefix_stride=2,
        model=dict(n_layer=12, d_model=256, n_head=8), task=dict(n_dims=20, n_points=41), batch=64,
        scan=dict(B=64, T=82, D=1024, N=16), eval_prompts=1280, reps=5, slow_reps=3, hf_mamba_reps=1,
        hf_mamba_batch=8, scan_reps=3, eval_reps=2),
    "quick": dict(
        prompts=dict(B=64, N=41, d=20),
        ref_prompts=dict(least_squares=64, averaging=64, knn=64, lasso=8, decision_tree=16, two_layer_nn=1),
        nn_ref_prefix_stride=5, baseline_kwargs={"two_layer_nn": {"n_steps": 50}},
        model=dict(n_layer=4, d_model=64, n_head=4), task=dict(n_dims=5, n_points=11), batch=64,
        scan=dict(B=64, T=82, D=512, N=16), eval_prompts=256, reps=5, slow_reps=2, hf_mamba_reps=3, scan_reps=2,
        eval_reps=1),
    "tiny": dict(
        prompts=dict(B=6, N=9, d=4),
        ref_prompts=dict(least_squares=6, averaging=6, knn=6, lasso=3, decision_tree=3, two_layer_nn=2),
        nn_ref_prefix_stride=2, baseline_kwargs={"two_layer_nn": {"n_steps": 20}},
        model=dict(n_layer=2, d_model=32, n_head=4), task=dict(n_dims=4, n_points=7), batch=4,
        scan=dict(B=2, T=9, D=16, N=4), eval_prompts=16, reps=1, slow_reps=1, hf_mamba_reps=1, scan_reps=1,
        eval_reps=1),
}
# The eval-size model of the `evaluate` entry (random weights): the paper's GPT-2 except in tiny mode.
EVAL_MODEL = {"full": SIZES["full"]["model"], "quick": SIZES["full"]["model"], "tiny": SIZES["tiny"]["model"]}

TRAIN_MODELS = ("gpt2", "llama", "mamba", "llama_mamba_pos_ffn")
#: the models of the ``train_step_bf16.<model>`` entries (our bf16 autocast step vs our fp32 step)
BF16_MODELS = TRAIN_MODELS
BASELINE_NAMES = ("least_squares", "averaging", "knn", "lasso", "two_layer_nn", "decision_tree")
# (entry, key, threshold): checked on CPU (the targets of the issue); recorded, not asserted.
TARGETS = (
    ("baselines.lasso", "speedup", 10.0), ("baselines.two_layer_nn", "speedup", 20.0),
    ("baselines.least_squares", "speedup", 1.0), ("baselines.knn", "speedup", 1.0),
    ("baselines.averaging", "speedup", 1.0),
    ("train_step.gpt2", "speedup_vs_hf", 1.3), ("train_step.llama", "speedup_vs_hf", 1.3),
    ("train_step.mamba", "speedup_vs_hf", 3.0), ("mamba_scan", "speedup_vs_mambapy", 5.0),
    # issue 15: fp32 MFU (matmul + attention FLOPs / step time / the run's fp32 1024^3 matmul peak) and the
    # bf16 autocast step's speedup over fp32, both at paper size on an AVX512-BF16 / AMX CPU
    ("train_step.gpt2", "mfu", 0.85), ("train_step_bf16.gpt2", "speedup", 1.8),
)
#: targets stated for the paper size only (quick/tiny runs record them with a note)
PAPER_SIZE_TARGETS = {"train_step.gpt2.mfu", "train_step_bf16.gpt2.speedup"}
# (entry, key, threshold): value must be <= threshold (issue 12: Mamba step within 2.5x of GPT-2's).
TARGETS_MAX = (("train_step_ratio.mamba_vs_gpt2", "ratio", 2.5),)
AGREEMENT_TOL = 1e-4
