"""FLOP count of one training step and the matmul peak it is compared with: the roofline of the
``train_step*`` entries (rule and measurements in docs/performance.md, "Roofline").

Counting rule: forward + backward of one step on B prompts of T = 2 * n_points tokens. A multiply-add is 2
FLOPs. The Adam update, norms, activations, softmax, residual adds and the loss are not counted: they are
memory-bound elementwise work, a few percent of the FLOPs, and counting them would make the figure depend on
how each kernel is fused.

* **Linear layers** (``nn.Linear``, in -> out features), applied to all B*T tokens: ``2*in*out*BT`` forward
  and twice that backward (input gradient and weight gradient), ``6*in*out*BT`` in all. The read-in's input
  (the prompt) needs no gradient, so it counts ``4*in*out*BT``. This is the usual ``6 * N_matmul * tokens``
  with N_matmul the weights of the Linear layers (biases, norms, positional tables and Mamba's A, D and conv
  weights are not matmul weights). The read-out runs on every token (the model slices the x positions after
  it), so it counts on all BT tokens too.
* **Attention**, per attention mixer of width d = n_head * head_dim: Q K^T and A V over the full T x T square
  (causality not subtracted, the PaLM convention, and what ``FlopCounterMode`` counts for SDPA):
  ``4*B*T^2*d`` forward, backward twice the forward (dQ, dK from dS; dV, dP from dO): ``12*B*T^2*d``.
  A flash kernel's recomputation of Q K^T in backward is not counted: it is not model work.
* **Mamba mixer** (d_inner channels, state N, conv width K). These are not matmuls; counted so that the
  total is complete, but kept apart (``mamba_conv``, ``mamba_scan``) and left out of the MFU:
  the depthwise causal conv ``2*K`` per output element forward, ``4*K`` backward (input and weight
  gradients): ``6*K*d_inner*BT``. The selective scan, per (token, channel, state): exp(delta*A), delta*B*u,
  h = dA*h + dBu and y += C*h, about 9 FLOPs forward; backward counted as twice that: ``27*BT*d_inner*N``.

``count_train_step_flops`` walks the module tree, so hybrids are counted by the same rule. Its Linear and
attention parts equal what ``torch.utils.flop_counter.FlopCounterMode`` measures for one step (``aten.mm`` /
``addmm`` and ``bmm`` / SDPA; tests/test_bench_flops.py). The scan and conv are custom kernels it does not see.

**MFU** (model FLOP utilisation) = (matmul + attention FLOPs of the step) / step time / the matmul peak of
the same dtype, measured in the same process (``matmul_peak``): on CPU an fp32 and a bf16 1024^3 ``torch.mm``
at the bench's thread count, on CUDA 4096^3 (1024^3 does not fill a large GPU). That is the ceiling of the
kernels a training step can use; on CPU ``fp32_onednn_gflops`` (informational) shows the hardware's higher
fp32 rate where MKL's sgemm does not reach it (AMD CPUs).
"""
from __future__ import annotations

import time

import torch
from torch import nn

#: the parts that are matmul work and count towards the MFU
MATMUL_PARTS = ("matmul", "attention")


def count_train_step_flops(model: nn.Module, batch: int, tokens: int) -> dict:
    """FLOPs of one training step by the rule above: ``{"matmul", "attention", "mamba_conv", "mamba_scan",
    "mfu_flops" (= matmul + attention), "total"}``."""
    from ..models.attention import CausalSelfAttention
    from ..models.mamba import MambaMixer

    bt = batch * tokens
    read_in = getattr(model, "read_in", None)
    out = {"matmul": 0, "attention": 0, "mamba_conv": 0, "mamba_scan": 0}
    for m in model.modules():
        if isinstance(m, nn.Linear):
            out["matmul"] += (4 if m is read_in else 6) * m.in_features * m.out_features * bt
        elif isinstance(m, CausalSelfAttention):
            out["attention"] += 12 * batch * tokens**2 * m.n_head * m.head_dim
        elif isinstance(m, MambaMixer):
            out["mamba_conv"] += 6 * m.d_conv * m.d_inner * bt
            out["mamba_scan"] += 27 * bt * m.d_inner * m.d_state
    out["total"] = sum(out.values())
    out["mfu_flops"] = sum(out[k] for k in MATMUL_PARTS)
    return out


