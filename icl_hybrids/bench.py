"""Side-by-side speed benchmarks (issue "Performance"; results and method in docs/performance.md).

    python -m icl_hybrids.bench [--quick] [--json FILE] [--threads N] [--only PREFIX[,PREFIX]] [--compile]

Every comparison runs in this process, on the current device (CUDA if available, else CPU with
``--threads`` intra-op threads, default 1). The two implementations of an entry are interleaved rep by
rep (order alternating each rep), so load from other processes on a shared machine hits both alike.
Reported per implementation: ``min_s`` and ``median_s`` over the timed reps and ``peak_mem_mb`` of one
extra, untimed call (the warm-up). ``speedup`` = reference min / ours min (``speedup_median``: of the
medians). Entries (top-level keys of the printed JSON object):

* ``baselines.<name>``: our batched estimator (``icl_hybrids.baselines``) vs the reference code bases'
  per-prefix (and per-prompt) fits (Garg et al., dtsip/in-context-learning ``src/models.py``),
  on identical prompts; ``max_abs_diff`` over the well-posed prefixes.
* ``train_step.<model>``: steps/s of forward + backward + Adam; gpt2 / llama / mamba also against
  transformers' GPT2Model / LlamaModel / MambaModel of identical shape and weights (``speedup_vs_hf``).
* ``mamba_scan``: our default selective scan vs mambapy's ``pscan`` formulation (fwd + bwd).
* ``evaluate``: seconds for one checkpoint's evaluation (prompts, model, baselines, summary).
* ``meta``: versions, device, threads, sizes, the memory method and the ``targets`` with pass/fail.
"""
from __future__ import annotations

import argparse
import copy
import ctypes
import datetime
import gc
import json
import math
import os
import platform
import re
import resource
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

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
BASELINE_NAMES = ("least_squares", "averaging", "knn", "lasso", "two_layer_nn", "decision_tree")
# (entry, key, threshold): checked on CPU (the targets of the issue); recorded, not asserted.
TARGETS = (
    ("baselines.lasso", "speedup", 10.0), ("baselines.two_layer_nn", "speedup", 20.0),
    ("baselines.least_squares", "speedup", 1.0), ("baselines.knn", "speedup", 1.0),
    ("baselines.averaging", "speedup", 1.0),
    ("train_step.gpt2", "speedup_vs_hf", 1.3), ("train_step.llama", "speedup_vs_hf", 1.3),
    ("train_step.mamba", "speedup_vs_hf", 3.0), ("mamba_scan", "speedup_vs_mambapy", 5.0),
)
AGREEMENT_TOL = 1e-4


# ----------------------------------------------------------------------------------------------------
# Timing and memory
# ----------------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Memory:
    """Peak memory of one call, in MiB above the level at its start.

    CUDA: ``torch.cuda.max_memory_allocated`` (tensors only) after ``reset_peak_memory_stats``.
    CPU (Linux): the process's resident-set high-water mark ``VmHWM`` is reset by writing 5 to
    ``/proc/self/clear_refs``, free heap memory is returned to the OS first (``malloc_trim``), and the
    peak is ``VmHWM`` after the call minus ``VmRSS`` before it. It covers every allocation (torch, numpy,
    scikit-learn, Python objects), at page granularity. ``tracemalloc`` is not used: it does not see
    torch's allocations. Without ``clear_refs`` (not Linux) the ``ru_maxrss`` increase is reported,
    which is only a lower bound (0 unless the call exceeds the process's previous peak).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self._libc = None
        self.clear_refs = False
        if device.type == "cuda":
            self.method = "torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus memory_allocated before"
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.clear_refs = bool(self._status().get("VmHWM"))
        except OSError:
            self.clear_refs = False
        try:
            self._libc = ctypes.CDLL("libc.so.6")
        except OSError:
            self._libc = None
        self.method = ("resident set: VmHWM after the call minus VmRSS before it (VmHWM reset via "
                       "/proc/self/clear_refs, malloc_trim before); all allocations, page granularity"
                       if self.clear_refs else "ru_maxrss increase during the call (lower bound)")

    @staticmethod
    def _status() -> dict[str, int]:
        try:
            text = open("/proc/self/status").read()
        except OSError:
            return {}
        return {k: int(v) for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.M)}

    def measure(self, fn: Callable[[], object]) -> float:
        gc.collect()
        if self.device.type == "cuda":
            _sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
            fn()
            _sync(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - base) / 2**20
        if self._libc is not None:
            try:
                self._libc.malloc_trim(0)
            except AttributeError:
                pass
        if self.clear_refs:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            base = self._status()["VmRSS"]
            fn()
            return max(0, self._status()["VmHWM"] - base) / 1024
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        fn()
        return max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024


class Runner:
    """Interleaved timing of named callables, plus one untimed (warm-up) call each measuring memory."""

    def __init__(self, device: torch.device, log: Callable[[str], None] | None = None):
        self.device = device
        self.memory = Memory(device)
        self.log = log or (lambda s: None)

    def compare(self, fns: dict[str, Callable[[], object]], reps: int,
                reps_of: dict[str, int] | None = None,
                warm: dict[str, Callable[[], object]] | None = None) -> dict[str, dict]:
        """Warm up each callable once, measuring its peak memory there (``warm[name]`` replaces the
        warm-up call of a slow callable, e.g. the same code on fewer prompts), then ``reps`` rounds in
        alternating order; a callable named in ``reps_of`` is timed in its first ``reps_of[name]``
        rounds only."""
        reps_of, warm = reps_of or {}, warm or {}
        out = {k: {"times": []} for k in fns}
        for k, fn in fns.items():
            out[k]["peak_mem_mb"] = round(self.memory.measure(warm.get(k, fn)), 2)
        keys = list(fns)
        for r in range(reps):
            for k in (keys if r % 2 == 0 else keys[::-1]):
                if r >= reps_of.get(k, reps):
                    continue
                _sync(self.device)
                t0 = time.perf_counter()
                fns[k]()
                _sync(self.device)
                out[k]["times"].append(time.perf_counter() - t0)
        for k, v in out.items():
            t = v.pop("times")
            v.update(min_s=min(t), median_s=statistics.median(t), reps=len(t))
        return out


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b > 0 else float("inf")


def _r(x: float, nd: int = 4) -> float:
    """Round to ``nd`` significant digits (JSON readability)."""
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, nd - 1 - int(math.floor(math.log10(abs(x)))))


def _timing(t: dict, scale: float = 1.0) -> dict:
    return {"min_s": _r(t["min_s"] * scale), "median_s": _r(t["median_s"] * scale), "reps": t["reps"],
            "peak_mem_mb": t["peak_mem_mb"]}


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double().cpu() - b.detach().double().cpu()).abs().max()) if a.numel() else 0.0


# ----------------------------------------------------------------------------------------------------
# baselines.<name>: references written as in Garg et al.'s src/models.py (one prefix, and for the
# scikit-learn / GD models one prompt, at a time). dtype-generic; run on CPU as there.
# ----------------------------------------------------------------------------------------------------
def ref_least_squares(xs, ys):
    """Garg's LeastSquaresModel: torch.linalg.lstsq per prefix (batched over prompts), CPU (gelsy)."""
    xs, ys = xs.cpu(), ys.cpu()
    preds = [torch.zeros_like(ys[:, 0])]
    for i in range(1, ys.shape[1]):
        ws = torch.linalg.lstsq(xs[:, :i], ys[:, :i].unsqueeze(2)).solution
        preds.append((xs[:, i:i + 1] @ ws)[:, 0, 0])
    return torch.stack(preds, dim=1)


