"""Pure-PyTorch Mamba (v1) mixer (CPU and numerical reference) with an optional CUDA fast path.

Parameter names, shapes and initialisation follow ``mamba_ssm.modules.mamba_simple.Mamba``
(``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``, ``D``, ``out_proj``), so a
``state_dict`` can be copied to/from ``mamba_ssm``, ``transformers``' ``MambaMixer`` and
``mambapy``'s ``MambaBlock`` (the tests check this numerically).

The selective scans live in :mod:`icl_hybrids.ops` (``selective_scan_fn`` -- a fused C++ kernel on
CPU --, ``selective_scan_ref``, and the pure-PyTorch ``loop`` / ``chunked`` scans); the mixer's
``scan`` argument picks one of :data:`SCAN_IMPLS`. Benchmarks: ``python -m icl_hybrids.bench``
(``mamba_scan`` and ``train_step.mamba`` entries); see ``docs/mamba.md``.
"""

from __future__ import annotations

import math
from functools import reduce

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..ops import _cpu_kernel
from ..ops.causal_conv1d import causal_conv1d_fn, causal_conv1d_ref
from ..ops.selective_scan import (  # noqa: F401  (re-exported for existing imports)
    AUTO_SCAN,
    SCAN_IMPLS,
    scan_blc,
    selective_scan_chunked,
    selective_scan_fn,
    selective_scan_loop,
    selective_scan_ref,
)

__all__ = [
    "MambaMixer",
    "cuda_kernels_available",
    "selective_scan_fn",
    "selective_scan_ref",
    "selective_scan_loop",
    "selective_scan_chunked",
    "SCAN_IMPLS",
    "AUTO_SCAN",
]

# --------------------------------------------------------------------------------------
# Optional CUDA kernels (mamba_ssm / causal_conv1d); imported lazily, result cached.
# --------------------------------------------------------------------------------------
_CUDA_KERNELS: tuple | bool | None = None  # None: not tried yet; False: unavailable


def _load_cuda_kernels():
    """Return ``(selective_scan_fn, causal_conv1d_fn)`` or ``None`` if they do not import."""
    global _CUDA_KERNELS
    if _CUDA_KERNELS is None:
        try:
            from causal_conv1d import causal_conv1d_fn
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

            _CUDA_KERNELS = (selective_scan_fn, causal_conv1d_fn)
        except Exception:  # ImportError, missing .so, CUDA/ABI mismatch, ...
            _CUDA_KERNELS = False
    return _CUDA_KERNELS or None


def cuda_kernels_available() -> bool:
    """True iff CUDA is available and both ``mamba_ssm`` and ``causal_conv1d`` kernels import."""
    return torch.cuda.is_available() and _load_cuda_kernels() is not None


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """At least float32 (bf16/fp16 inputs are scanned in fp32, like mamba_ssm)."""
    return reduce(torch.promote_types, (t.dtype for t in tensors), torch.float32)


