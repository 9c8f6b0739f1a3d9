"""Build, cache and call the fused C++ CPU selective scan (source in :mod:`._cpu_kernel_src`).

On first use the source is compiled with the system C++ compiler (``$CXX``, else ``c++``/``g++``)
into ``$ICL_HYBRIDS_EXT_DIR`` (default ``$XDG_CACHE_HOME/icl_hybrids`` or ``~/.cache/icl_hybrids``),
under a name that hashes the source, the flags, the compiler version and the host CPU's feature flags
(the build uses ``-march=native``), so machines sharing a home directory never load each other's
binaries. Compilation takes about a second; it is written to a temporary file and renamed, so
concurrent first uses (several test or sweep processes) are safe. The library has a plain C ABI and is
called through ``ctypes`` (no torch headers, no pybind11).

If no compiler is available or the build fails, :func:`available` returns False (the reason is in
:func:`load_error`) and callers fall back to the pure-PyTorch scan. ``ICL_HYBRIDS_CPU_KERNEL=0``
disables the kernel.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._cpu_kernel_src import SOURCE

__all__ = ["available", "load_error", "library_path", "supports", "CppSelectiveScanFn",
           "CppCausalConv1dFn", "TILE"]

# Channels per work unit (state [N, TILE] stays in L1). Measured flat between 32 and 128 on CPU.
TILE = {torch.float32: 64, torch.float64: 32}

_BASE_FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-fno-math-errno", "-fno-trapping-math",
               "-fassociative-math", "-fno-signed-zeros"]  # reductions vectorise; no finite-math
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_error: str | None = None
_path: str | None = None


def _cache_dir() -> str:
    d = os.environ.get("ICL_HYBRIDS_EXT_DIR")
    if not d:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "icl_hybrids")
    return d


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compiler() -> str | None:
    for c in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if c and shutil.which(c):
            return c
    return None


def _try_compile(cxx: str, flags: list[str], out: str) -> str | None:
    d = os.path.dirname(out)
    fd, src = tempfile.mkstemp(suffix=".cpp", dir=d)
    with os.fdopen(fd, "w") as f:
        f.write(SOURCE)
    tmp = out + f".tmp{os.getpid()}"
    try:
        r = subprocess.run([cxx, *flags, src, "-o", tmp], capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            return (r.stderr or r.stdout)[-2000:]
        os.replace(tmp, out)
        return None
    except (OSError, subprocess.SubprocessError) as e:
        return f"{type(e).__name__}: {e}"
    finally:
        for p in (src, tmp):
            if os.path.exists(p):
                os.remove(p)


def _build() -> str:
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found ($CXX, c++, g++, clang++)")
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    arch = ["-march=native"] if platform.machine() in ("x86_64", "AMD64", "i686") else ["-mcpu=native"]
    variants = [_BASE_FLAGS + arch + ["-fopenmp"], _BASE_FLAGS + arch, _BASE_FLAGS]
    d = _cache_dir()
    try:
        os.makedirs(d, exist_ok=True)
        if not os.access(d, os.W_OK):
            raise OSError
    except OSError:
        d = tempfile.mkdtemp(prefix="icl_hybrids_ext_")
    errors = []
    for flags in variants:
        key = hashlib.sha256("\0".join([SOURCE, cxx, version, " ".join(flags), _cpu_flags(),
                                        sys.platform]).encode()).hexdigest()[:16]
        out = os.path.join(d, f"selective_scan_cpu_{key}.so")
        if not os.path.exists(out):
            err = _try_compile(cxx, flags, out)
            if err is not None:
                errors.append(f"{' '.join(flags)}: {err}")
                continue
        return out
    raise RuntimeError("compiling the CPU selective scan failed:\n" + "\n".join(errors))


def _load() -> ctypes.CDLL | None:
    global _lib, _error, _path
    if _lib is not None or _error is not None:
        return _lib
    with _lock:
        if _lib is not None or _error is not None:
            return _lib
        if os.environ.get("ICL_HYBRIDS_CPU_KERNEL", "1") in ("0", "false", "no", "off"):
            _error = "disabled by ICL_HYBRIDS_CPU_KERNEL=0"
            return None
        try:
            path = _build()
            lib = ctypes.CDLL(path)
            if lib.ss_abi_version() != 2:
                raise RuntimeError("ABI version mismatch")
            P, I64, I32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
            for sfx in ("f32", "f64"):
                getattr(lib, f"ss_fwd_{sfx}").argtypes = [P] * 8 + [I64] * 5 + [I32]
                getattr(lib, f"ss_fwd_{sfx}").restype = None
                getattr(lib, f"ss_bwd_{sfx}").argtypes = [P] * 15 + [I64] * 5 + [I32]
                getattr(lib, f"ss_bwd_{sfx}").restype = None
                getattr(lib, f"conv_fwd_{sfx}").argtypes = [P, I64, P, P, P] + [I64] * 4 + [I32, I32]
                getattr(lib, f"conv_fwd_{sfx}").restype = None
                getattr(lib, f"conv_bwd_{sfx}").argtypes = [P, I64, P, P, P, P, P, P] + [I64] * 4 + [I32, I32]
                getattr(lib, f"conv_bwd_{sfx}").restype = None
            _lib, _path = lib, path
        except Exception as e:  # no compiler, failed build, unloadable library: torch fallback
            _error = f"{type(e).__name__}: {e}"
    return _lib


def available() -> bool:
    """True iff the kernel is (or can be) compiled and loaded on this machine."""
    return _load() is not None


def load_error() -> str | None:
    _load()
    return _error


def library_path() -> str | None:
    _load()
    return _path


def supports(*tensors: Tensor) -> bool:
    """Whether the kernel applies: CPU tensors of float32/float64 (and the library loads)."""
    t0 = tensors[0]
    return (t0.device.type == "cpu" and t0.dtype in TILE
            and all(t is None or (t.device.type == "cpu" and t.dtype == t0.dtype) for t in tensors)
            and available())


def _ptr(t: Tensor | None):
    return None if t is None else t.data_ptr()


class CppSelectiveScanFn(torch.autograd.Function):
    """``y = (C_t . h_t + D u_t) * silu(z_t)`` on batch-major contiguous CPU tensors.

    u, delta, z: [B, L, D] (delta: final step size); At: [N, D]; Bm, Cm: [B, L, N]; Dv: [D].
    ``Dv`` and ``z`` may be None. Only the inputs are saved; backward recomputes the states.
    """

    @staticmethod
    def forward(ctx, u, delta, At, Bm, Cm, Dv, z):
        lib = _load()
        u, delta, At, Bm, Cm = (t.contiguous() for t in (u, delta, At, Bm, Cm))
        Dv = None if Dv is None else Dv.contiguous()
        z = None if z is None else z.contiguous()
        Bsz, L, Dn = u.shape
        N = At.shape[0]
        y = torch.empty_like(u)
        sfx = "f32" if u.dtype == torch.float32 else "f64"
        if u.numel():
            getattr(lib, f"ss_fwd_{sfx}")(_ptr(u), _ptr(delta), _ptr(At), _ptr(Bm), _ptr(Cm), _ptr(Dv), _ptr(z),
                                          _ptr(y), Bsz, L, Dn, N, TILE[u.dtype], torch.get_num_threads())
        ctx.save_for_backward(u, delta, At, Bm, Cm, Dv, z)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        lib = _load()
        u, delta, At, Bm, Cm, Dv, z = ctx.saved_tensors
        dy = dy.contiguous()
        Bsz, L, Dn = u.shape
        N = At.shape[0]
        du, ddelta = torch.empty_like(u), torch.empty_like(delta)
        dAt, dB, dC = torch.empty_like(At), torch.empty_like(Bm), torch.empty_like(Cm)
        dD = None if Dv is None else torch.empty_like(Dv)
        dz = None if z is None else torch.empty_like(z)
        sfx = "f32" if u.dtype == torch.float32 else "f64"
        if u.numel():
            getattr(lib, f"ss_bwd_{sfx}")(
                _ptr(u), _ptr(delta), _ptr(At), _ptr(Bm), _ptr(Cm), _ptr(Dv), _ptr(z), _ptr(dy),
                _ptr(du), _ptr(ddelta), _ptr(dAt), _ptr(dB), _ptr(dC), _ptr(dD), _ptr(dz),
                Bsz, L, Dn, N, TILE[u.dtype], torch.get_num_threads())
        else:
            for t in (du, ddelta, dAt, dB, dC, dD, dz):
                if t is not None:
                    t.zero_()
        return du, ddelta, dAt, dB, dC, dD, dz


def _row_strided(x: Tensor) -> bool:
    """[B, T, D] with unit channel stride and rows evenly spaced (a channel slice of a wider tensor)."""
    return x.dim() == 3 and x.stride(2) == 1 and x.stride(0) == x.shape[1] * x.stride(1)


class CppCausalConv1dFn(torch.autograd.Function):
    """Depthwise causal conv1d + optional SiLU on batch-major CPU tensors.

    x: [B, T, D] (any row stride, unit channel stride; else copied); weight: [D, K]; bias: [D] or
    None. Returns a contiguous [B, T, D]: ``act(bias + sum_k weight[:, k] * x[t - K + 1 + k])``.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, silu: bool):
        lib = _load()
        if not _row_strided(x):
            x = x.contiguous()
        wt = weight.t().contiguous()  # [K, D]
        bias = None if bias is None else bias.contiguous()
        Bsz, Tn, Dn = x.shape
        out = x.new_empty(Bsz, Tn, Dn)
        sfx = "f32" if x.dtype == torch.float32 else "f64"
        if out.numel():
            getattr(lib, f"conv_fwd_{sfx}")(_ptr(x), x.stride(1), _ptr(wt), _ptr(bias), _ptr(out), Bsz, Tn, Dn,
                                            wt.shape[0], int(silu), torch.get_num_threads())
        ctx.silu = bool(silu)
        ctx.save_for_backward(x, wt, bias)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        lib = _load()
        x, wt, bias = ctx.saved_tensors
        dout = dout.contiguous()
        Bsz, Tn, Dn = x.shape
        dx = x.new_empty(Bsz, Tn, Dn)
        dwt = torch.zeros_like(wt)
        db = None if bias is None else torch.zeros_like(bias)
        sfx = "f32" if x.dtype == torch.float32 else "f64"
        if dx.numel():
            getattr(lib, f"conv_bwd_{sfx}")(_ptr(x), x.stride(1), _ptr(wt), _ptr(bias), _ptr(dout), _ptr(dx),
                                            _ptr(dwt), _ptr(db), Bsz, Tn, Dn, wt.shape[0], int(ctx.silu),
                                            torch.get_num_threads())
        return dx, dwt.t(), db, None
