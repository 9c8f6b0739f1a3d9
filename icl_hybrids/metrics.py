"""ICL metrics (paper Sec. 3.3) as torchmetrics Metrics with sum states (distributed-safe).

- ``squared_errors``: per prompt, per position squared error (vector targets: mean over coordinates).
- ``ICLRegressionScore``: S = sum_i (e_model,i - e_0,i) / sum_i (e_base,i - e_0,i), e_*,i the mean squared
  error at context position i over prompts, e_0 the zero estimator's.
- ``ContextErrors``: mean squared error per position with a 99% normal-approximation interval.
- ``icl_score_ci``: bootstrap-over-prompts interval of S.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

Z99 = 2.5758293035489004


def squared_errors(preds: Tensor, ys: Tensor) -> Tensor:
    err = (preds.to(ys.dtype) - ys) ** 2
    return err.mean(-1) if err.dim() == 3 else err  # [B, N]


def _select(e: Tensor, positions) -> Tensor:
    return e if positions is None else e[..., list(positions)]


class ICLRegressionScore(Metric):
    full_state_update = False
    higher_is_better = True

    def __init__(self, positions=None, **kw):
        super().__init__(**kw)
        self.positions = None if positions is None else list(positions)
        for name in ("model_sum", "base_sum", "zero_sum"):
            self.add_state(name, default=torch.zeros(0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, model_preds: Tensor, baseline_preds: Tensor, ys: Tensor) -> None:
        sums = [squared_errors(p, ys).double().sum(0) for p in (model_preds, baseline_preds, torch.zeros_like(ys))]
        if self.model_sum.numel() == 0:
            self.model_sum, self.base_sum, self.zero_sum = (torch.zeros_like(s) for s in sums)
        self.model_sum += sums[0]
        self.base_sum += sums[1]
        self.zero_sum += sums[2]
        self.count += ys.shape[0]

    def compute(self) -> Tensor:
        m, b, z = (_select(s / self.count, self.positions) for s in (self.model_sum, self.base_sum, self.zero_sum))
        return ((m - z).sum() / (b - z).sum()).float()


class ContextErrors(Metric):
    """Accepts per-prompt squared errors [B, N] (see ``squared_errors``)."""

    full_state_update = False

    def __init__(self, z: float = Z99, **kw):
        super().__init__(**kw)
        self.z = z
        self.add_state("s1", default=torch.zeros(0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("s2", default=torch.zeros(0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, errors: Tensor) -> None:
        e = errors.double()
        if self.s1.numel() == 0:
            self.s1, self.s2 = torch.zeros(e.shape[1], dtype=torch.float64, device=e.device), \
                torch.zeros(e.shape[1], dtype=torch.float64, device=e.device)
        self.s1 += e.sum(0)
        self.s2 += (e * e).sum(0)
        self.n += e.shape[0]

    def compute(self) -> dict[str, Tensor]:
        mean = self.s1 / self.n
        var = (self.s2 / self.n - mean**2).clamp_min(0) * self.n / (self.n - 1).clamp_min(1)
        half = self.z * (var / self.n).sqrt()
        return {"mean": mean, "lo": mean - half, "hi": mean + half}


def icl_score_ci(model_err: Tensor, base_err: Tensor, zero_err: Tensor, positions=None, level: float = 0.95,
                 n_boot: int = 1000, generator: torch.Generator | None = None) -> tuple[float, float, float]:
    """Point estimate and percentile-bootstrap interval over prompts (the score is a ratio of sums over
    positions of means over prompts, so prompts are resampled whole)."""
    m, b, z = (_select(e.double(), positions) for e in (model_err, base_err, zero_err))
    num, den = (m - z).sum(1), (b - z).sum(1)  # [B] per-prompt contributions
    score = num.mean() / den.mean()
    idx = torch.randint(0, m.shape[0], (n_boot, m.shape[0]), generator=generator)
    boots = num[idx].mean(1) / den[idx].mean(1)
    alpha = (1 - level) / 2
    lo, hi = torch.quantile(boots, torch.tensor([alpha, 1 - alpha], dtype=torch.float64))
    return float(score), float(lo), float(hi)
