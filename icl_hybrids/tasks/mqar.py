"""Vector multi-query associative recall (Park et al. 2024).

Keys and values are uniform on the sphere of radius sqrt(d). A prompt of n_points pairs is
n_pairs distinct (key, value) pairs followed by n_points - n_pairs queries: earlier keys drawn uniformly
with replacement, each followed by its value. Only query positions are trained and scored: the value
of a first occurrence is unpredictable by construction (docs/conventions.md).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Batch, Task


def sphere(shape, d: int, g: torch.Generator, device) -> Tensor:
    v = torch.randn(*shape, d, generator=g, device=device)
    return v / v.norm(dim=-1, keepdim=True) * d**0.5


class VectorMQAR(Task):
    name = "mqar"
    supports_curriculum = False

    def __init__(self, n_dims: int, n_points: int, n_pairs: int | None = None, **kw):
        super().__init__(n_dims, n_points, **kw)
        self.n_pairs = int(n_pairs) if n_pairs is not None else self.n_points // 2
        self.y_dim = self.n_dims

    def sample(self, batch_size: int, *, generator: torch.Generator, device=None,
               n_dims: int | None = None, n_points: int | None = None) -> Batch:
        device = device if device is not None else generator.device
        n = self.n_points if n_points is None else int(n_points)
        p = min(self.n_pairs, n)
        keys = sphere((batch_size, p), self.n_dims, generator, device)  # [B, P, d]
        vals = sphere((batch_size, p), self.n_dims, generator, device)  # [B, P, d]
        q = torch.randint(0, p, (batch_size, n - p), generator=generator, device=device)  # [B, Q]
        qi = q.unsqueeze(-1).expand(-1, -1, self.n_dims)
        xs = torch.cat([keys, torch.gather(keys, 1, qi)], dim=1)  # [B, N, d]
        ys = torch.cat([vals, torch.gather(vals, 1, qi)], dim=1)  # [B, N, d]
        return Batch(xs, ys)

    def scored_positions(self, n_points: int) -> Tensor:
        mask = torch.zeros(n_points, dtype=torch.bool)
        mask[min(self.n_pairs, n_points):] = True
        return mask

    def describe(self) -> dict:
        return {**super().describe(), "n_pairs": self.n_pairs}
