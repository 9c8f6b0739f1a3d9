"""Exact Bayes / lookup estimators for the discrete tasks (sparse parity, MQAR)."""

from __future__ import annotations

import itertools

import torch

from .base import Baseline, check_inputs, prompt_chunks, strict_lower_mask

__all__ = ["SparseParityBayesBaseline", "MQARLookupBaseline", "parity_subsets"]


def parity_subsets(d: int, k: int, device=None) -> torch.Tensor:
    """All ``C(d, k)`` subsets of ``range(d)`` as a ``[S, k]`` long tensor (lexicographic)."""
    combos = list(itertools.combinations(range(d), k))
    return torch.tensor(combos, dtype=torch.long, device=device).reshape(len(combos), k)


class SparseParityBayesBaseline(Baseline):
    """Bayes-optimal predictor for ``y = prod_{j in S} x_j``, ``x in {-1, 1}^d``, ``S`` uniform
    over the ``k``-subsets of ``range(d)`` (noise-free).

    The posterior after ``(x_j, y_j)_{j<i}`` is uniform over the subsets consistent with all of
    them; ``pred_i`` is the posterior mean of ``prod_{j in S} x_i[j]`` (+-1 once the parity
    is determined on ``x_i``, 0 when the consistent subsets split evenly). All ``C(d, k)``
    subsets are enumerated and tested against every prompt and prefix at once.
    Conventions: position 0 predicts 0 (the package-wide convention, although the prior
    mean there need not be 0); if no subset is consistent (noisy labels) it predicts 0.
    A label matches a parity when they have the same sign. ``n_dims`` is unused.
    """

    def __init__(self, k: int = 2, n_dims: int | None = None, max_chunk_elems: int = 1 << 24):
        self.k = int(k)
        self.max_chunk_elems = int(max_chunk_elems)
        self.name = "sparse_parity_bayes"

    def __call__(self, xs, ys):
        check_inputs(xs, ys)
        B, N, d = xs.shape
        subsets = parity_subsets(d, self.k, device=xs.device)  # [S, k]
        S = subsets.shape[0]
        out = torch.zeros(B, N, dtype=torch.float64, device=xs.device)
        for sl in prompt_chunks(B, N * S * max(self.k, 1), self.max_chunk_elems):
            x = torch.sign(xs[sl]).double()
            par = x[:, :, subsets].prod(-1)  # [b, N, S]
            match = (par * ys[sl].double().unsqueeze(-1)) > 0
            cons = torch.cumprod(match.double(), dim=1)
            cons = torch.cat([torch.ones_like(cons[:, :1]), cons[:, :-1]], dim=1)  # before i
            den = cons.sum(-1)
            num = (cons * par).sum(-1)
            out[sl] = torch.where(den > 0, num / den.clamp_min(1.0), torch.zeros_like(num))
        out[:, 0] = 0.0
        return out.to(ys.dtype)


class MQARLookupBaseline(Baseline):
    """Exact associative recall: ``pred_i = y_j`` for the most recent ``j < i`` whose key
    ``x_j`` equals ``x_i`` (elementwise ``|x_i - x_j| <= atol + rtol |x_j|``, like
    ``torch.allclose``), else 0. Accepts ``ys [B, N]`` or ``[B, N, dy]``."""

    vector_targets = True

    def __init__(self, atol: float = 1e-6, rtol: float = 1e-5, n_dims: int | None = None,
                 max_chunk_elems: int = 1 << 24):
        self.atol, self.rtol = float(atol), float(rtol)
        self.max_chunk_elems = int(max_chunk_elems)
        self.name = "mqar_lookup"

    def __call__(self, xs, ys):
        check_inputs(xs, ys, vector_targets=True)
        B, N, d = xs.shape
        vec = ys.dim() == 3
        y = ys if vec else ys.unsqueeze(-1)
        out = torch.zeros_like(y)
        ctx = strict_lower_mask(N, device=xs.device)
        jpos = torch.arange(1, N + 1, device=xs.device)
        step = max(1, self.max_chunk_elems // max(1, B * N * d))
        for i0 in range(0, N, step):
            i1 = min(N, i0 + step)
            q = xs[:, i0:i1].unsqueeze(2)  # [B, I, 1, d]
            k = xs.unsqueeze(1)  # [B, 1, N, d]
            eq = ((q - k).abs() <= self.atol + self.rtol * k.abs()).all(-1)  # [B, I, N]
            eq &= ctx[i0:i1].unsqueeze(0)
            last = (eq.long() * jpos).argmax(-1)  # most recent match (0 if none)
            has = eq.any(-1)
            vals = torch.gather(y, 1, last.unsqueeze(-1).expand(-1, -1, y.shape[-1]))
            out[:, i0:i1] = torch.where(has.unsqueeze(-1), vals, torch.zeros_like(vals))
        return out if vec else out.squeeze(-1)
