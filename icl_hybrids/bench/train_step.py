"""``train_step.<model>``, ``train_step_bf16.<model>`` and ``train_step_ratio.mamba_vs_gpt2``: train steps of
our models, vs transformers of identical shape and weights, our bf16 autocast step vs our fp32 step, and Mamba
vs GPT-2 at the same size. Every timed side also gets a roofline record (``roofline.<side>``: FLOPs per step
by flops.count_train_step_flops, achieved GFLOP/s; the driver adds the MFU against the run's matmul peak)."""
from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch

from .flops import count_train_step_flops
from .harness import Runner, _maxdiff, _r, _ratio, _sync, _timing


def hf_gpt2(m, n_points: int):
    from ..models.hf import to_hf_gpt2

    w = to_hf_gpt2(m)
    return w, {"class": "transformers.GPT2Model", "attn_implementation": w.backbone.config._attn_implementation}


def hf_llama(m, n_points: int):
    from ..models.hf import to_hf_llama

    w = to_hf_llama(m)
    return w, {"class": "transformers.LlamaModel", "attn_implementation": w.backbone.config._attn_implementation}


def hf_mamba(m, n_points: int, use_mambapy: bool = False):
    from ..models.hf import to_hf_mamba

    path = "mambapy pscan" if use_mambapy else "sequential torch loop (slow_forward)"
    return to_hf_mamba(m, use_mambapy=use_mambapy), {"class": "transformers.MambaModel", "cpu_path": path}


HF_BUILDERS = {"gpt2": hf_gpt2, "llama": hf_llama, "mamba": hf_mamba}


def _train_step_fn(model, xs, ys, optim_cfg, autocast: Callable[[], object] | None = None) -> Callable[[], float]:
    """One full training step as lit.ICLModule does it (MSE over all positions; Adam with the
    foreach / fused switch of cfg.optim) on a fixed batch. ``autocast``: a context factory around forward and
    loss, as Lightning's precision plugin wraps ``training_step`` (backward and Adam run outside it, on the
    fp32 master weights); the loss is taken in fp32 (``preds.float()``, as lit.ICLModule.loss_fn)."""
    kw = {"fused": True} if (optim_cfg.fused and xs.is_cuda) else {"foreach": bool(optim_cfg.foreach)}
    opt = torch.optim.Adam(model.parameters(), lr=float(optim_cfg.lr), betas=tuple(optim_cfg.betas),
                           eps=float(optim_cfg.eps), weight_decay=float(optim_cfg.weight_decay), **kw)
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        if autocast is None:
            loss = ((model(xs, ys) - ys) ** 2).mean()
        else:
            with autocast():
                loss = ((model(xs, ys).float() - ys) ** 2).mean()
        loss.backward()
        opt.step()
        return loss

    return step


def bf16_autocast(dev: torch.device) -> Callable[[], object]:
    """What ``trainer.precision=bf16-mixed`` runs the forward under: on CPU perf.CPUBf16MixedPrecision's
    context (autocast + SDPA's math backend), on CUDA Lightning's ``torch.autocast("cuda", bfloat16)``."""
    from .. import perf

    if dev.type == "cpu":
        return perf.bf16_cpu_context
    return lambda: torch.autocast(dev.type, dtype=torch.bfloat16, cache_enabled=False)


def _roof(flops: dict, t: dict, dtype: str = "fp32", batch: int | None = None) -> dict:
    """Roofline record of one timed side: FLOPs per step (the rule of flops.py), achieved GFLOP/s of its
    matmul + attention part at the side's min time; ``mfu`` is added by the driver (driver.add_mfu)."""
    rec = {"dtype": dtype, "flops_per_step": flops["mfu_flops"], "flops_per_step_total": flops["total"],
           "gflops": _r(flops["mfu_flops"] / t["min_s"] / 1e9), "gflops_total": _r(flops["total"] / t["min_s"] / 1e9)}
    if batch is not None:
        rec["batch"] = batch
    return rec


def _flops(model, batch: int, size: dict) -> dict:
    return count_train_step_flops(model, batch, 2 * size["task"]["n_points"])


def _train_case(name: str, size: dict, dev: torch.device):
    """(cfg, model, xs, ys) of the named architecture at ``size`` (seeded: same weights and batch)."""
    from ..config import compose_config
    from ..models.model import build_model

    mc, tc, B = size["model"], size["task"], size["batch"]
    cfg = compose_config([f"model={name}", "task=linear", f"task.n_dims={tc['n_dims']}",
                          f"task.n_points={tc['n_points']}", *[f"model.{k}={v}" for k, v in mc.items()]])
    torch.manual_seed(0)
    model = build_model(cfg.model, n_dims=tc["n_dims"], y_dim=1, max_points=tc["n_points"]).to(dev)
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(B, tc["n_points"], tc["n_dims"], generator=g).to(dev)
    ys = (xs @ torch.randn(B, tc["n_dims"], 1, generator=g).to(dev))[..., 0]
    return cfg, model, xs, ys


