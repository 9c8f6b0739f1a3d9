"""Selective scans (Mamba v1), in the ``mamba_ssm.ops.selective_scan_interface`` style.

All public functions take the ``mamba_ssm.selective_scan_fn`` layout and semantics: ``u, delta, z:
[B, D, L]``, ``A: [D, N]``, ``B, C: [B, N, L]`` (input-dependent), ``D, delta_bias: [D]``; they return
``y = (C_t . h_t + D u_t) * silu(z_t)`` ``[B, D, L]`` with ``h_t = exp(delta_t A) h_{t-1} + delta_t u_t
B_t``, ``h_{-1} = 0`` and ``delta <- softplus(delta + delta_bias)`` if ``delta_softplus``. Half-precision
inputs are scanned in float32.

* :func:`selective_scan_fn` -- the fast scan: the fused C++ CPU kernel (:mod:`._cpu_kernel`, compiled
  on first use) for CPU tensors, else (GPU tensors, no compiler) the loop scan below.
* :func:`selective_scan_ref` -- the plain sequential reference (plain autograd, state ``[B, D, N]``,
  one timestep at a time). Slow; the tests and the benchmark compare everything against it.
* :func:`selective_scan_loop` -- pure PyTorch: per-timestep recurrence with a hand-written backward
  (custom ``autograd.Function``). The state is kept as ``[B, N, D]`` and updated in place; the
  non-recurrent work (``exp(delta A)``, ``delta u B``, ``C . h`` and all gradient contractions)
  is batched over cache-sized tiles of ``batch_block`` sequences x ``chunk_size`` timesteps.
  Only the state at chunk boundaries is saved for backward (the tile's states are recomputed).
* :func:`selective_scan_chunked` -- pure PyTorch: sequential across chunks, parallel within a chunk
  via the log-space cumulative sum ``S_t = sum_{s<=t} delta_s A``: ``h_t = e^{S_t} (h_0 + sum_{s<=t}
  e^{-S_s} delta_s u_s B_s)``; a chunk whose ``max(-S)`` exceeds ``_logspace_threshold(dtype)`` is
  split in halves recursively (down to single steps). Plain autograd.

:func:`scan_blc` is the same on batch-major ``[B, L, D]`` / ``[B, L, N]`` tensors (what the mixer
holds), with ``method`` one of :data:`SCAN_IMPLS`. ``"cpp"`` (the default, :data:`AUTO_SCAN`) uses the
C++ kernel where it applies (CPU, float32/float64 compute) and the ``"loop"`` scan elsewhere.
"""

from __future__ import annotations

import math
from functools import reduce

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import _cpu_kernel

__all__ = [
    "selective_scan_fn",
    "selective_scan_ref",
    "selective_scan_loop",
    "selective_scan_chunked",
    "scan_blc",
    "cpu_kernel_available",
    "SCAN_IMPLS",
    "AUTO_SCAN",
]

SCAN_IMPLS = ("cpp", "loop", "chunked")
# "cpp": the fused C++ kernel on CPU (falls back to "loop" on GPU or without a compiler); measured
# 5-8x faster than "loop" fwd+bwd on CPU (docs/mamba.md).
AUTO_SCAN = "cpp"


def cpu_kernel_available() -> bool:
    """True iff the C++ CPU scan compiles/loads here (see :mod:`icl_hybrids.ops._cpu_kernel`)."""
    return _cpu_kernel.available()


# --------------------------------------------------------------------------------------
# Pure-PyTorch scans. Internally time-major: [L, B, D] / [L, B, N].
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


def _cpp_scan_blc(u, delta, A, Bm, Cm, D, z, delta_bias, delta_softplus, ct):
    d = delta.to(ct)
    if delta_bias is not None:
        d = d + delta_bias.to(ct)
    if delta_softplus:
        d = F.softplus(d)
    return _cpu_kernel.CppSelectiveScanFn.apply(
        u.to(ct), d, A.to(ct).t(), Bm.to(ct), Cm.to(ct), None if D is None else D.to(ct),
        None if z is None else z.to(ct))


def scan_blc(u, delta, A, Bm, Cm, D=None, z=None, delta_bias=None, delta_softplus=False,
             method: str = AUTO_SCAN, chunk_size: int = 16, batch_block: int | None = None) -> Tensor:
    """Scan on batch-major ``[B, L, D]`` / ``[B, L, N]`` tensors (what the mixer has). -> [B, L, D].

    ``chunk_size`` / ``batch_block`` only tune the pure-PyTorch scans (granularity of batching and
    of backward recomputation); results do not depend on them.
    """
    if method not in SCAN_IMPLS:
        raise ValueError(f"unknown scan method {method!r}; expected one of {SCAN_IMPLS}")
    ct = _compute_dtype(u, delta, A, Bm, Cm)
    out_dtype = u.dtype
    if method == "cpp":
        devs = {t.device.type for t in (u, delta, A, Bm, Cm, D, z, delta_bias) if t is not None}
        if devs == {"cpu"} and ct in _cpu_kernel.TILE and _cpu_kernel.available():
            y = _cpp_scan_blc(u, delta, A, Bm, Cm, D, z, delta_bias, delta_softplus, ct)
            return y.to(out_dtype)
        method = "loop"
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
    else:
        y = _scan_core_chunked(d_t, At, x_t, B_t, C_t, int(chunk_size))
    if D is not None:
        y = y + u_t * D.to(ct)
    if z is not None:
        y = y * F.silu(z.transpose(0, 1).to(ct))
    return y.transpose(0, 1).to(out_dtype)


def _scan_bdl(u, delta, A, B, C, D, z, delta_bias, delta_softplus, method, chunk_size):
    y = scan_blc(u.transpose(1, 2), delta.transpose(1, 2), A, B.transpose(1, 2),
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


def selective_scan_fn(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                      D: Tensor | None = None, z: Tensor | None = None,
                      delta_bias: Tensor | None = None, delta_softplus: bool = False) -> Tensor:
    """The fast selective scan (``mamba_ssm.selective_scan_fn`` semantics and layout, no
    ``return_last_state``): the fused C++ kernel on CPU, the loop scan elsewhere."""
    return _scan_bdl(u, delta, A, B, C, D, z, delta_bias, delta_softplus, "cpp", 16)


def selective_scan_ref(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                       D: Tensor | None = None, z: Tensor | None = None,
                       delta_bias: Tensor | None = None, delta_softplus: bool = False) -> Tensor:
    """Plain sequential reference: one timestep at a time, state [B, D, N], plain autograd.

    Deliberately simple and independent of the other scans (no tiling, no custom backward); the
    tests and the benchmark check every fast path against it.
    """
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, length = u.shape
    h = torch.zeros(batch, dim, A.shape[1], dtype=u.dtype, device=u.device)
    ys = []
    for t in range(length):
        decay = torch.exp(torch.einsum("bd,dn->bdn", delta[:, :, t], A))
        inp = torch.einsum("bd,bd,bn->bdn", delta[:, :, t], u[:, :, t], B[:, :, t])
        h = decay * h + inp
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, t]))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D[:, None] * u
    if z is not None:
        y = y * F.silu(z)
    return y
