"""Task interface: a function class that samples batches of in-context prompts in torch.

A prompt is n_points pairs (x_i, y_i). ``sample`` returns ``xs`` [B, N, d] and ``ys`` [B, N] (scalar
targets) or [B, N, d_y] (vector targets, MQAR). Everything is sampled on the requested device from a
``torch.Generator`` with no per-example Python loops, so a batch is a pure function of (seed, step).

Curriculum (Garg et al.): ``n_dims_active`` < n_dims zeroes the trailing coordinates of x (and the
task draws its function over the active coordinates only); ``n_points`` < task.n_points shortens prompts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor


@dataclass
class Batch:
    xs: Tensor  # [B, N, d]
    ys: Tensor  # [B, N] or [B, N, d_y]


class Task:
    """Base class. Subclasses implement ``_sample_fn`` (draw functions, evaluate on xs)."""

    name: ClassVar[str] = "task"
    #: human-readable name for tables and plots
    label: ClassVar[str] = "task"
    #: distribution of the x points: "gaussian" (N(0, I)), "rademacher" (±1), "sphere" (radius sqrt(d));
    #: the x-shifts of icl_hybrids.shifts apply to Gaussian inputs only
    x_distribution: ClassVar[str] = "gaussian"
    #: baselines that make sense on this task (evaluate's dump mode computes them all)
    applicable_baselines: ClassVar[tuple[str, ...]] = (
        "zero", "averaging", "knn", "least_squares", "ridge", "lasso", "two_layer_nn", "decision_tree",
        "gradient_boosting")
    #: width of a target (1 = scalar)
    y_dim: int = 1
    #: True when the curriculum may shrink this task's dims / points
    supports_curriculum: ClassVar[bool] = True

    def __init__(self, n_dims: int, n_points: int, baseline: str = "zero",
                 curriculum_points_start: int | None = None, curriculum_points_inc: int = 0):
        self.n_dims = int(n_dims)
        self.n_points = int(n_points)
        self.baseline = baseline

    # ---- sampling -----------------------------------------------------------------------------
    def sample_xs(self, b: int, n: int, n_active: int, g: torch.Generator, device) -> Tensor:
        xs = torch.randn(b, n, self.n_dims, generator=g, device=device)  # [B, N, d]
        if n_active < self.n_dims:
            xs[..., n_active:] = 0
        return xs

    def sample(self, batch_size: int, *, generator: torch.Generator, device=None,
               n_dims: int | None = None, n_points: int | None = None) -> Batch:
        device = device if device is not None else generator.device
        n_active = self.n_dims if n_dims is None else int(n_dims)
        n = self.n_points if n_points is None else int(n_points)
        xs = self.sample_xs(batch_size, n, n_active, generator, device)
        ys = self.evaluate(xs, n_active, generator)
        return Batch(xs, ys)

    def evaluate(self, xs: Tensor, n_active: int, g: torch.Generator) -> Tensor:
        raise NotImplementedError

    # ---- what is trained and scored -------------------------------------------------------------
    def scored_positions(self, n_points: int) -> Tensor:
        """Bool mask [N] of the positions that enter the loss and the ICL score (all, by default)."""
        return torch.ones(n_points, dtype=torch.bool)

    @property
    def error_scale(self) -> float:
        """What plots and tables divide squared errors by: d for the Gaussian regression tasks (Garg's
        normalisation: the zero estimator of linear regression sits at 1), 1 otherwise."""
        return float(self.n_dims) if self.x_distribution == "gaussian" and self.y_dim == 1 else 1.0

    def describe(self) -> dict:
        return {"name": self.name, "label": self.label, "n_dims": self.n_dims, "n_points": self.n_points,
                "y_dim": self.y_dim, "x_distribution": self.x_distribution, "error_scale": self.error_scale}