def ref_averaging(xs, ys):
    """Garg's AveragingModel: w = mean_{j<i} y_j x_j per prefix."""
    preds = [torch.zeros_like(ys[:, 0])]
    for i in range(1, ys.shape[1]):
        w = (xs[:, :i] * ys[:, :i].unsqueeze(-1)).mean(dim=1).unsqueeze(-1)
        preds.append((xs[:, i:i + 1] @ w)[:, 0, 0])
    return torch.stack(preds, dim=1)


def ref_knn(xs, ys, n_neighbors: int = 3):
    """Garg's NNModel (uniform weights): per prefix distances, then a per-prompt loop."""
    preds = [torch.zeros_like(ys[:, 0])]
    for i in range(1, ys.shape[1]):
        dist = (xs[:, :i] - xs[:, i:i + 1]).square().sum(dim=2).sqrt()
        ranks = dist.argsort()[:, :min(i, n_neighbors)]
        preds.append(torch.stack([y[n].mean() for y, n in zip(ys[:, :i], ranks)]))
    return torch.stack(preds, dim=1)


def ref_lasso(xs, ys, alpha: float = 0.001, tol: float = 1e-4, max_iter: int = 100000, info: dict | None = None):
    """Garg's LassoModel: sklearn Lasso(alpha, fit_intercept=False, max_iter) per prompt per prefix.
    ``info["converged"]`` ([B, N] bool) records which fits stopped before ``max_iter`` (Garg raised on
    the ConvergenceWarning; here it is recorded)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Lasso

    xs, ys = xs.cpu(), ys.cpu()
    X, Y = xs.numpy(), ys.numpy()
    out = torch.zeros_like(ys)
    converged = torch.ones(ys.shape, dtype=torch.bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for i in range(1, ys.shape[1]):
            for j in range(ys.shape[0]):
                clf = Lasso(alpha=alpha, fit_intercept=False, max_iter=max_iter, tol=tol)
                clf.fit(X[j, :i], Y[j, :i])
                out[j, i] = float(X[j, i] @ clf.coef_)
                converged[j, i] = clf.n_iter_ < max_iter
    if info is not None:
        info["converged"] = converged
    return out


def ref_decision_tree(xs, ys, max_depth: int | None = 4, random_state: int = 0):
    """Garg's DecisionTreeModel: sklearn DecisionTreeRegressor(max_depth) per prompt per prefix."""
    from sklearn.tree import DecisionTreeRegressor

    X, Y = xs.cpu().numpy(), ys.cpu().numpy()
    out = torch.zeros_like(ys.cpu())
    for i in range(1, ys.shape[1]):
        for j in range(ys.shape[0]):
            clf = DecisionTreeRegressor(max_depth=max_depth, random_state=random_state).fit(X[j, :i], Y[j, :i])
            out[j, i] = float(clf.predict(X[j, i:i + 1])[0])
    return out


class _ParallelNetworks(nn.Module):
    """Garg's base_models.ParallelNetworks of NeuralNetwork(in, hidden, 1): a python loop over prompts."""

    def __init__(self, W1, b1, W2, b2):  # [P, h, d], [P, h], [P, 1, h], [P, 1]
        super().__init__()
        self.nets = nn.ModuleList()
        for p in range(W1.shape[0]):
            net = nn.Sequential(nn.Linear(W1.shape[2], W1.shape[1]), nn.ReLU(), nn.Linear(W1.shape[1], 1))
            with torch.no_grad():
                net[0].weight.copy_(W1[p]), net[0].bias.copy_(b1[p])
                net[2].weight.copy_(W2[p]), net[2].bias.copy_(b2[p])
            self.nets.append(net.to(W1.dtype))

    def forward(self, xs):
        outs = None
        for i, net in enumerate(self.nets):
            out = net(xs[i])
            if outs is None:
                outs = torch.zeros([len(self.nets)] + list(out.shape), dtype=out.dtype, device=out.device)
            outs[i] = out
        return outs


