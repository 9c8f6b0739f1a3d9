"""python -m icl_hybrids.doctor [json=true]: what this machine can run and which fast paths are there.

Prints the versions (python, torch, lightning, hydra, transformers), the devices (CPU model, cores, torch
threads; CUDA devices) and, for each fast path, whether it imports and whether training would use it here:
the CUDA Mamba kernels (mamba-ssm + causal-conv1d), flash-attn, the fused C++ CPU Mamba kernel
(icl_hybrids/ops/_cpu_kernel.py), fused Adam, torch.compile, bf16. Nothing is trained; the C++ kernel is
compiled on first use (a few seconds, cached). A run records the paths it actually used in results.json
(``fast_paths``). Exit status 0 (2 for bad arguments): a missing fast path is information, not an error.
"""
from __future__ import annotations

import importlib
import json
import os
import platform
import sys


def _version(mod: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:  # noqa: BLE001 - not installed
        try:
            return getattr(importlib.import_module(mod), "__version__", "?")
        except Exception:  # noqa: BLE001
            return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _imports(mod: str) -> tuple[bool, str | None]:
    try:
        importlib.import_module(mod)
        return True, None
    except Exception as e:  # noqa: BLE001 - ImportError, missing .so, ABI mismatch
        msg = str(e).strip().splitlines()[0][:120] if str(e).strip() else ""
        return False, f"{type(e).__name__}{': ' + msg if msg else ''}"


def report() -> dict:
    """Everything the doctor prints, as a dict (``json=true``)."""
    import torch

    cuda = torch.cuda.is_available()
    devices = [{"index": i, "name": torch.cuda.get_device_name(i),
                "memory_gb": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1),
                "capability": ".".join(map(str, torch.cuda.get_device_capability(i)))}
               for i in range(torch.cuda.device_count())] if cuda else []
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    out = {
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torch_cuda": torch.version.cuda, "lightning": _version("lightning"),
                     "hydra": _version("hydra-core"), "omegaconf": _version("omegaconf"),
                     "transformers": _version("transformers"), "icl_hybrids": _version("icl_hybrids")},
        "devices": {"cpu": _cpu_model(), "cpu_cores": os.cpu_count(), "cpu_usable": usable,
                    "torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                    "cuda_available": cuda, "cuda": devices},
    }
    fp = {}
    # Mamba on CUDA: both packages must import (models/mamba.py falls back to the torch scan otherwise)
    ok_m, err_m = _imports("mamba_ssm.ops.selective_scan_interface")
    ok_c, err_c = _imports("causal_conv1d")
    fp["mamba_cuda_kernels"] = {"importable": ok_m and ok_c, "active": ok_m and ok_c and cuda,
                                "why_not": None if ok_m and ok_c else (err_m or err_c)}
    ok_f, err_f = _imports("flash_attn")
    fp["flash_attn"] = {"importable": ok_f, "active": ok_f and cuda, "why_not": err_f,
                        "note": "used on CUDA with fp16/bf16 (trainer.precision=bf16-mixed); else SDPA"}
    from .ops import _cpu_kernel

    ok = _cpu_kernel.available()
    # active: accelerator=auto trains on the CPU when there is no GPU
    fp["cpu_mamba_kernel"] = {"importable": ok, "active": ok and not cuda, "why_not": _cpu_kernel.load_error(),
                              "library": _cpu_kernel.library_path(),
                              "note": "Mamba scan + causal conv on CPU tensors (scan=cpp, the default)"}
    fp["sdpa"] = {"importable": hasattr(torch.nn.functional, "scaled_dot_product_attention"), "active": True}
    try:
        p = torch.nn.Parameter(torch.zeros(2))
        p.grad = torch.zeros(2)
        torch.optim.Adam([p], fused=True).step()
        fused_cpu, why = True, None
    except Exception as e:  # noqa: BLE001 - older torch: fused Adam is CUDA only
        fused_cpu, why = False, str(e).strip().splitlines()[0][:120]
    fp["fused_adam"] = {"importable": fused_cpu or cuda, "active": False, "why_not": why,
                        "note": "off by default; optim.fused=true (CPU and CUDA) else foreach"}
    try:
        import torch._dynamo  # noqa: F401

        comp_ok, comp_err = hasattr(torch, "compile"), None
    except Exception as e:  # noqa: BLE001
        comp_ok, comp_err = False, f"{type(e).__name__}: {e}"
    cc = _cpu_kernel._compiler()
    fp["torch_compile"] = {"importable": comp_ok, "active": False, "why_not": comp_err or (None if cc else
                           "no C compiler found (inductor needs one)"), "note": "off by default; trainer.compile=true"}
    bf16_cuda = bool(cuda and torch.cuda.is_bf16_supported())
    fp["bf16"] = {"importable": True, "active": bf16_cuda,
                  "cuda": bf16_cuda, "cpu": _bf16_cpu(),
                  "note": f"CUDA {'yes' if bf16_cuda else 'no'}, CPU {'yes' if _bf16_cpu() else 'no'}; "
                          "trainer.precision=bf16-mixed (conf/trainer/gpu.yaml); 32-true by default"}
    out["fast_paths"] = fp
    return out


def _bf16_cpu() -> bool:
    import torch

    try:
        a = torch.ones(2, 2, dtype=torch.bfloat16)
        return bool(torch.isfinite(a @ a).all())
    except Exception:  # noqa: BLE001
        return False


def format_report(r: dict) -> str:
    v, d = r["versions"], r["devices"]
    lines = ["versions"]
    lines += [f"  {k:<13} {val if val is not None else '(not installed)'}" for k, val in v.items()]
    lines += ["devices",
              f"  cpu           {d['cpu']}",
              f"  cores         {d['cpu_cores']} ({d['cpu_usable']} usable by this process); torch threads "
              f"{d['torch_threads']} (OMP_NUM_THREADS={d['OMP_NUM_THREADS'] or 'unset'})"]
    if d["cuda"]:
        for g in d["cuda"]:
            lines.append(f"  cuda:{g['index']}        {g['name']} ({g['memory_gb']} GB, sm {g['capability']})")
    else:
        lines.append("  cuda          none" + ("" if r["versions"]["torch_cuda"] else " (a CPU build of torch)"))
    lines.append("fast paths (importable / active in a default run here)")
    for name, f in r["fast_paths"].items():
        state = ("yes" if f["importable"] else "no ") + " / " + ("yes" if f["active"] else "no ")
        extra = f.get("note") or ""
        if not f["importable"] and f.get("why_not"):
            extra = f"{f['why_not']}" + (f"; {extra}" if extra else "")
        lines.append(f"  {name:<19} {state}  {extra}".rstrip())
    return "\n".join(lines)


def main(argv=None) -> int:
    from .cli import parse_kv
    from .config import ConfigError

    try:
        args = parse_kv(list(sys.argv[1:] if argv is None else argv), {"json": False}, prog="python -m icl_hybrids.doctor",
                        doc=__doc__, help={"json": "print the report as JSON"})
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args is None:
        return 0
    r = report()
    print(json.dumps(r, indent=2) if args["json"] else format_report(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
