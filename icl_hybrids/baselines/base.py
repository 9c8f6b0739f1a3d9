"""Common interface and helpers for the batched in-context baseline estimators.

Conventions shared by every estimator (see ``docs/baselines.md``):

* ``xs``: float tensor ``[B, N, d]``, ``ys``: float tensor ``[B, N]`` (some estimators
  also accept vector targets ``[B, N, dy]``).
* ``preds = est(xs, ys)`` has the shape of ``ys``; ``preds[:, i]`` is computed only from
  the context points ``0..i-1`` of the same prompt and the query ``xs[:, i]``.
* Position 0 has no context: every estimator predicts 0 there.
* Computations are batched over prompts and over all prefix lengths on ``xs.device``,
  in float64 where that matters for accuracy; the result is cast back to ``ys.dtype``.
"""

from __future__ import annotations

import torch

__all__ = ["Baseline", "check_inputs", "strict_lower_mask", "prompt_chunks"]


class Baseline:
    """Base class: a callable ``(xs, ys) -> preds`` with a ``name``.

    ``n_dims`` is accepted (and ignored) by every estimator so that configuration code
    can pass it uniformly; the dimension is always inferred from ``xs``.
    """

    name: str = "baseline"
    vector_targets: bool = False  # whether ys of shape [B, N, dy] is supported

    def __call__(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def check_inputs(xs: torch.Tensor, ys: torch.Tensor, vector_targets: bool = False) -> None:
    if xs.dim() != 3:
        raise ValueError(f"xs must be [B, N, d], got shape {tuple(xs.shape)}")
    allowed = (2, 3) if vector_targets else (2,)
    if ys.dim() not in allowed or ys.shape[:2] != xs.shape[:2]:
        want = "[B, N] or [B, N, dy]" if vector_targets else "[B, N]"
        raise ValueError(f"ys must be {want} matching xs {tuple(xs.shape)}, got {tuple(ys.shape)}")


def strict_lower_mask(n: int, device=None, dtype=torch.bool) -> torch.Tensor:
    """``M[i, j] = 1`` iff ``j < i`` (point j is in the context of query i)."""
    return torch.ones(n, n, device=device, dtype=torch.bool).tril(-1).to(dtype)


def prompt_chunks(batch: int, per_prompt_elems: int, max_elems: int = 1 << 24):
    """Yield slices over the prompt dimension so that a chunk holds <= max_elems elements."""
    step = max(1, max_elems // max(1, per_prompt_elems))
    for start in range(0, batch, step):
        yield slice(start, min(batch, start + step))