def ref_two_layer_nn(xs, ys, init, lr: float = 5e-3, steps: int = 100, batch_size: int = 100):
    """Garg's GDModel (NeuralNetwork 2-layer ReLU, Adam, MSE): a fresh ParallelNetworks per prefix,
    ``steps`` full-batch Adam steps (batch_size >= prefix), prediction at the query. ``init(i)`` gives
    the initial (W1, b1, W2, b2) of prefix ``i`` for all prompts, so the fit starts where ours does."""
    preds = [torch.zeros_like(ys[:, 0])]
    for i in range(1, ys.shape[1]):
        model = _ParallelNetworks(*init(i))
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        train_xs, train_ys = xs[:, :i], ys[:, :i]
        for _ in range(steps):
            mask = torch.zeros(i, dtype=torch.bool)
            mask[torch.randperm(i)[:batch_size]] = True
            opt.zero_grad()
            loss = F.mse_loss(model(train_xs[:, mask])[:, :, 0], train_ys[:, mask])
            loss.backward()
            opt.step()
        with torch.no_grad():
            preds.append(model(xs[:, i:i + 1])[:, 0, 0])
    return torch.stack(preds, dim=1)


# ----------------------------------------------------------------------------------------------------
# train_step.<model>: ours vs transformers of identical shape, with our weights copied in
# ----------------------------------------------------------------------------------------------------
def hf_gpt2(m, n_points: int):
    from .models.hf import to_hf_gpt2

    w = to_hf_gpt2(m)
    return w, {"class": "transformers.GPT2Model", "attn_implementation": w.backbone.config._attn_implementation}


def hf_llama(m, n_points: int):
    from .models.hf import to_hf_llama

    w = to_hf_llama(m)
    return w, {"class": "transformers.LlamaModel", "attn_implementation": w.backbone.config._attn_implementation}


def hf_mamba(m, n_points: int, use_mambapy: bool = False):
    from .models.hf import to_hf_mamba

    path = "mambapy pscan" if use_mambapy else "sequential torch loop (slow_forward)"
    return to_hf_mamba(m, use_mambapy=use_mambapy), {"class": "transformers.MambaModel", "cpu_path": path}


HF_BUILDERS = {"gpt2": hf_gpt2, "llama": hf_llama, "mamba": hf_mamba}


def _train_step_fn(model, xs, ys, optim_cfg) -> Callable[[], float]:
    """One full training step as lit.ICLModule does it (MSE over all positions; Adam with the
    foreach / fused switch of cfg.optim) on a fixed batch."""
    kw = {"fused": True} if (optim_cfg.fused and xs.is_cuda) else {"foreach": bool(optim_cfg.foreach)}
    opt = torch.optim.Adam(model.parameters(), lr=float(optim_cfg.lr), betas=tuple(optim_cfg.betas),
                           eps=float(optim_cfg.eps), weight_decay=float(optim_cfg.weight_decay), **kw)
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = ((model(xs, ys) - ys) ** 2).mean()
        loss.backward()
        opt.step()
        return loss

    return step


def bench_train_step(name: str, size: dict, runner: Runner, reps: int, hf_mamba_reps: int,
                     compile_models: bool = False) -> dict:
    from .config import compose_config
    from .models.model import build_model

    dev = runner.device
    mc, tc, B = size["model"], size["task"], size["batch"]
    cfg = compose_config([f"model={name}", "task=linear", f"task.n_dims={tc['n_dims']}",
                          f"task.n_points={tc['n_points']}", *[f"model.{k}={v}" for k, v in mc.items()]])
    torch.manual_seed(0)
    ours = build_model(cfg.model, n_dims=tc["n_dims"], y_dim=1, max_points=tc["n_points"]).to(dev)
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(B, tc["n_points"], tc["n_dims"], generator=g).to(dev)
    ys = (xs @ torch.randn(B, tc["n_dims"], 1, generator=g).to(dev))[..., 0]
    entry = {"device": dev.type, "model": name,
             "shapes": {"batch": B, "n_points": tc["n_points"], "tokens": 2 * tc["n_points"],
                        "n_dims": tc["n_dims"], **mc, "n_params": ours.n_params()},
             "step": "zero_grad, forward, MSE loss over all positions, backward, Adam "
                     f"(foreach={bool(cfg.optim.foreach)}, fused={bool(cfg.optim.fused and dev.type == 'cuda')}) "
                     "on a fixed batch; both sides use the same optimizer settings"}
    fns = {"ours": _train_step_fn(ours, xs, ys, cfg.optim)}
    hf_b = B
    if name in HF_BUILDERS:
        hf, info = HF_BUILDERS[name](ours, tc["n_points"])
        hf = hf.to(dev)
        hf_b = min(B, size.get("hf_mamba_batch", B)) if name == "mamba" else B
        hx, hy = xs[:hf_b], ys[:hf_b]
        with torch.no_grad():  # identical weights: forward agreement before any step
            entry["max_abs_diff"] = _r(_maxdiff(ours(hx, hy), hf(hx, hy)), 3)
        entry["hf"] = info
        fns["hf"] = _train_step_fn(hf, hx, hy, cfg.optim)
        if hf_b < B:
            fns["ours_at_hf_batch"] = _train_step_fn(ours, hx, hy, cfg.optim)
            entry["hf_batch"] = hf_b
            entry["hf_batch_note"] = (
                f"the transformers comparison runs at batch {hf_b} (both sides): its CPU paths keep every "
                "[B, d_inner, T, N] intermediate for backward, ~19 GB at batch 64 for the sequential path "
                "(measured once: 517 s/step) and out of memory (> 23 GB) for use_mambapy=True")
    if compile_models and name in ("gpt2", "llama"):  # opt-in: trainer.compile=true
        compiled = copy.deepcopy(ours)
        fns["ours_compiled"] = _train_step_fn(torch.compile(compiled), xs, ys, cfg.optim)
        t0 = time.perf_counter()
        fns["ours_compiled"]()  # compilation (forward and backward graphs)
        _sync(dev)
        entry["compile_s"] = _r(time.perf_counter() - t0)
    reps_of = ({"hf": min(reps, hf_mamba_reps), "ours_at_hf_batch": min(reps, hf_mamba_reps)}
               if name == "mamba" else None)
    t = runner.compare(fns, reps, reps_of)
    if "ours_compiled" in t:
        entry["ours_compiled"] = _timing(t["ours_compiled"])
        entry["compiled_steps_per_s"] = _r(1.0 / t["ours_compiled"]["min_s"])
        if "hf" in t:
            entry["compiled_speedup_vs_hf"] = _r(_ratio(t["hf"]["min_s"], t["ours_compiled"]["min_s"]))
    entry["ours"] = _timing(t["ours"])
    entry["steps_per_s"] = _r(1.0 / t["ours"]["min_s"])
    if "hf" in t:
        ref = t.get("ours_at_hf_batch", t["ours"])
        if hf_b < B:
            entry["ours_at_hf_batch"] = _timing(ref)
        entry["hf"].update(_timing(t["hf"]))
        entry["hf_steps_per_s"] = _r(1.0 / t["hf"]["min_s"])
        entry["speedup_vs_hf"] = _r(_ratio(t["hf"]["min_s"], ref["min_s"]))
        entry["speedup_vs_hf_median"] = _r(_ratio(t["hf"]["median_s"], ref["median_s"]))
    return entry


