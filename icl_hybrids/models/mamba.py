"""Pure-PyTorch Mamba (v1) mixer, the CPU/numerical reference, with an optional CUDA fast path.

Parameter names, shapes and initialisation follow ``mamba_ssm.modules.mamba_simple.Mamba``
(``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``, ``D``, ``out_proj``), so a
``state_dict`` can be copied to/from ``mamba_ssm``, ``transformers``' ``MambaMixer`` and
``mambapy``'s ``MambaBlock`` (the tests check this numerically).

Selective scans (all in the ``mamba_ssm.selective_scan_fn`` layout: ``u, delta, z: [B, D, L]``,
``A: [D, N]``, ``B, C: [B, N, L]`` (input-dependent), ``D: [D]``; returns ``[B, D, L]``):

* :func:`selective_scan_loop` -- per-timestep recurrence ``h_t = exp(delta_t A) h_{t-1} +
  delta_t u_t B_t``, ``y_t = C_t . h_t`` with a hand-written backward (custom
  ``autograd.Function``).  The state is kept as ``[B, N, D]`` and updated in place; the
  non-recurrent work (``exp(delta A)``, ``delta u B``, ``C . h`` and all gradient contractions)
  is batched over cache-sized tiles of ``batch_block`` sequences x ``chunk_size`` timesteps.
  Only the state at chunk boundaries is saved for backward (the tile's states are recomputed),
  so memory is ``O(B D N L / chunk)`` instead of the ``O(B L D N)`` that autograd through a
  python loop (or ``mambapy``'s ``pscan``) keeps.
* :func:`selective_scan_chunked` -- sequential across chunks, parallel within a chunk via the
  log-space cumulative sum ``S_t = sum_{s<=t} delta_s A``: ``h_t = e^{S_t} (h_0 + sum_{s<=t}
  e^{-S_s} delta_s u_s B_s)``.  ``e^{-S}`` overflows when the decay accumulated inside a chunk is
  large, so a chunk whose ``max(-S)`` exceeds ``_logspace_threshold(dtype)`` is split in halves
  recursively (down to single steps).  Plain autograd.

``scan="auto"`` uses the loop scan, measured faster on CPU at both sizes of interest (see
``docs/mamba.md``; reproduce with ``python -m icl_hybrids.models.mamba``).
"""

from __future__ import annotations

import math
from functools import reduce

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = [
    "MambaMixer",
    "cuda_kernels_available",
    "selective_scan_loop",
    "selective_scan_chunked",
    "SCAN_IMPLS",
    "AUTO_SCAN",
]

SCAN_IMPLS = ("loop", "chunked")
# Measured fastest on CPU (fwd+bwd, 1 thread) at (B=64, T=82, D=1024, N=16) and
# (B=64, T=22, D=256, N=16); see docs/mamba.md.
AUTO_SCAN = "loop"

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


# --------------------------------------------------------------------------------------
# Selective scans. Internally everything is time-major: [L, B, D] / [L, B, N].
# --------------------------------------------------------------------------------------
def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """At least float32 (bf16/fp16 inputs are scanned in fp32, like mamba_ssm)."""
    return reduce(torch.promote_types, (t.dtype for t in tensors), torch.float32)


def _chunk_states(h0: Tensor, delta: Tensor, At: Tensor, x: Tensor, Bm: Tensor, H: Tensor, dA: Tensor):
    """States of one block, written into the buffers ``H`` and ``dA`` ([K, B, N, D]).

    delta, x: [K, B, D]; At: [N, D]; Bm: [K, B, N]; h0: [B, N, D].
    ``dA[k] = exp(delta_k A)`` and ``H[k] = h_{s+k} = dA[k] * h_{s+k-1} + x_k B_k``.
    """
    torch.mul(delta.unsqueeze(-2), At, out=dA)
    dA.exp_()
    torch.mul(x.unsqueeze(-2), Bm.unsqueeze(-1), out=H)  # x B, then updated in place
    H[0].addcmul_(dA[0], h0)
    for k in range(1, H.shape[0]):
        H[k].addcmul_(dA[k], H[k - 1])