def closed_form_transformer_flops(n_layer: int, d_model: int, n_dims: int, y_dim: int, ffn_hidden: int,
                                  batch: int, tokens: int, ffn_mats: int = 2) -> int:
    """The same count written out for a GPT-2 / Llama stack (attention: 4 d^2 weights; FFN: ``ffn_mats``
    matrices of d x ffn_hidden, 2 for GELU, 3 for SwiGLU): ``6 * N_matmul * BT + 4 * read_in * BT +
    12 * L * B * T^2 * d`` (N_matmul without the read-in). A cross-check of the module walk in the tests."""
    bt = batch * tokens
    per_layer = 4 * d_model * d_model + ffn_mats * d_model * ffn_hidden
    return (6 * (n_layer * per_layer + d_model * y_dim) * bt + 4 * n_dims * d_model * bt
            + 12 * n_layer * batch * tokens**2 * d_model)


#: FlopCounterMode ops by part of the rule: Linear layers become mm / addmm (2-D views of [B, T, in]),
#: attention's matmuls become bmm (the explicit and SDPA-math paths) or the fused SDPA ops
COUNTER_OPS = {"matmul": ("mm", "addmm"),
               "attention": ("bmm", "baddbmm", "_scaled_dot_product_efficient_attention",
                             "_scaled_dot_product_flash_attention", "_scaled_dot_product_cudnn_attention",
                             "_scaled_dot_product_efficient_attention_backward",
                             "_scaled_dot_product_flash_attention_backward",
                             "_scaled_dot_product_cudnn_attention_backward", "_flash_attention_forward",
                             "_flash_attention_backward", "_efficient_attention_forward",
                             "_efficient_attention_backward")}


def measured_flops(step) -> dict:
    """FLOPs of one call of ``step`` as ``torch.utils.flop_counter.FlopCounterMode`` counts them, split as
    ``COUNTER_OPS`` (``matmul``, ``attention``), plus ``total`` (everything it counted) and ``by_op``.
    Note: CPU's fused SDPA op (``_scaled_dot_product_flash_attention_for_cpu``) has no FLOP formula in torch;
    run the step under ``perf.sdpa_math()`` (bmm) or with the explicit attention path to see attention."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        step()
    by_op: dict[str, int] = {}
    for op, n in fc.get_flop_counts().get("Global", {}).items():
        name = str(op).split(".")[-1] if "." in str(op) else str(op)
        by_op[name] = by_op.get(name, 0) + int(n)
    out = {part: sum(by_op.get(o, 0) for o in ops) for part, ops in COUNTER_OPS.items()}
    out["total"], out["by_op"] = int(fc.get_total_flops()), by_op
    return out


def _default_n(device: torch.device) -> int:
    return 4096 if device.type == "cuda" else 1024


def matmul_peak(device: torch.device, reps: int = 5, n: int | None = None) -> dict:
    """Best-of-``reps`` GFLOP/s of an n x n x n ``torch.mm`` in fp32 and in bf16 (2 n^3 FLOPs each) at the
    current thread count: the roofline's ceiling (``meta.matmul_peak``). Inputs are random normal (zeros
    would be faster on some hardware). n: 1024 on CPU, 4096 on CUDA."""
    n = n or _default_n(device)
    flops = 2 * n**3
    g = torch.Generator().manual_seed(0)
    out: dict = {"n": n, "reps": reps, "what": f"best of {reps} torch.mm [{n}x{n}] @ [{n}x{n}], random normal"}
    for tag, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(n, n, generator=g).to(device, dt)
        b = torch.randn(n, n, generator=g).to(device, dt)
        try:
            a @ b  # warm-up: library dispatch, oneDNN primitive creation, GPU clocks
        except RuntimeError as e:  # a build without this dtype's matmul
            out[f"{tag}_gflops"], out[f"{tag}_error"] = None, str(e)
            continue
        best = float("inf")
        for _ in range(reps):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            a @ b
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - t0)
        out[f"{tag}_gflops"] = flops / best / 1e9
    if device.type == "cpu":
        out["fp32_onednn_gflops"] = onednn_fp32_gflops(reps, n)
    return out


def onednn_fp32_gflops(reps: int = 5, n: int = 1024) -> float | None:
    """Informational: the same fp32 product through oneDNN (a ``torch.utils.mkldnn`` Linear, inference only).
    ``torch.mm`` in fp32 calls MKL's sgemm, which on AMD CPUs runs its AVX2 code: on the 2-core AMD EPYC
    (Zen 5) of docs/performance.md oneDNN reaches 2.1x torch.mm's fp32 rate. Training's fp32 matmuls cannot
    take this path, so the MFU stays against ``torch.mm``; this shows how far the hardware's fp32 ceiling is.
    None where oneDNN is not built in."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        from torch.utils import mkldnn as mkldnn_utils

        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            lin = nn.Linear(n, n, bias=False)
            lin.weight.copy_(torch.randn(n, n, generator=g))
            lin = mkldnn_utils.to_mkldnn(lin)
            x = torch.randn(n, n, generator=g).to_mkldnn()
            lin(x)
            best = float("inf")
            for _ in range(reps):
                t0 = time.perf_counter()
                lin(x)
                best = min(best, time.perf_counter() - t0)
    except Exception:  # noqa: BLE001 - informational only
        return None
    return 2 * n**3 / best / 1e9