# ----------------------------------------------------------------------------------------------------
# mamba_scan: our default selective scan vs mambapy's pscan (the MambaBlock.selective_scan formulation)
# ----------------------------------------------------------------------------------------------------
def _mambapy_scan(u, delta, A, Bm, Cm, D, z):
    """mambapy.mamba.MambaBlock.selective_scan (pscan path) + the z gate; [B, L, D] layout."""
    from mambapy.pscan import pscan

    dA = torch.exp(delta.unsqueeze(-1) * A)  # [B, L, D, N]
    BX = (delta * u).unsqueeze(-1) * Bm.unsqueeze(2)  # [B, L, D, N]
    hs = pscan(dA, BX)
    y = (hs @ Cm.unsqueeze(-1)).squeeze(3)
    return (y + D * u) * F.silu(z)


def bench_mamba_scan(size: dict, runner: Runner, reps: int) -> dict:
    from .models import mamba as M

    dev = runner.device
    s = size["scan"]
    Bsz, T, Dn, N = s["B"], s["T"], s["D"], s["N"]
    g = torch.Generator().manual_seed(0)
    r = lambda *sh: torch.randn(*sh, generator=g)  # noqa: E731
    # mamba_ssm layout semantics, batch-major [B, L, D] as the mixer holds them; delta after softplus,
    # A at its S4D init, as in a freshly initialised mixer
    inputs = {"u": r(Bsz, T, Dn), "delta": F.softplus(r(Bsz, T, Dn) - 2.0),
              "A": -torch.arange(1, N + 1, dtype=torch.float32).repeat(Dn, 1), "B": r(Bsz, T, N), "C": r(Bsz, T, N)}
    inputs = {k: v.to(dev) for k, v in inputs.items()}
    Dv, z, go = torch.ones(Dn, device=dev), r(Bsz, T, Dn).to(dev), r(Bsz, T, Dn).to(dev)

    def run(fn):
        leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
        y = fn(leaves)
        y.backward(go)
        return y.detach(), {k: v.grad for k, v in leaves.items()}

    impls = {
        "ours": lambda t: M._scan_blc(t["u"], t["delta"], t["A"], t["B"], t["C"], Dv, z, method=M.AUTO_SCAN),
        "mambapy": lambda t: _mambapy_scan(t["u"], t["delta"], t["A"], t["B"], t["C"], Dv, z),
    }
    if dev.type == "cuda" and M.cuda_kernels_available():
        sel_scan = M._load_cuda_kernels()[0]
        impls["mamba_ssm"] = lambda t: sel_scan(
            t["u"].transpose(1, 2).contiguous(), t["delta"].transpose(1, 2).contiguous(), t["A"],
            t["B"].transpose(1, 2).contiguous(), t["C"].transpose(1, 2).contiguous(), Dv,
            z=z.transpose(1, 2).contiguous()).transpose(1, 2)
    results = {k: run(f) for k, f in impls.items()}
    y0, g0 = results["ours"]
    entry = {"device": dev.type,
             "shapes": {"B": Bsz, "T": T, "d_inner": Dn, "d_state": N, "dtype": "float32"},
             "what": "selective scan incl. D skip and silu(z) gate, forward + backward w.r.t. u, delta, A, B, C",
             "ours_impl": f"icl_hybrids.models.mamba._scan_blc(method={M.AUTO_SCAN!r}) (the mixer's default scan)"}
    t = runner.compare({k: (lambda f=f: run(f)) for k, f in impls.items()}, reps)
    entry["ours"] = _timing(t["ours"])
    for k in impls:
        if k == "ours":
            continue
        y1, g1 = results[k]
        entry[k] = _timing(t[k])
        entry[f"speedup_vs_{k}"] = _r(_ratio(t[k]["min_s"], t["ours"]["min_s"]))
        entry[f"speedup_vs_{k}_median"] = _r(_ratio(t[k]["median_s"], t["ours"]["median_s"]))
        sfx = "" if k == "mambapy" else f"_vs_{k}"
        entry["max_abs_diff" + sfx] = _r(_maxdiff(y0, y1), 3)
        entry["max_rel_diff_grads" + sfx] = _r(max(_maxdiff(g0[n], g1[n]) / max(float(g1[n].abs().max()), 1e-30)
                                                   for n in g0), 3)
    entry["output_max_abs"] = _r(float(y0.abs().max()), 3)
    return entry