def bench_train_step_ratio(size: dict, runner: Runner, reps: int) -> dict:
    """Mamba vs GPT-2 train steps (same width, depth, tokens, batch), interleaved in one run; also the
    Mamba step with the pure-PyTorch mixer path (scan="loop" + nn.Conv1d math) for before/after."""
    from ..models.mamba import MambaMixer

    dev = runner.device
    cfg_g, gpt2, xs, ys = _train_case("gpt2", size, dev)
    cfg_m, mamba, _, _ = _train_case("mamba", size, dev)
    mamba_torch = copy.deepcopy(mamba)
    mixers = [m for m in mamba.modules() if isinstance(m, MambaMixer)]
    for m in mamba_torch.modules():
        if isinstance(m, MambaMixer):
            m.scan = "loop"
    with torch.no_grad():  # same function on both mixer paths
        diff = _maxdiff(mamba(xs, ys), mamba_torch(xs, ys))
    fns = {"gpt2": _train_step_fn(gpt2, xs, ys, cfg_g.optim), "mamba": _train_step_fn(mamba, xs, ys, cfg_m.optim),
           "mamba_torch_path": _train_step_fn(mamba_torch, xs, ys, cfg_m.optim)}
    t = runner.compare(fns, reps)
    mc, tc = size["model"], size["task"]
    entry = {"device": dev.type,
             "shapes": {"batch": size["batch"], "tokens": 2 * tc["n_points"], **mc,
                        "n_params": {"gpt2": gpt2.n_params(), "mamba": mamba.n_params()}},
             "mamba_scan_impl": mixers[0].scan if mixers else None,
             "what": "train step (zero_grad, forward, MSE, backward, Adam) of mamba vs gpt2 at the same "
                     "n_layer / d_model / tokens / batch, interleaved; mamba_torch_path: the same mamba with "
                     "the pure-PyTorch mixer path (scan='loop', F.conv1d)",
             "gpt2": _timing(t["gpt2"]), "mamba": _timing(t["mamba"]),
             "mamba_torch_path": _timing(t["mamba_torch_path"]),
             "ratio": _r(_ratio(t["mamba"]["min_s"], t["gpt2"]["min_s"])),
             "ratio_median": _r(_ratio(t["mamba"]["median_s"], t["gpt2"]["median_s"])),
             "ratio_torch_path": _r(_ratio(t["mamba_torch_path"]["min_s"], t["gpt2"]["min_s"])),
             "speedup_vs_torch_path": _r(_ratio(t["mamba_torch_path"]["min_s"], t["mamba"]["min_s"])),
             "max_abs_diff_vs_torch_path": _r(diff, 3)}
    fl_g, fl_m = _flops(gpt2, size["batch"], size), _flops(mamba, size["batch"], size)
    entry["flops_per_step"] = {"gpt2": fl_g, "mamba": fl_m}
    entry["roofline"] = {"gpt2": _roof(fl_g, t["gpt2"]), "mamba": _roof(fl_m, t["mamba"]),
                         "mamba_torch_path": _roof(fl_m, t["mamba_torch_path"])}
    return entry


