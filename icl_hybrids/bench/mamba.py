"""``mamba_scan``: our default selective scan vs mambapy's pscan and our pure-PyTorch loop; and the
``scan_sweep=true`` table."""
from __future__ import annotations

import json
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..refs import mambapy_scan
from .harness import Runner, _maxdiff, _r, _ratio, _timing


def bench_mamba_scan(size: dict, runner: Runner, reps: int) -> dict:
    from ..models import mamba as M
    from ..ops import selective_scan as S

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
        "ours": lambda t: S.scan_blc(t["u"], t["delta"], t["A"], t["B"], t["C"], Dv, z, method=S.AUTO_SCAN),
        "mambapy": lambda t: mambapy_scan(t["u"], t["delta"], t["A"], t["B"], t["C"], Dv, z),
    }
    if S.AUTO_SCAN != "loop":
        impls["torch_loop"] = lambda t: S.scan_blc(t["u"], t["delta"], t["A"], t["B"], t["C"], Dv, z, method="loop")
    if dev.type == "cuda" and M.cuda_kernels_available():
        sel_scan = M._load_cuda_kernels()[0]
        impls["mamba_ssm"] = lambda t: sel_scan(
            t["u"].transpose(1, 2).contiguous(), t["delta"].transpose(1, 2).contiguous(), t["A"],
            t["B"].transpose(1, 2).contiguous(), t["C"].transpose(1, 2).contiguous(), Dv,
            z=z.transpose(1, 2).contiguous()).transpose(1, 2)
    results = {k: run(f) for k, f in impls.items()}
    # the plain sequential reference (ops.selective_scan_ref, [B, D, L] layout), run once, untimed
    results["reference"] = run(lambda t: S.selective_scan_ref(
        t["u"].transpose(1, 2), t["delta"].transpose(1, 2), t["A"], t["B"].transpose(1, 2),
        t["C"].transpose(1, 2), Dv, z.transpose(1, 2)).transpose(1, 2))
    y0, g0 = results["ours"]
    kernel = S.AUTO_SCAN == "cpp" and dev.type == "cpu" and S.cpu_kernel_available()
    entry = {"device": dev.type,
             "shapes": {"B": Bsz, "T": T, "d_inner": Dn, "d_state": N, "dtype": "float32"},
             "what": "selective scan incl. D skip and silu(z) gate, forward + backward w.r.t. u, delta, A, B, C",
             "ours_impl": f"icl_hybrids.ops.scan_blc(method={S.AUTO_SCAN!r}) (the mixer's default scan"
                          + ("; C++ CPU kernel)" if kernel else "; pure-PyTorch loop fallback)")}
    t = runner.compare({k: (lambda f=f: run(f)) for k, f in impls.items()}, reps)
    entry["ours"] = _timing(t["ours"])
    for k in [*impls, "reference"]:
        if k == "ours":
            continue
        y1, g1 = results[k]
        if k in t:
            entry[k] = _timing(t[k])
            entry[f"speedup_vs_{k}"] = _r(_ratio(t[k]["min_s"], t["ours"]["min_s"]))
            entry[f"speedup_vs_{k}_median"] = _r(_ratio(t[k]["median_s"], t["ours"]["median_s"]))
        sfx = "" if k == "mambapy" else f"_vs_{k}"
        entry["max_abs_diff" + sfx] = _r(_maxdiff(y0, y1), 3)
        entry["max_rel_diff_grads" + sfx] = _r(max(_maxdiff(g0[n], g1[n]) / max(float(g1[n].abs().max()), 1e-30)
                                                   for n in g0), 3)
    entry["output_max_abs"] = _r(float(y0.abs().max()), 3)
    return entry


def scan_sweep(shapes=((64, 82, 1024, 16), (64, 22, 256, 16)), chunk_sizes=(4, 8, 16), reps: int = 3,
               log: Callable[[str], None] | None = None) -> dict:  # pragma: no cover
    """Every ``ops`` scan (x chunk sizes for the pure-PyTorch ones) and mambapy's ``pscan``, fwd + bwd
    incl. D/z gating, best of ``reps`` (CPU, current threads): ``python -m icl_hybrids.bench scan_sweep=true``.
    Moved here from ``models/mamba.py``; the table in docs/mamba.md."""
    from ..ops import selective_scan as S

    out = {}
    for Bsz, T, Dn, N in shapes:
        torch.manual_seed(0)
        u = torch.randn(Bsz, T, Dn)
        delta = F.softplus(torch.randn(Bsz, T, Dn) - 2.0)
        A = -torch.arange(1, N + 1, dtype=torch.float32).repeat(Dn, 1)
        Bm, Cm = torch.randn(Bsz, T, N), torch.randn(Bsz, T, N)
        Dv, z = torch.ones(Dn), torch.randn(Bsz, T, Dn)
        fns = {"cpp": lambda u_, d_, A_, B_, C_, Dv=Dv, z=z: S.scan_blc(u_, d_, A_, B_, C_, Dv, z, method="cpp")}
        for method in ("loop", "chunked"):
            for cs in chunk_sizes:
                fns[f"{method}(chunk={cs})"] = (lambda u_, d_, A_, B_, C_, m=method, c=cs, Dv=Dv, z=z:
                                                S.scan_blc(u_, d_, A_, B_, C_, Dv, z, method=m, chunk_size=c))
        try:
            import mambapy.pscan  # noqa: F401

            fns["mambapy.pscan"] = lambda u_, d_, A_, B_, C_, Dv=Dv, z=z: mambapy_scan(u_, d_, A_, B_, C_, Dv, z)
        except ImportError:
            pass
        best = {k: float("inf") for k in fns}
        for _ in range(reps):  # interleaved
            for k, fn in fns.items():
                args = [t.clone().requires_grad_() for t in (u, delta, A, Bm, Cm)]
                t0 = time.perf_counter()
                fn(*args).sum().backward()
                best[k] = min(best[k], time.perf_counter() - t0)
        key = f"B={Bsz},T={T},D={Dn},N={N}"
        out[key] = {k: f"{v * 1e3:.1f} ms" for k, v in best.items()}
        if log:
            log(f"[scan-sweep] {key}: {json.dumps(out[key])}")
    return out
