"""The benchmark driver: ``run`` (every entry, the ``meta`` object and its targets) and ``main`` (the CLI
of ``python -m icl_hybrids.bench``)."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Callable

import torch

from . import flops
from .baselines import bench_baseline
from .evaluate import bench_evaluate
from .harness import Runner, _r
from .mamba import bench_mamba_scan, scan_sweep
from .sizes import (
    AGREEMENT_TOL,
    BASELINE_NAMES,
    BF16_MODELS,
    PAPER_SIZE_TARGETS,
    SIZES,
    TARGETS,
    TARGETS_MAX,
    TRAIN_MODELS,
)
from .train_step import bench_train_step, bench_train_step_bf16, bench_train_step_ratio


def entry_names() -> list[str]:
    return ([f"baselines.{n}" for n in BASELINE_NAMES] + [f"train_step.{m}" for m in TRAIN_MODELS]
            + [f"train_step_bf16.{m}" for m in BF16_MODELS]
            + ["train_step_ratio.mamba_vs_gpt2", "mamba_scan", "evaluate"])


def add_mfu(res: dict, peak: dict) -> None:
    """Complete every entry's ``roofline.<side>`` with its MFU against the matmul peak of the side's dtype,
    and copy ours to the entry's top level (``mfu``; bf16 entries: ``mfu_fp32`` and ``mfu_bf16``)."""
    for key, e in res.items():
        roof = e.get("roofline") if isinstance(e, dict) else None
        if not roof:
            continue
        for rec in roof.values():
            pk = peak.get(f"{rec['dtype']}_gflops")
            if pk:
                rec["peak_gflops"] = _r(pk)
                rec["mfu"] = _r(rec["gflops"] / pk, 3)
        if "ours" in roof and "mfu" in roof["ours"]:
            e["mfu"] = roof["ours"]["mfu"]
        if "ours_compiled" in roof and "mfu" in roof["ours_compiled"]:
            e["compiled_mfu"] = roof["ours_compiled"]["mfu"]
        for side in ("fp32", "bf16"):
            if side in roof and "mfu" in roof[side] and key.startswith("train_step_bf16."):
                e[f"mfu_{side}"] = roof[side]["mfu"]


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
    for entry, key, thr in TARGETS_MAX:
        if entry in res and key in res[entry]:
            v = res[entry][key]
            out[f"{entry}.{key}<={thr:g}"] = {"value": v, "pass": bool(v <= thr)}
    for entry, e in res.items():
        if isinstance(e, dict) and "max_abs_diff" in e and entry.startswith(("baselines.", "mamba_scan")):
            v = e["max_abs_diff"]
            out[f"{entry}.max_abs_diff<={AGREEMENT_TOL:g}"] = {"value": v, "pass": bool(v <= AGREEMENT_TOL)}
    speed = (".speedup", ".ratio", ".mfu")
    for k, v in out.items():
        if mode == "tiny" and any(s in k for s in speed):
            v["note"] = "tiny sizes (tests): speed targets do not apply"
        elif dev.type != "cpu" and any(s in k for s in speed):
            v["note"] = "the speed targets are CPU targets"
        elif mode == "quick" and k.rsplit(">=", 1)[0] in PAPER_SIZE_TARGETS:
            v["note"] = "a paper-size target (full mode); quick sizes are recorded only"
    return out