# ----------------------------------------------------------------------------------------------------
# baselines.<name>: the benchmark
# ----------------------------------------------------------------------------------------------------
# task whose prompts each estimator is benchmarked on (its natural task), at the linear task's size
BASELINE_TASKS = {"least_squares": "linear", "averaging": "linear", "knn": "linear", "lasso": "sparse_linear",
                  "two_layer_nn": "mlp", "decision_tree": "decision_tree"}


def _prompts(task_name: str, B: int, N: int, d: int, seed: int = 0):
    from hydra.utils import instantiate

    from .config import compose_config

    cfg = compose_config([f"task={task_name}", f"task.n_dims={d}", f"task.n_points={N}"])
    task = instantiate(cfg.task)
    g = torch.Generator().manual_seed(seed)
    return task.sample(B, generator=g)


def _two_layer_nn_case(est, xs, ys):
    """Run ours once recording its random draws (initial weights, minibatch indices), so that the
    reference trains the same networks from the same start on the same minibatches. Returns ours'
    predictions and ``init_of(i, n, dtype)`` / ``indices_of(i, t, n)``: the draws of prefix ``i`` for the
    first ``n`` prompts."""
    records = []

    class Recording(type(est)):
        def fit_predict(self, X, Y, lengths, x_test, params, generator=None, indices=None):
            init = {k: v.clone() for k, v in params.items()}
            if indices is None:
                indices = [self.sample_indices(lengths, generator) for _ in range(self.n_steps)]
            records.append((init, indices))
            return super().fit_predict(X, Y, lengths, x_test, params, indices=indices)

    rec = copy.copy(est)
    rec.__class__ = Recording
    preds = rec(xs, ys)
    init = {k: torch.cat([r[0][k] for r in records]) for k in records[0][0]}
    k_max = max(r[1][0].shape[1] for r in records)
    idx = [torch.cat([F.pad(r[1][t], (0, k_max - r[1][t].shape[1])) for r in records]) for t in range(est.n_steps)]
    N = xs.shape[1]

    def problems(i, n):  # rows of the problems (prompt b < n, prefix i): prompt-major flattening
        return torch.arange(min(n, xs.shape[0])) * (N - 1) + (i - 1)

    def init_of(i, n, dtype):  # as nn.Linear weights: W1 [P, h, d], b1 [P, h], W2 [P, 1, h], b2 [P, 1]
        p = problems(i, n)
        return tuple(t.to(dtype) for t in (init["W1"][p].transpose(1, 2), init["b1"][p],
                                           init["W2"][p].unsqueeze(1), init["b2"][p].unsqueeze(1)))

    def indices_of(i, t, n):
        return idx[t][problems(i, n), :min(est.batch_size, i)]

    return preds, init_of, indices_of


def ref_two_layer_nn_matched(xs, ys, init_of, indices_of, prefixes, hidden: int, lr: float, steps: int,
                             betas, eps):
    """Garg's GDModel loop (a fresh ParallelNetworks per prefix, forward as a python loop over prompts,
    torch.optim.Adam, MSE) on the given ``prefixes``, with the initial weights and minibatches given per
    prefix. Garg averages the loss over prompts and shares the minibatch; here each network gets its own
    minibatch and its own MSE (what ours does) -- the same work; the averaging only rescales the
    gradients, which Adam ignores up to eps. Predictions at prefixes not fitted are NaN."""
    preds = torch.full_like(ys, float("nan"))
    preds[:, 0] = 0.0
    n = xs.shape[0]
    for i in prefixes:
        model = _ParallelNetworks(*init_of(i, n, xs.dtype))
        opt = torch.optim.Adam(model.parameters(), lr=lr, betas=betas, eps=eps)
        for t in range(steps):
            idx = indices_of(i, t, n)  # [P, bs]
            opt.zero_grad()
            loss = 0.0
            for p, net in enumerate(model.nets):
                loss = loss + F.mse_loss(net(xs[p, idx[p]])[:, 0], ys[p, idx[p]])
            loss.backward()
            opt.step()
        with torch.no_grad():
            preds[:, i] = model(xs[:, i:i + 1])[:, 0, 0]
    return preds