def bench_train_step(name: str, size: dict, runner: Runner, reps: int, hf_mamba_reps: int,
                     compile_models: bool = False, compile_mode: str | None = None) -> dict:
    dev = runner.device
    mc, tc, B = size["model"], size["task"], size["batch"]
    cfg, ours, xs, ys = _train_case(name, size, dev)
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
    if compile_models:  # opt-in: trainer.compile=true
        # compile_mode: torch.compile's mode (None: its default; "reduce-overhead": CUDA graphs on GPU)
        compiled_fn = _train_step_fn(torch.compile(copy.deepcopy(ours), mode=compile_mode), xs, ys, cfg.optim)
        entry["compile_mode"] = compile_mode or "default"
        t0 = time.perf_counter()
        try:
            compiled_fn()  # compilation (forward and backward graphs)
            _sync(dev)
            fns["ours_compiled"] = compiled_fn
            entry["compile_s"] = _r(time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - e.g. a custom kernel dynamo cannot trace; eager still timed
            entry["compile_error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
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
    # roofline: the HF model has our shapes (and weights), so our count at its batch is its count
    fl = _flops(ours, B, size)
    entry["flops_per_step"] = fl
    entry["roofline"] = {"ours": _roof(fl, t["ours"], batch=B)}
    fl_hf = _flops(ours, hf_b, size) if hf_b != B else fl
    if "hf" in t:
        entry["roofline"]["hf"] = _roof(fl_hf, t["hf"], batch=hf_b)
    if "ours_at_hf_batch" in t:
        entry["roofline"]["ours_at_hf_batch"] = _roof(fl_hf, t["ours_at_hf_batch"], batch=hf_b)
    if "ours_compiled" in t:
        entry["roofline"]["ours_compiled"] = _roof(fl, t["ours_compiled"], batch=B)
    entry["gflops"] = entry["roofline"]["ours"]["gflops"]
    return entry


def bench_train_step_bf16(name: str, size: dict, runner: Runner, reps: int) -> dict:
    """Our bf16 autocast train step (``trainer.precision=bf16-mixed``: bf16 matmuls, fp32 master weights,
    Adam and loss in fp32) against our fp32 step, same model, weights and batch, interleaved.
    ``speedup`` = fp32 min / bf16 min. On CPU also the plain autocast without the math-SDPA choice
    (``bf16_default_sdpa``, attention models only): what perf.CPUBf16MixedPrecision's kernel choice buys."""
    dev = runner.device
    mc, tc, B = size["model"], size["task"], size["batch"]
    cfg, m32, xs, ys = _train_case(name, size, dev)
    m16 = copy.deepcopy(m32)  # own weights and optimizer: the two sides' steps do not interact
    ctx = bf16_autocast(dev)
    with torch.no_grad():  # identical weights: how far the bf16 forward is from the fp32 one
        ref = m32(xs, ys)
        with ctx():
            out16 = m16(xs, ys).float()
    entry = {"device": dev.type, "model": name,
             "shapes": {"batch": B, "n_points": tc["n_points"], "tokens": 2 * tc["n_points"],
                        "n_dims": tc["n_dims"], **mc, "n_params": m32.n_params()},
             "what": ("train step (zero_grad, forward, MSE, backward, Adam) of the same model in fp32 and under "
                      "bf16 autocast (trainer.precision=bf16-mixed: "
                      + ("perf.CPUBf16MixedPrecision: torch.autocast('cpu', bfloat16) + SDPA math backend"
                         if dev.type == "cpu" else "torch.autocast('cuda', bfloat16)")
                      + "; fp32 master weights, loss and Adam in fp32), interleaved"),
             "max_abs_diff_forward": _r(_maxdiff(ref, out16), 3),
             "output_max_abs": _r(float(ref.abs().max()), 3),
             "forward_finite": bool(torch.isfinite(out16).all())}
    fns = {"fp32": _train_step_fn(m32, xs, ys, cfg.optim),
           "bf16": _train_step_fn(m16, xs, ys, cfg.optim, autocast=ctx)}
    has_attention = any(type(m).__name__ == "CausalSelfAttention" for m in m32.modules())
    if dev.type == "cpu" and has_attention:
        m16d = copy.deepcopy(m32)
        fns["bf16_default_sdpa"] = _train_step_fn(
            m16d, xs, ys, cfg.optim, autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False))
    t = runner.compare(fns, reps)
    loss = fns["bf16"]()  # one more step: its loss, and the master weights' dtype after steps
    entry["loss_finite"] = bool(torch.isfinite(loss.detach()).all())
    entry["master_weights_dtype"] = sorted({str(p.dtype).replace("torch.", "") for p in m16.parameters()})
    fl = _flops(m32, B, size)
    entry["flops_per_step"] = fl
    entry["roofline"] = {}
    for k in fns:
        entry[k] = _timing(t[k])
        entry["roofline"][k] = _roof(fl, t[k], dtype="fp32" if k == "fp32" else "bf16")
    entry["steps_per_s_fp32"] = _r(1.0 / t["fp32"]["min_s"])
    entry["steps_per_s_bf16"] = _r(1.0 / t["bf16"]["min_s"])
    entry["speedup"] = _r(_ratio(t["fp32"]["min_s"], t["bf16"]["min_s"]))
    entry["speedup_median"] = _r(_ratio(t["fp32"]["median_s"], t["bf16"]["median_s"]))
    if "bf16_default_sdpa" in t:
        entry["speedup_default_sdpa"] = _r(_ratio(t["fp32"]["min_s"], t["bf16_default_sdpa"]["min_s"]))
    return entry