class _SelectiveScanLoopFn(torch.autograd.Function):
    """y_t = C_t . h_t,  h_t = exp(delta_t A) * h_{t-1} + x_t B_t  (x = delta * u), h_{-1} = 0.

    Time-major inputs: delta, x: [L, B, D]; At = A^T: [N, D]; Bm, Cm: [L, B, N]. Returns
    [L, B, D]. The state is stored as [B, N, D] (D innermost): every contraction is then a
    BLAS-friendly (vector x long-row matrix) product and broadcasts run over the long D axis.
    Work is tiled into blocks of ``batch_block`` sequences x ``chunk_size`` timesteps whose
    buffers are allocated once per call and reused (cache locality; fresh large allocations
    cost page faults as expensive as the arithmetic on CPU). The state at the start of every
    time chunk is saved; backward recomputes the states of a block from it.
    """

    @staticmethod
    def forward(ctx, delta, At, x, Bm, Cm, chunk_size: int, batch_block: int):
        L, Bsz, Dn = delta.shape
        N = At.shape[0]
        cs, bb = min(chunk_size, L), min(batch_block, Bsz)
        n_chunks = -(-L // cs)
        H = delta.new_empty(cs, bb, N, Dn)
        dA = torch.empty_like(H)
        Y = delta.new_empty(cs, bb, 1, Dn)
        ck = delta.new_empty(n_chunks, Bsz, N, Dn)  # state before each chunk
        y = delta.new_empty(L, Bsz, Dn)
        for b0 in range(0, Bsz, bb):
            b1 = min(b0 + bb, Bsz)
            nb = b1 - b0
            ck[0, b0:b1].zero_()
            for ci in range(n_chunks):
                s, e = ci * cs, min(ci * cs + cs, L)
                K = e - s
                Hk = H[:K, :nb]
                _chunk_states(ck[ci, b0:b1], delta[s:e, b0:b1], At, x[s:e, b0:b1],
                              Bm[s:e, b0:b1], Hk, dA[:K, :nb])
                torch.matmul(Cm[s:e, b0:b1].unsqueeze(-2), Hk, out=Y[:K, :nb])
                y[s:e, b0:b1] = Y[:K, :nb, 0]
                if ci + 1 < n_chunks:
                    ck[ci + 1, b0:b1] = Hk[K - 1]
        ctx.cs, ctx.bb = cs, bb
        ctx.save_for_backward(delta, At, x, Bm, Cm, ck)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        delta, At, x, Bm, Cm, ck = ctx.saved_tensors
        cs, bb = ctx.cs, ctx.bb
        L, Bsz, Dn = delta.shape
        N = At.shape[0]
        n_chunks = ck.shape[0]
        dy = dy.contiguous()
        d_delta = torch.empty_like(delta)
        d_x = torch.empty_like(x)
        d_B = torch.empty_like(Bm)
        d_C = torch.empty_like(Cm)
        d_At = torch.zeros_like(At)
        H = delta.new_empty(cs, bb, N, Dn)
        dA = torch.empty_like(H)
        G = torch.empty_like(H)
        T = torch.empty_like(H)
        Vd = delta.new_empty(cs, bb, 1, Dn)
        Vn = delta.new_empty(cs, bb, N, 1)
        g = delta.new_empty(bb, N, Dn)  # dL/dh_{e-1} from later chunks via the recurrence
        for b0 in range(0, Bsz, bb):
            b1 = min(b0 + bb, Bsz)
            nb = b1 - b0
            gb = g[:nb]
            for ci in reversed(range(n_chunks)):
                s, e = ci * cs, min(ci * cs + cs, L)
                K = e - s
                h0 = ck[ci, b0:b1]
                Hk, dAk, Gk, Tk = H[:K, :nb], dA[:K, :nb], G[:K, :nb], T[:K, :nb]
                dl, xx, BB, CC, dyy = (t[s:e, b0:b1] for t in (delta, x, Bm, Cm, dy))
                _chunk_states(h0, dl, At, xx, BB, Hk, dAk)
                # Gk[k] = dL/dh_{s+k} = dy_t C_t + exp(delta_{t+1} A) * Gk[k+1]
                torch.mul(dyy.unsqueeze(-2), CC.unsqueeze(-1), out=Gk)
                if ci + 1 < n_chunks:
                    Gk[K - 1].add_(gb)
                for k in range(K - 2, -1, -1):
                    Gk[k].addcmul_(dAk[k + 1], Gk[k + 1])
                if ci > 0:
                    torch.mul(dAk[0], Gk[0], out=gb)
                torch.matmul(Hk, dyy.unsqueeze(-1), out=Vn[:K, :nb])
                d_C[s:e, b0:b1] = Vn[:K, :nb, :, 0]
                torch.matmul(Gk, xx.unsqueeze(-1), out=Vn[:K, :nb])
                d_B[s:e, b0:b1] = Vn[:K, :nb, :, 0]
                torch.matmul(BB.unsqueeze(-2), Gk, out=Vd[:K, :nb])
                d_x[s:e, b0:b1] = Vd[:K, :nb, 0]
                # M = dL/d(delta A) = G * dA * h_{t-1}   (in place in Gk)
                Gk.mul_(dAk)
                if K > 1:
                    Gk[1:].mul_(Hk[:-1])
                Gk[0].mul_(h0)
                torch.mul(Gk, At, out=Tk)
                d_delta[s:e, b0:b1] = Tk.sum(-2)
                torch.mul(Gk, dl.unsqueeze(-2), out=Tk)
                d_At += Tk.sum((0, 1))
        return d_delta, d_At, d_x, d_B, d_C, None, None


def _default_batch_block(chunk_size: int, n_state: int, d_inner: int) -> int:
    # ~2^20 elements (4 MiB in fp32) per [chunk, batch_block, N, D] buffer: measured flat
    # optimum on CPU (see docs/mamba.md); too small -> python overhead, too big -> cache misses.
    return max(1, (1 << 20) // (chunk_size * n_state * d_inner))


def _logspace_threshold(dtype: torch.dtype) -> float:
    # exp(-S) with -S <= thr stays far from overflow (f32: ~22, f64: ~177), and so does its
    # square in the backward of the reciprocal.
    return 0.25 * math.log(torch.finfo(dtype).max)


def _chunk_logspace(h0, delta, At, x, Bm, Cm, thr):
    """One chunk of the log-space scan (recursively halved if e^{-S} could overflow).

    delta, x: [K, B, D]; At: [N, D]; Bm, Cm: [K, B, N]; h0: [B, N, D]. Returns y [K, B, D], h.
    """
    K = delta.shape[0]
    dlA = delta.unsqueeze(-2) * At  # [K, B, N, D], <= 0
    xB = x.unsqueeze(-2) * Bm.unsqueeze(-1)
    if K == 1:
        h = torch.exp(dlA[0]) * h0 + xB[0]
        return torch.matmul(Cm[0].unsqueeze(-2), h).squeeze(-2).unsqueeze(0), h
    S = torch.cumsum(dlA, dim=0)
    if float(S[-1].detach().min()) < -thr:
        m = K // 2
        y1, h = _chunk_logspace(h0, delta[:m], At, x[:m], Bm[:m], Cm[:m], thr)
        y2, h = _chunk_logspace(h, delta[m:], At, x[m:], Bm[m:], Cm[m:], thr)
        return torch.cat([y1, y2], 0), h
    P = torch.exp(S)  # prod_{s<=t} exp(delta_s A), in (e^-thr, 1]
    H = P * (h0.unsqueeze(0) + torch.cumsum(xB * torch.reciprocal(P), dim=0))
    y = torch.matmul(Cm.unsqueeze(-2), H).squeeze(-2)
    return y, H[-1]


def _scan_core_chunked(delta, At, x, Bm, Cm, chunk_size: int):
    L, Bsz, Dn = delta.shape
    thr = _logspace_threshold(delta.dtype)
    h = delta.new_zeros(Bsz, At.shape[0], Dn)
    ys = []
    for s in range(0, L, chunk_size):
        e = min(s + chunk_size, L)
        y, h = _chunk_logspace(h, delta[s:e], At, x[s:e], Bm[s:e], Cm[s:e], thr)
        ys.append(y)
    return torch.cat(ys, 0)


def _scan_blc(u, delta, A, Bm, Cm, D=None, z=None, delta_bias=None, delta_softplus=False,
              method: str = "loop", chunk_size: int = 16, batch_block: int | None = None) -> Tensor:
    """Scan on batch-major ``[B, L, D]`` / ``[B, L, N]`` tensors (what the mixer has). -> [B, L, D]."""
    ct = _compute_dtype(u, delta, A, Bm, Cm)
    out_dtype = u.dtype
    # time-major copies: per-timestep slices are then contiguous
    u_t = u.transpose(0, 1).to(ct).contiguous()
    d_t = delta.transpose(0, 1).to(ct)
    if delta_bias is not None:
        d_t = d_t + delta_bias.to(ct)
    if delta_softplus:
        d_t = F.softplus(d_t)
    d_t = d_t.contiguous()
    B_t = Bm.transpose(0, 1).to(ct).contiguous()
    C_t = Cm.transpose(0, 1).to(ct).contiguous()
    At = A.to(ct).t().contiguous()  # [N, D]
    x_t = d_t * u_t
    if method == "loop":
        if batch_block is None:  # CPU: cache-sized tiles; GPU: one tile over the whole batch
            batch_block = u.shape[0] if u.is_cuda else _default_batch_block(chunk_size, *At.shape)
        y = _SelectiveScanLoopFn.apply(d_t, At, x_t, B_t, C_t, int(chunk_size),
                                       int(batch_block))
    elif method == "chunked":
        y = _scan_core_chunked(d_t, At, x_t, B_t, C_t, int(chunk_size))
    else:
        raise ValueError(f"unknown scan method {method!r}; expected one of {SCAN_IMPLS}")
    if D is not None:
        y = y + u_t * D.to(ct)
    if z is not None:
        y = y * F.silu(z.transpose(0, 1).to(ct))
    return y.transpose(0, 1).to(out_dtype)


def _scan_bdl(u, delta, A, B, C, D, z, delta_bias, delta_softplus, method, chunk_size):
    y = _scan_blc(u.transpose(1, 2), delta.transpose(1, 2), A, B.transpose(1, 2),
                  C.transpose(1, 2), D, None if z is None else z.transpose(1, 2),
                  delta_bias, delta_softplus, method, chunk_size)
    return y.transpose(1, 2)


def selective_scan_loop(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                        D: Tensor | None = None, z: Tensor | None = None,
                        delta_bias: Tensor | None = None, delta_softplus: bool = False,
                        chunk_size: int = 16) -> Tensor:
    """Sequential selective scan (``mamba_ssm.selective_scan_fn`` semantics and layout).

    u, delta, z: [B, D, L]; A: [D, N]; B, C: [B, N, L]; D, delta_bias: [D]. Returns [B, D, L]
    ``y = (C . h + D u) * silu(z)`` with ``delta <- softplus(delta + delta_bias)`` if requested.
    ``chunk_size`` only sets the granularity of batching / backward recomputation.
    """
    return _scan_bdl(u, delta, A, B, C, D, z, delta_bias, delta_softplus, "loop", chunk_size)


def selective_scan_chunked(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                           D: Tensor | None = None, z: Tensor | None = None,
                           delta_bias: Tensor | None = None, delta_softplus: bool = False,
                           chunk_size: int = 16) -> Tensor:
    """Chunked log-space selective scan; same semantics/layout as :func:`selective_scan_loop`."""
    return _scan_bdl(u, delta, A, B, C, D, z, delta_bias, delta_softplus, "chunked", chunk_size)


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
                return self._forward_cuda(x, *kernels)
        return self._forward_torch(x)

    def _ssm_params(self, ref: Tensor):
        ct = _compute_dtype(ref, self.A_log)
        A = -torch.exp(self.A_log.to(ct))
        return A, self.D.to(ct), self.dt_proj.bias.to(ct)

    def _forward_torch(self, x: Tensor) -> Tensor:
        T = x.shape[1]
        xi, z = self.in_proj(x).chunk(2, dim=-1)  # [B, T, Di] each
        xi = self.conv1d(xi.transpose(1, 2))[..., :T]  # causal: left padding d_conv-1, truncate
        xi = self.act(xi).transpose(1, 2)  # [B, T, Di]
        dt, Bm, Cm = torch.split(self.x_proj(xi), [self.dt_rank, self.d_state, self.d_state], -1)
        dt = F.linear(dt, self.dt_proj.weight)  # bias added inside the scan (before softplus)
        A, D, dt_bias = self._ssm_params(x)
        y = _scan_blc(xi, dt, A, Bm, Cm, D, z, delta_bias=dt_bias, delta_softplus=True,
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


# --------------------------------------------------------------------------------------
# Benchmark: python -m icl_hybrids.models.mamba
# --------------------------------------------------------------------------------------
def _bench(Bsz=64, T=82, Dn=1024, N=16, reps=3, chunk_sizes=(16,), pscan=True):  # pragma: no cover
    import time

    torch.manual_seed(0)
    u = torch.randn(Bsz, T, Dn)
    delta = F.softplus(torch.randn(Bsz, T, Dn) - 2.0)
    A = -torch.exp(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(Dn, 1))
    Bm, Cm = torch.randn(Bsz, T, N), torch.randn(Bsz, T, N)
    Dv, z = torch.ones(Dn), torch.randn(Bsz, T, Dn)

    def timeit(fn):
        best = float("inf")
        for _ in range(reps):
            args = [t.clone().requires_grad_() for t in (u, delta, A, Bm, Cm)]
            t0 = time.perf_counter()
            fn(*args).sum().backward()
            best = min(best, time.perf_counter() - t0)
        return best

    res = {}
    for method in SCAN_IMPLS:
        for cs in chunk_sizes:
            res[f"{method}(chunk={cs})"] = timeit(
                lambda u_, d_, A_, B_, C_, m=method, c=cs: _scan_blc(u_, d_, A_, B_, C_, Dv, z, method=m, chunk_size=c))
    if pscan:
        try:
            from mambapy.pscan import pscan as _pscan

            def mambapy_scan(u_, d_, A_, B_, C_):
                dA = torch.exp(d_.unsqueeze(-1) * A_)
                BX = (d_ * u_).unsqueeze(-1) * B_.unsqueeze(2)
                hs = _pscan(dA, BX)
                y = (hs @ C_.unsqueeze(-1)).squeeze(3)
                return (y + Dv * u_) * F.silu(z)

            res["mambapy.pscan"] = timeit(mambapy_scan)
        except ImportError:
            pass
    return res


if __name__ == "__main__":  # pragma: no cover
    torch.set_num_threads(1)
    for shape in [(64, 82, 1024, 16), (64, 22, 256, 16)]:
        r = _bench(*shape, chunk_sizes=(4, 8, 16))
        print(shape, {k: f"{v * 1e3:.0f} ms" for k, v in r.items()})