def run(quick: bool = False, tiny: bool = False, threads: int | None = None, only: str | None = None,
        device: str | None = None, compile_models: bool = False, reps: int | None = None,
        compile_mode: str | None = None, log: Callable[[str], None] | None = None,
        on_entry: Callable[[dict], None] | None = None) -> dict:
    """Run the benchmark entries (those whose key starts with one of the comma-separated prefixes in
    ``only``) and return the result object (see the package docstring). ``reps`` replaces the size's
    number of timed reps of the model entries (train steps, scan, evaluate; more for millisecond GPU steps).
    ``on_entry(partial)`` is called after every entry with the results so far (``meta`` reduced to
    ``partial: true`` and the first matmul peak): ``json=`` keeps what a killed run measured."""
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    mode = "tiny" if tiny else "quick" if quick else "full"
    size = dict(SIZES[mode])
    if reps:
        size.update(reps=int(reps), scan_reps=int(reps), eval_reps=max(1, int(reps) // 5))
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    allocator = None
    if dev.type == "cpu":  # as train.fit does on CPU: both sides of every entry run with it
        from ..perf import tune_cpu_allocator

        allocator = tune_cpu_allocator()
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
    peak_reps = 2 if mode == "tiny" else 10
    peaks = []
    roof = any(k.startswith("train_step") for k in todo)
    try:
        if roof:  # the ceiling of the MFU, at this run's threads; measured again after the entries
            peaks.append(flops.matmul_peak(dev, reps=peak_reps, n=256 if mode == "tiny" else None))
        for key in todo:
            t0 = time.perf_counter()
            log(f"[bench] {key} ...")
            try:
                if key.startswith("baselines."):
                    e = bench_baseline(key.split(".", 1)[1], size, runner, size["reps"], size["slow_reps"])
                elif key == "train_step_ratio.mamba_vs_gpt2":
                    e = bench_train_step_ratio(size, runner, size["reps"])
                elif key.startswith("train_step_bf16."):
                    e = bench_train_step_bf16(key.split(".", 1)[1], size, runner, size["reps"])
                elif key.startswith("train_step."):
                    e = bench_train_step(key.split(".", 1)[1], size, runner, size["reps"], size["hf_mamba_reps"],
                                         compile_models, compile_mode)
                elif key == "mamba_scan":
                    e = bench_mamba_scan(size, runner, size["scan_reps"])
                else:
                    e = bench_evaluate(mode, size, runner, size["eval_reps"])
            except Exception as exc:  # recorded; the other entries still run
                e = {"error": f"{type(exc).__name__}: {exc}"}
                errors[key] = e["error"]
            e["wall_s"] = round(time.perf_counter() - t0, 1)
            res[key] = e
            if on_entry is not None:
                partial = json.loads(json.dumps(res))  # a copy: add_mfu below must not see twice
                if peaks:
                    add_mfu(partial, peaks[0])
                on_entry({"meta": {"partial": True, "done": list(res), "todo": todo,
                                   "matmul_peak": peaks[0] if peaks else None}, **partial})
            brief = {k: v for k, v in e.items()
                     if k.startswith(("speedup", "max_abs", "steps_per", "min_s", "error", "ratio", "gflops"))}
            log(f"[bench] {key}: {json.dumps(brief)}")
        if roof:
            peaks.append(flops.matmul_peak(dev, reps=peak_reps, n=256 if mode == "tiny" else None))
    finally:
        torch.set_num_threads(prev_threads)
        if limiter is not None:
            limiter.unregister()
    peak = flops.merge_peaks(*peaks) if peaks else None
    if peak:
        add_mfu(res, peak)
    meta = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "mode": mode, "quick": quick and not tiny, "tiny": tiny,
        "device": dev.type, "device_name": _device_name(dev), "threads": n_threads,
        "torch": torch.__version__, "python": platform.python_version(),
        "versions": _versions(), "command": "python -m icl_hybrids.bench" + (" quick=true" if quick and not tiny else "")
        + (" tiny=true" if tiny else "") + (f" threads={threads}" if threads else "")
        + (f" only={only}" if only else "") + (" compile=true" if compile_models else "")
        + (f" compile_mode={compile_mode}" if compile_mode else "") + (f" reps={reps}" if reps else ""),
        "compile": compile_models,
        "sizes": size, "memory": runner.memory.method, "allocator": allocator,
        "matmul_peak": ({k: (_r(v) if isinstance(v, float) else v) for k, v in peak.items()} if peak else None),
        "roofline": ("FLOPs per step: icl_hybrids/bench/flops.py (Linear 6*in*out*B*T, read-in 4*..., attention "
                     "12*B*T^2*d, Mamba conv/scan apart); gflops = (matmul + attention FLOPs) / min step time; "
                     "mfu = gflops / the higher of two matmul_peak measurements (before and after the entries) "
                     "of the side's dtype"),
        "cpu_bf16": flops.cpu_bf16_support() if dev.type == "cpu" else None,
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


DEFAULTS = {"quick": False, "json": None, "threads": None, "only": None, "compile": False, "scan_sweep": False,
            "tiny": False, "reps": None, "compile_mode": None}
HELP = {"quick": "reduced sizes (< 3 min on 2 CPU cores)",
        "json": "also write the result object to this file (rewritten after every entry: partial results survive a kill)",
        "threads": "torch / BLAS threads (CPU default: 1)",
        "only": "run only the entries whose key starts with this prefix (comma-separated list)",
        "compile": "also time torch.compile'd train steps of the train_step.<model> entries (slow to start)",
        "compile_mode": "torch.compile mode with compile=true (e.g. reduce-overhead: CUDA graphs; default: torch's)",
        "reps": "timed reps of the model entries (default: the size's; GPU steps of milliseconds want ~20)",
        "scan_sweep": "only print the per-implementation selective-scan table (docs/mamba.md) and exit",
        "tiny": "test sizes (seconds; what tests/test_bench.py runs)"}


def main(argv=None) -> int:
    from ..cli import parse_kv
    from ..config import ConfigError
    from . import __doc__ as doc  # the package docstring (icl_hybrids/bench/__init__.py)

    try:
        kw = parse_kv(list(sys.argv[1:] if argv is None else argv), DEFAULTS, prog="python -m icl_hybrids.bench",
                      doc=doc + "\nentries: " + ", ".join(entry_names()), help=HELP)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if kw is None:
        return 0
    a = argparse.Namespace(**kw)
    if a.scan_sweep:
        prev = torch.get_num_threads()
        torch.set_num_threads(a.threads or 1)
        try:
            res = scan_sweep(log=lambda s: print(s, file=sys.stderr, flush=True))
        finally:
            torch.set_num_threads(prev)
        print(json.dumps(res, indent=1))
        return 0
    offline = os.environ.get("HF_HUB_OFFLINE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # transformers' kernel hub: never fetch during a benchmark

    def write(obj: dict) -> None:  # atomically: a reader (or a kill) never sees half a file
        tmp = f"{a.json}.tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(obj, indent=1) + "\n")
        os.replace(tmp, a.json)

    try:
        res = run(quick=a.quick, tiny=a.tiny, threads=a.threads, only=a.only, compile_models=a.compile, reps=a.reps,
                  compile_mode=a.compile_mode, on_entry=write if a.json else None)
    finally:
        if offline is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
    print(json.dumps(res, indent=1))
    if a.json:
        write(res)
    return 1 if res["meta"]["errors"] else 0