# --------------------------------------------------------------------------------------
# Mixer
# --------------------------------------------------------------------------------------
class MambaMixer(nn.Module):
    """Mamba (v1) mixer ``[B, T, d_model] -> [B, T, d_model]``; drop-in for mamba_ssm's ``Mamba``.

    Torch path runs anywhere (CPU reference). With ``use_cuda_kernels`` and a CUDA input in
    fp32/fp16/bf16, ``causal_conv1d_fn`` + ``selective_scan_fn`` are used when they import.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 4,
                 dt_rank: int | str = "auto", dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init: str = "random", dt_scale: float = 1.0, dt_init_floor: float = 1e-4,
                 conv_bias: bool = True, bias: bool = False, scan: str = "auto",
                 chunk_size: int = 16, use_cuda_kernels: bool = True, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        if scan not in ("auto",) + SCAN_IMPLS:
            raise ValueError(f"scan must be 'auto', 'loop' or 'chunked', got {scan!r}")
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.scan = AUTO_SCAN if scan == "auto" else scan
        self.chunk_size = int(chunk_size)
        self.use_cuda_kernels = use_cuda_kernels
        self.activation = "silu"
        self.last_path: str | None = None  # "cuda" | "cpp" | "torch": the scan the last forward used

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias, **factory)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, kernel_size=d_conv,
                                groups=self.d_inner, padding=d_conv - 1, bias=conv_bias, **factory)
        self.act = nn.SiLU()
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory)

        # dt_proj init as mamba_ssm: weight U(-std, std) (or constant), bias = softplus^{-1}(dt)
        dt_init_std = self.dt_rank ** -0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, dt_init_std)
        elif dt_init == "random":
            nn.init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
        else:
            raise NotImplementedError(dt_init)
        dt = torch.exp(
            torch.rand(self.d_inner, device=device) * (math.log(dt_max) - math.log(dt_min))
            + math.log(dt_min)
        ).clamp(min=dt_init_floor)
        inv_dt = dt + torch.log(-torch.expm1(-dt))  # inverse softplus
        with torch.no_grad():
            self.dt_proj.bias.copy_(inv_dt)
        self.dt_proj.bias._no_reinit = True
        self.dt_proj._keep_init = True  # the model's global N(0, 0.02) Linear init skips it

        # S4D-real init; kept in fp32 like mamba_ssm (even when dtype is half precision)
        A = torch.arange(1, d_state + 1, dtype=torch.float32, device=device)
        A = A.repeat(self.d_inner, 1).contiguous()
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner, device=device))
        self.D._no_weight_decay = True

        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_inner={self.d_inner}, d_state={self.d_state}, "
                f"d_conv={self.d_conv}, dt_rank={self.dt_rank}, scan={self.scan}, "
                f"chunk_size={self.chunk_size}")

    def forward(self, x: Tensor) -> Tensor:
        if (self.use_cuda_kernels and x.is_cuda
                and x.dtype in (torch.float32, torch.float16, torch.bfloat16)):
            kernels = _load_cuda_kernels()
            if kernels is not None:
                self._record("cuda")
                return self._forward_cuda(x, *kernels)
        return self._forward_torch(x)

    def _record(self, path: str) -> None:
        if self.last_path != path:  # recorded for results.json fast_paths
            self.last_path = path

    def _ssm_params(self, ref: Tensor):
        ct = _compute_dtype(ref, self.A_log)
        A = -torch.exp(self.A_log.to(ct))
        return A, self.D.to(ct), self.dt_proj.bias.to(ct)

    def _forward_torch(self, x: Tensor) -> Tensor:
        xi, z = self.in_proj(x).chunk(2, dim=-1)  # [B, T, Di] each
        # act(conv1d(xi)), left padding d_conv-1, truncated to T. scan="cpp": C++ CPU kernels for
        # conv and scan; "loop"/"chunked": pure PyTorch throughout
        conv = causal_conv1d_fn if self.scan == "cpp" else causal_conv1d_ref
        xi = conv(xi, self.conv1d.weight.squeeze(1), self.conv1d.bias,
                  activation=self.activation)  # [B, T, Di]
        dt, Bm, Cm = torch.split(self.x_proj(xi), [self.dt_rank, self.d_state, self.d_state], -1)
        dt = F.linear(dt, self.dt_proj.weight)  # bias added inside the scan (before softplus)
        A, D, dt_bias = self._ssm_params(x)
        # the same rule as scan_blc's: the C++ kernel for CPU float32/float64 compute, else a PyTorch scan
        cpp = (self.scan == "cpp" and x.device.type == "cpu" and A.dtype in _cpu_kernel.TILE
               and _cpu_kernel.available())
        self._record("cpp" if cpp else "torch")
        y = scan_blc(xi, dt, A, Bm, Cm, D, z, delta_bias=dt_bias, delta_softplus=True,
                     method=self.scan, chunk_size=self.chunk_size)
        return self.out_proj(y.to(x.dtype))

    def _forward_cuda(self, x: Tensor, selective_scan_fn, causal_conv1d_fn) -> Tensor:
        xz = self.in_proj(x).transpose(1, 2)  # [B, 2Di, T]
        xi, z = xz.chunk(2, dim=1)
        xi = causal_conv1d_fn(x=xi.contiguous(), weight=self.conv1d.weight.squeeze(1),
                              bias=self.conv1d.bias, activation=self.activation)  # [B, Di, T]
        x_dbl = self.x_proj(xi.transpose(1, 2))  # [B, T, r + 2N]
        dt, Bm, Cm = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], -1)
        dt = F.linear(dt, self.dt_proj.weight).transpose(1, 2).contiguous()  # [B, Di, T]
        Bm = Bm.transpose(1, 2).contiguous()
        Cm = Cm.transpose(1, 2).contiguous()
        A = -torch.exp(self.A_log.float())
        y = selective_scan_fn(xi, dt, A, Bm, Cm, self.D.float(), z=z.contiguous(),
                              delta_bias=self.dt_proj.bias.float(), delta_softplus=True)
        return self.out_proj(y.transpose(1, 2).to(x.dtype))