def merge_peaks(*peaks: dict) -> dict:
    """The higher of several ``matmul_peak`` measurements per dtype (the bench measures before and after
    its entries; the higher one is the less load-affected ceiling, so MFU is not flattered)."""
    out = dict(peaks[0])
    for tag in ("fp32", "bf16", "fp32_onednn"):  # the last: informational, CPU only
        vals = [p.get(f"{tag}_gflops") for p in peaks if p.get(f"{tag}_gflops")]
        out[f"{tag}_gflops"] = max(vals) if vals else None
        out[f"{tag}_gflops_each"] = [p.get(f"{tag}_gflops") for p in peaks]
    return out


def roofline(flops: dict, seconds: float, peak_gflops: float | None) -> dict:
    """Achieved GFLOP/s of one step (matmul + attention part, and total) and its MFU against ``peak_gflops``."""
    mm = flops["mfu_flops"] / seconds / 1e9
    out = {"gflops": mm, "gflops_total": flops["total"] / seconds / 1e9}
    if peak_gflops:
        out["mfu"] = mm / peak_gflops
    return out


def cpu_bf16_support() -> dict:
    """Whether this CPU has native bf16 matmul instructions (AVX512-BF16 ``vdpbf16ps``, AMX-BF16 tiles):
    without them oneDNN emulates bf16 through fp32 conversions and bf16 autocast does not pay
    (docs/performance.md, "bf16 on CPU"). From ``torch.cpu.get_capabilities()`` where it exists, else
    /proc/cpuinfo flags."""
    out: dict = {"capability": torch.backends.cpu.get_cpu_capability()}
    caps = None
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is not None:
        try:
            caps = get()
        except Exception:  # noqa: BLE001 - informational
            caps = None
    if caps:
        out.update(avx512_bf16=bool(caps.get("avx512_bf16")), amx_bf16=bool(caps.get("amx_bf16")),
                   source="torch.cpu.get_capabilities()")
    else:
        flags: set[str] = set()
        try:
            for line in open("/proc/cpuinfo"):
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
        except OSError:
            pass
        out.update(avx512_bf16="avx512_bf16" in flags, amx_bf16="amx_bf16" in flags, source="/proc/cpuinfo")
    out["native_bf16"] = bool(out["avx512_bf16"] or out["amx_bf16"])
    return out
