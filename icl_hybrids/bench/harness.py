"""Timing (interleaved reps), peak memory and the JSON number helpers of the benchmark."""
from __future__ import annotations

import ctypes
import gc
import math
import re
import resource
import statistics
import time
from collections.abc import Callable

import torch


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
        for v in out.values():
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
