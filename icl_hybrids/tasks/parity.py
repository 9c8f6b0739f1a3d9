"""Sparse parity (Park et al. 2024): x ~ Unif{-1, 1}^d, y = prod_{j in S} x_j with |S| = k."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Task


class SparseParity(Task):
    """The subset S is drawn uniformly per prompt (Park et al.'s convention; docs/conventions.md)."""

    name = "sparse_parity"
    label = "Sparse parity"
    x_distribution = "rademacher"
    applicable_baselines = ("zero", "averaging", "knn", "least_squares", "ridge", "lasso", "sparse_parity_bayes")
    supports_curriculum = False

    def __init__(self, n_dims: int, n_points: int, sparsity: int = 2, **kw):
        super().__init__(n_dims, n_points, **kw)
        self.sparsity = int(sparsity)

    def sample_xs(self, b, n, n_active, g, device) -> Tensor:
        bits = torch.randint(0, 2, (b, n, self.n_dims), generator=g, device=device)
        return bits.float() * 2 - 1  # [B, N, d] in {-1, 1}

    def draw_subsets(self, b: int, g: torch.Generator, device) -> Tensor:
        keys = torch.rand(b, self.n_dims, generator=g, device=device)
        return keys.argsort(dim=1)[:, : self.sparsity]  # [B, k] distinct coordinates

    def evaluate(self, xs: Tensor, n_active: int, g: torch.Generator) -> Tensor:
        subset = self.draw_subsets(xs.shape[0], g, xs.device)  # [B, k]
        idx = subset.unsqueeze(1).expand(-1, xs.shape[1], -1)  # [B, N, k]
        return torch.gather(xs, 2, idx).prod(dim=-1)  # [B, N] in {-1, 1}
