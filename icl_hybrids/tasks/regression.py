"""Garg et al. (2022) function classes: linear, sparse linear, 2-layer ReLU MLP, decision tree."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Task


class LinearRegression(Task):
    """y = w^T x, w ~ N(0, I) over the active coordinates."""

    name = "linear"
    label = "Linear"

    def draw_w(self, b: int, n_active: int, g: torch.Generator, device) -> Tensor:
        w = torch.randn(b, self.n_dims, generator=g, device=device)  # [B, d]
        if n_active < self.n_dims:
            w[:, n_active:] = 0
        return w

    def evaluate(self, xs: Tensor, n_active: int, g: torch.Generator) -> Tensor:
        w = self.draw_w(xs.shape[0], n_active, g, xs.device)
        return torch.einsum("bnd,bd->bn", xs, w)  # [B, N]


class SparseLinearRegression(LinearRegression):
    """As linear, with all but ``sparsity`` uniformly chosen (active) coordinates of w zeroed."""

    name = "sparse_linear"
    label = "Sparse linear"

    def __init__(self, n_dims: int, n_points: int, sparsity: int = 3, **kw):
        super().__init__(n_dims, n_points, **kw)
        self.sparsity = int(sparsity)

    def draw_w(self, b: int, n_active: int, g: torch.Generator, device) -> Tensor:
        w = super().draw_w(b, n_active, g, device)
        k = min(self.sparsity, n_active)
        # a uniform k-subset of the active coordinates per prompt: the k smallest of iid uniforms
        keys = torch.rand(b, n_active, generator=g, device=device)
        support = keys.argsort(dim=1)[:, :k]  # [B, k]
        mask = torch.zeros(b, self.n_dims, dtype=torch.bool, device=device)
        mask.scatter_(1, support, True)
        return w * mask


class MLPRegression(Task):
    """y = scale * W2 relu(W1 x), W1 [hidden, d], W2 [hidden], entries N(0, 1).

    ``scale=1.0`` (default) is the paper's code (``mlp.py``: no output scale); ``scale="garg"`` uses
    sqrt(2 / hidden) (Garg et al.'s ``Relu2nnRegression``: targets of the order of the linear task's);
    any other number is used as the factor. See docs/conventions.md.
    """

    name = "mlp"
    label = "2-layer MLP"

    def __init__(self, n_dims: int, n_points: int, hidden: int = 100, scale=1.0, **kw):
        super().__init__(n_dims, n_points, **kw)
        self.hidden = int(hidden)
        self.scale = math.sqrt(2.0 / self.hidden) if scale == "garg" else float(scale)

    def evaluate(self, xs: Tensor, n_active: int, g: torch.Generator) -> Tensor:
        b = xs.shape[0]
        w1 = torch.randn(b, self.n_dims, self.hidden, generator=g, device=xs.device)  # [B, d, H]
        w2 = torch.randn(b, self.hidden, generator=g, device=xs.device)  # [B, H]
        h = torch.relu(xs @ w1)  # [B, N, H] (inactive coords of xs are 0, so they never contribute)
        return self.scale * torch.einsum("bnh,bh->bn", h, w2)


class DecisionTree(Task):
    """Full binary trees of depth ``depth``: internal node j tests x[f_j] > 0 (right) else left,
    leaf values N(0, 1); nodes stored heap-ordered. ``split_dims="all"`` (default: the paper's code and
    Garg) draws f_j uniformly over all d coordinates, so under the curriculum a split on a zeroed
    coordinate always goes left; ``split_dims="active"`` draws over the active coordinates only."""

    name = "decision_tree"
    label = "Decision tree"

    def __init__(self, n_dims: int, n_points: int, depth: int = 4, split_dims: str = "all", **kw):
        super().__init__(n_dims, n_points, **kw)
        if split_dims not in ("all", "active"):
            raise ValueError(f"task.split_dims={split_dims!r}: allowed: all, active")
        self.depth = int(depth)
        self.split_dims = split_dims

    def evaluate(self, xs: Tensor, n_active: int, g: torch.Generator) -> Tensor:
        b, n, _ = xs.shape
        n_internal = 2**self.depth - 1
        high = self.n_dims if self.split_dims == "all" else n_active
        feats = torch.randint(0, high, (b, n_internal), generator=g, device=xs.device)  # [B, I]
        leaves = torch.randn(b, 2**self.depth, generator=g, device=xs.device)  # [B, L]
        node = torch.zeros(b, n, dtype=torch.long, device=xs.device)  # heap index, root = 0
        for _ in range(self.depth):  # loop over tree depth only (vectorised over prompts and points)
            f = torch.gather(feats, 1, node)  # [B, N] feature tested at the current node
            go_right = torch.gather(xs, 2, f.unsqueeze(-1)).squeeze(-1) > 0
            node = 2 * node + 1 + go_right.long()
        return torch.gather(leaves, 1, node - n_internal)  # [B, N]
