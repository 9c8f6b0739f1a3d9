"""Vector multi-query associative recall (Park et al. 2024; the paper's code ``retrieval.py``).

A prompt of ``n_points`` points shows ``n_pairs = n_points - n_queries`` key/value pairs, then
``n_queries`` queries: keys shown earlier (distinct
keys, drawn uniformly without replacement), each with its value as the target. Keys and values are
uniform on the sphere of radius sqrt(d) (the paper's code draws them N(0, I) and rescales to norm
sqrt(d): the same distribution). Only the query positions are trained and scored.

The paper's code (and Park's) uses ONE final query after 64 pairs (``seq_len: 64``, ``predict_last``):
our default, ``n_points=65, n_queries=1`` (64 pairs). ``n_queries > 1`` is the multi-query variant
(Zoology-style: several distinct keys queried), our extension (docs/conventions.md).
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
    label = "MQAR"
    x_distribution = "sphere"
    applicable_baselines = ("zero", "mqar_lookup")
    supports_curriculum = False

    def __init__(self, n_dims: int, n_points: int = 65, n_queries: int = 1, **kw):
        super().__init__(n_dims, n_points, **kw)
        self.n_queries = int(n_queries)
        self.n_pairs = self.n_points - self.n_queries
        if not 1 <= self.n_queries <= self.n_pairs:
            raise ValueError(f"task.n_queries={self.n_queries}: must be between 1 and task.n_points // 2 = "
                             f"{self.n_points // 2} (n_points - n_queries key/value pairs, then n_queries distinct queries)")
        self.y_dim = self.n_dims

    def sample(self, batch_size: int, *, generator: torch.Generator, device=None,
               n_dims: int | None = None, n_points: int | None = None) -> Batch:
        device = device if device is not None else generator.device
        p, q = self.n_pairs, self.n_queries
        keys = sphere((batch_size, p), self.n_dims, generator, device)  # [B, P, d]
        vals = sphere((batch_size, p), self.n_dims, generator, device)  # [B, P, d]
        # q distinct shown pairs per prompt: the first q of a random permutation
        qidx = torch.rand(batch_size, p, generator=generator, device=device).argsort(dim=1)[:, :q]  # [B, Q]
        qi = qidx.unsqueeze(-1).expand(-1, -1, self.n_dims)
        xs = torch.cat([keys, torch.gather(keys, 1, qi)], dim=1)  # [B, P+Q, d]
        ys = torch.cat([vals, torch.gather(vals, 1, qi)], dim=1)  # [B, P+Q, d]
        return Batch(xs, ys)

    def scored_positions(self, n_points: int) -> Tensor:
        mask = torch.zeros(n_points, dtype=torch.bool)
        mask[self.n_pairs:] = True  # the queries
        return mask

    def describe(self) -> dict:
        return {**super().describe(), "n_pairs": self.n_pairs, "n_queries": self.n_queries}