def bench_baseline(name: str, size: dict, runner: Runner, reps: int, slow_reps: int) -> dict:
    from .baselines import get_baseline

    dev = runner.device
    p = size["prompts"]
    B, N, d = p["B"], p["N"], p["d"]
    n_ref = min(size["ref_prompts"][name], B)
    batch = _prompts(BASELINE_TASKS[name], B, N, d)
    xs, ys = batch.xs.to(dev), batch.ys.to(dev)
    xr, yr = batch.xs[:n_ref], batch.ys[:n_ref]  # the reference's prompts (CPU)
    x64, y64 = xr.double(), yr.double()
    est = get_baseline(name, **size.get("baseline_kwargs", {}).get(name, {}))
    problems_scale, prefixes, ours_reps = 1.0, None, reps
    entry = {"device": dev.type, "task": BASELINE_TASKS[name],
             "shapes": {"B": B, "N": N, "d": d, "reference_prompts": n_ref},
             "ours_impl": f"icl_hybrids.baselines.get_baseline({name!r}) on all B prompts, "
                          f"{xs.dtype} in/out, on {dev.type}"}
    ref_reps = reps
    warm = {}
    well_posed = None  # bool mask [n_ref, N] of the compared predictions
    extra = {}
    if name == "least_squares":
        ref = lambda: ref_least_squares(x64, y64)  # noqa: E731
        entry["reference"] = "Garg LeastSquaresModel: torch.linalg.lstsq (CPU, gelsy) per prefix, batched over prompts"
        entry["reference_dtype"] = "float64"
        entry["well_posed"] = "all prefixes (the minimum-norm solution is unique)"
    elif name == "averaging":
        ref = lambda: ref_averaging(x64, y64)  # noqa: E731
        entry["reference"] = "Garg AveragingModel: mean_{j<i} y_j x_j per prefix, batched over prompts"
        entry["reference_dtype"] = "float64"
        entry["well_posed"] = "all prefixes"
    elif name == "knn":
        k = getattr(est, "n_neighbors", 3)
        ref = lambda: ref_knn(x64, y64, k)  # noqa: E731
        entry["reference"] = f"Garg NNModel(n_neighbors={k}): distances per prefix, python loop over prompts"
        entry["reference_dtype"] = "float64"
        entry["well_posed"] = "all prefixes (no distance ties among continuous points)"
    elif name == "lasso":
        info: dict = {}
        kw = dict(alpha=est.alpha, tol=est.tol, max_iter=est.max_iter)
        ref = lambda: ref_lasso(x64, y64, info=info, **kw)  # noqa: E731
        warm["reference"] = lambda: ref_lasso(x64[:1], y64[:1], **kw)
        x32, y32 = xr, yr
        extra["reference_garg_defaults"] = lambda: ref_lasso(x32, y32, alpha=est.alpha, tol=1e-4, max_iter=100000)
        warm["reference_garg_defaults"] = lambda: ref_lasso(x32[:1], y32[:1], alpha=est.alpha, tol=1e-4)
        entry["reference"] = (f"Garg LassoModel: sklearn Lasso(alpha={est.alpha}, fit_intercept=False, "
                              f"max_iter={est.max_iter}) per prompt per prefix, at matched tol={est.tol} "
                              "(ours' tolerance) on float64 prompts")
        entry["reference_dtype"] = "float64"
        entry["reference_garg_defaults_note"] = ("sklearn's default tol=1e-4 on float32 prompts, as Garg ran it; "
                                                 "timing only (its solutions are not converged to 1e-4)")
        entry["well_posed"] = "prefixes where sklearn converged (n_iter < max_iter)"
        ref_reps = slow_reps
    elif name == "decision_tree":
        ours_reps = slow_reps  # ours is the same per-prompt scikit-learn loop (trees are not batched)
        depth = getattr(est, "max_depth", 4)
        rs = getattr(est, "random_state", 0)
        ref = lambda: ref_decision_tree(xr, yr, max_depth=depth, random_state=rs)  # noqa: E731
        warm["reference"] = lambda: ref_decision_tree(xr[:1], yr[:1], max_depth=depth, random_state=rs)
        entry["reference"] = (f"Garg DecisionTreeModel: sklearn DecisionTreeRegressor(max_depth={depth}) "
                              "per prompt per prefix")
        entry["reference_dtype"] = "float32 (sklearn trees work in float32)"
        entry["well_posed"] = "all prefixes"
        ref_reps = slow_reps
    elif name == "two_layer_nn":
        # The reference's cost per (prompt, prefix) does not depend on the prefix (each step trains on
        # min(batch_size, i) points, <= batch_size), so it is fitted on a subset of prompts and prefixes
        # and its time scaled by the number of (prompt, prefix) problems. Agreement: ours and the
        # reference in float64 on the reference's prompts from the same recorded random draws (in
        # float32 the rounding differences between batched and per-network matmuls grow over the Adam
        # steps: ~6e-4 after 1000 steps); the timed reference starts from the same draws in float32.
        prefixes = list(range(1, N, max(1, size.get("nn_ref_prefix_stride", 1))))
        hp = dict(hidden=est.hidden_size, lr=est.lr, steps=est.n_steps, betas=est.betas, eps=est.eps)
        est64 = copy.copy(est)
        est64.dtype = torch.float64
        ours64, init_of, indices_of = _two_layer_nn_case(est64, x64, y64)
        xr_, yr_ = xr.to(est.dtype), yr.to(est.dtype)
        ref = lambda: ref_two_layer_nn_matched(xr_, yr_, init_of, indices_of, prefixes, **hp)  # noqa: E731
        warm["reference"] = lambda: ref_two_layer_nn_matched(xr_[:1], yr_[:1], init_of, indices_of,
                                                             prefixes[:1], **hp)
        problems_scale = (N - 1) / len(prefixes)
        entry["reference"] = (f"Garg GDModel(NeuralNetwork(d, {est.hidden_size}, 1), adam, lr={est.lr}, "
                              f"batch_size={est.batch_size}, num_steps={est.n_steps}): per prefix a "
                              "ParallelNetworks looping over prompts; same initial weights and minibatches as ours")
        entry["hyperparameters"] = {"hidden_size": est.hidden_size, "n_steps": est.n_steps, "lr": est.lr,
                                    "batch_size": est.batch_size}
        if size.get("baseline_kwargs", {}).get(name):
            dflt = type(est)()
            entry["hyperparameters_note"] = (
                "changed from the registry defaults (" + ", ".join(
                    f"{k}: {getattr(dflt, k)} -> {v}" for k, v in size["baseline_kwargs"][name].items())
                + "); both sides' cost is linear in n_steps, so the ratio is that of the default")
        entry["reference_dtype"] = str(est.dtype).replace("torch.", "")
        entry["reference_prefixes"] = prefixes
        entry["agreement"] = ("float64 run of ours and the reference on the reference's prompts, same recorded "
                              "initial weights and minibatches")
        entry["well_posed"] = "the fitted prefixes"
        ref_reps = slow_reps
        ours_reps = slow_reps

        def agreement():
            r64 = ref_two_layer_nn_matched(x64, y64, init_of, indices_of, prefixes, **hp)
            return ours64.double(), r64
    else:
        raise ValueError(f"no reference for baseline {name!r}")
    scale = B / n_ref * (problems_scale if name == "two_layer_nn" else 1.0)
    if scale != 1.0:
        entry["reference_extrapolated"] = (
            f"reference fitted on {n_ref} of the {B} prompts" +
            (f" and {len(prefixes)} of the {N - 1} prefixes" if name == "two_layer_nn" else "") +
            f"; its times are scaled by {_r(scale)} (it is a loop over prompts and prefixes)")
    last: dict = {}  # the latest outputs of the timed calls, for the agreement below

    def keep(key, fn):
        def call():
            last[key] = fn()
        return call

    fns = {"ours": keep("ours", lambda: est(xs, ys)), "reference": keep("reference", ref), **extra}
    reps_of = {"ours": ours_reps, "reference": ref_reps, **{k: 1 for k in extra}}
    t = runner.compare(fns, reps, reps_of, warm=warm)
    entry["ours"] = _timing(t["ours"])
    entry["reference_timing"] = _timing(t["reference"], scale)
    entry["speedup"] = _r(_ratio(t["reference"]["min_s"] * scale, t["ours"]["min_s"]))
    entry["speedup_median"] = _r(_ratio(t["reference"]["median_s"] * scale, t["ours"]["median_s"]))
    for k in extra:
        entry[k] = _timing(t[k], scale)
        entry[f"speedup_vs_{k}"] = _r(_ratio(t[k]["min_s"] * scale, t["ours"]["min_s"]))
    if warm:
        entry["reference_peak_mem_note"] = "reference peak memory measured on a 1-prompt warm-up call"

    # agreement
    if name == "two_layer_nn":
        ours, refp = agreement()  # untimed float64 calls
        well_posed = ~refp.isnan()
    else:
        ours, refp = last["ours"].cpu()[:n_ref].double(), last["reference"].double()
    if name == "lasso":
        well_posed = info["converged"]
        entry["reference_not_converged"] = int((~well_posed[:, 1:]).sum())
    mask = torch.ones_like(refp, dtype=torch.bool) if well_posed is None else well_posed
    entry["max_abs_diff"] = _r(float((ours - refp).abs()[mask].max()) if mask.any() else 0.0, 3)
    entry["compared_predictions"] = int(mask.sum())
    entry["pred_max_abs"] = _r(float(refp[mask].abs().max()), 3)
    return entry


# ----------------------------------------------------------------------------------------------------
# evaluate: one checkpoint's evaluation as the evaluate CLI / callback does it
# ----------------------------------------------------------------------------------------------------
def bench_evaluate(mode: str, size: dict, runner: Runner, reps: int) -> dict:
    from hydra.utils import instantiate

    from .config import compose_config
    from .evaluation import baseline_predictions, eval_prompts, model_predictions, score_positions, summarize
    from .models.model import build_model

    dev = runner.device
    mc = EVAL_MODEL[mode]
    over = ["model=gpt2", "task=linear", *[f"model.{k}={v}" for k, v in mc.items()],
            f"eval.n_prompts={size['eval_prompts']}"]
    if mode == "tiny":
        over += [f"task.n_dims={size['task']['n_dims']}", f"task.n_points={size['task']['n_points']}"]
    cfg = compose_config(over)
    task = instantiate(cfg.task)
    torch.manual_seed(0)
    model = build_model(cfg.model, n_dims=task.n_dims, y_dim=task.y_dim, max_points=task.n_points).to(dev)
    names = [task.baseline, *cfg.eval.baselines]
    parts: dict[str, list[float]] = {k: [] for k in ("prompts", "model", "baselines", "summarize", "total")}

    def once():
        t0 = time.perf_counter()
        batch = eval_prompts(task, int(cfg.eval.n_prompts), int(cfg.seed) + int(cfg.eval.seed_offset), device=dev)
        _sync(dev)
        t1 = time.perf_counter()
        mp = model_predictions(model, batch, int(cfg.eval.batch_size))
        _sync(dev)
        t2 = time.perf_counter()
        bp = baseline_predictions(task, names, batch)
        _sync(dev)
        t3 = time.perf_counter()
        summarize(mp.cpu(), {k: v.cpu() for k, v in bp.items()}, batch.ys.cpu(), task.baseline,
                  score_positions(task, task.n_points, cfg.eval.positions))
        t4 = time.perf_counter()
        for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
            parts[k].append(v)

    t = runner.compare({"evaluate": once}, reps)["evaluate"]
    for v in parts.values():
        del v[0]  # the warm-up call
    best = min(range(len(parts["total"])), key=parts["total"].__getitem__)
    return {"device": dev.type, "what": ("icl_hybrids.evaluation: eval_prompts, model_predictions, "
                                         "baseline_predictions (zero + the task's default), summarize"),
            "checkpoint": f"gpt2 {mc} with random weights (init seed 0)", "task": "linear",
            "shapes": {"n_prompts": int(cfg.eval.n_prompts), "n_points": task.n_points, "n_dims": task.n_dims,
                       "eval_batch_size": int(cfg.eval.batch_size)},
            "baselines": ["zero", *names], **_timing(t),
            "breakdown_s": {k: _r(v[best]) for k, v in parts.items() if k != "total"}}


# ----------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------
def entry_names() -> list[str]:
    return ([f"baselines.{n}" for n in BASELINE_NAMES] + [f"train_step.{m}" for m in TRAIN_MODELS]
            + ["mamba_scan", "evaluate"])


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} logical cores)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _targets(res: dict, dev: torch.device, mode: str) -> dict:
    out = {}
    for entry, key, thr in TARGETS:
        if entry in res and key in res[entry]:
            v = res[entry][key]
            out[f"{entry}.{key}>={thr:g}"] = {"value": v, "pass": bool(v >= thr)}
    for entry, e in res.items():
        if isinstance(e, dict) and "max_abs_diff" in e and entry.startswith(("baselines.", "mamba_scan")):
            v = e["max_abs_diff"]
            out[f"{entry}.max_abs_diff<={AGREEMENT_TOL:g}"] = {"value": v, "pass": bool(v <= AGREEMENT_TOL)}
    for k, v in out.items():
        if mode == "tiny" and ".speedup" in k:
            v["note"] = "tiny sizes (tests): speed targets do not apply"
        elif dev.type != "cpu" and ".speedup" in k:
            v["note"] = "the speed targets are CPU targets"
    return out


def run(quick: bool = False, tiny: bool = False, threads: int | None = None, only: str | None = None,
        device: str | None = None, compile_models: bool = False,
        log: Callable[[str], None] | None = None) -> dict:
    """Run the benchmark entries (those whose key starts with one of the comma-separated prefixes in
    ``only``) and return the result object (see the module docstring)."""
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    mode = "tiny" if tiny else "quick" if quick else "full"
    size = SIZES[mode]
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    prev_threads = torch.get_num_threads()
    if dev.type == "cpu" or threads:
        torch.set_num_threads(threads or 1)
    n_threads = torch.get_num_threads()
    limiter = None
    try:
        from threadpoolctl import threadpool_limits  # numpy / scikit-learn BLAS and OpenMP pools

        limiter = threadpool_limits(torch.get_num_threads())
    except ImportError:
        pass
    try:
        import transformers

        transformers.logging.set_verbosity_error()  # kernel-fallback notices on CPU
    except ImportError:
        pass
    runner = Runner(dev, log)
    prefixes = [p.strip() for p in only.split(",")] if only else [""]
    todo = [k for k in entry_names() if any(k.startswith(p) for p in prefixes)]
    res: dict = {}
    errors = {}
    t_start = time.perf_counter()
    try:
        for key in todo:
            t0 = time.perf_counter()
            log(f"[bench] {key} ...")
            try:
                if key.startswith("baselines."):
                    e = bench_baseline(key.split(".", 1)[1], size, runner, size["reps"], size["slow_reps"])
                elif key.startswith("train_step."):
                    e = bench_train_step(key.split(".", 1)[1], size, runner, size["reps"], size["hf_mamba_reps"],
                                         compile_models)
                elif key == "mamba_scan":
                    e = bench_mamba_scan(size, runner, size["scan_reps"])
                else:
                    e = bench_evaluate(mode, size, runner, size["eval_reps"])
            except Exception as exc:  # recorded; the other entries still run
                e = {"error": f"{type(exc).__name__}: {exc}"}
                errors[key] = e["error"]
            e["wall_s"] = round(time.perf_counter() - t0, 1)
            res[key] = e
            brief = {k: v for k, v in e.items()
                     if k.startswith(("speedup", "max_abs", "steps_per", "min_s", "error"))}
            log(f"[bench] {key}: {json.dumps(brief)}")
    finally:
        torch.set_num_threads(prev_threads)
        if limiter is not None:
            limiter.unregister()
    meta = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "mode": mode, "quick": quick and not tiny, "tiny": tiny,
        "device": dev.type, "device_name": _device_name(dev), "threads": n_threads,
        "torch": torch.__version__, "python": platform.python_version(),
        "versions": _versions(), "command": "python -m icl_hybrids.bench" + (" --quick" if quick and not tiny else "")
        + (" --tiny" if tiny else "") + (f" --threads {threads}" if threads else "")
        + (f" --only {only}" if only else "") + (" --compile" if compile_models else ""),
        "compile": compile_models,
        "sizes": size, "memory": runner.memory.method,
        "timing": ("interleaved reps (order alternating), perf_counter around each call (cuda: synchronized); "
                   "speedup = reference min / ours min; *_median = ratio of medians"),
        "wall_s": round(time.perf_counter() - t_start, 1),
        "targets": _targets(res, dev, mode), "errors": errors,
    }
    return {"meta": meta, **res}


def _versions() -> dict:
    out = {}
    for mod in ("transformers", "sklearn", "mambapy", "numpy", "mamba_ssm"):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", "?")
        except Exception:
            out[mod] = None
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m icl_hybrids.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="reduced sizes (< 3 min on 2 CPU cores)")
    ap.add_argument("--json", metavar="FILE", help="also write the result object to FILE")
    ap.add_argument("--threads", type=int, default=None, help="torch / BLAS threads (CPU default: 1)")
    ap.add_argument("--only", metavar="PREFIX", default=None,
                    help="run only the entries whose key starts with PREFIX (comma-separated list), "
                         f"keys: {', '.join(entry_names())}")
    ap.add_argument("--compile", action="store_true",
                    help="also time torch.compile'd gpt2 / llama train steps (trainer.compile=true; slow to start)")
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    offline = os.environ.get("HF_HUB_OFFLINE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # transformers' kernel hub: never fetch during a benchmark
    try:
        res = run(quick=a.quick, tiny=a.tiny, threads=a.threads, only=a.only, compile_models=a.compile)
    finally:
        if offline is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
    text = json.dumps(res, indent=1)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
    return 1 if res["meta"]["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
