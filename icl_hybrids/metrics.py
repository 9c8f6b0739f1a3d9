"""In-context learning metrics: per-position squared errors, the ICL regression score
(arXiv 2411.03945, eq. 1) and per-position error curves with confidence intervals.

Both metric classes keep only additive states (``dist_reduce_fx="sum"``), so they are
safe under DDP and can be merged with ``Metric.merge_state``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torchmetrics import Metric

__all__ = ["squared_errors", "ICLRegressionScore", "ContextErrors", "icl_score_ci", "icl_score_ci_delta",
           "error_band", "select_positions"]

Positions = Sequence[int] | slice | torch.Tensor | None


def squared_errors(preds: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """``[B, N]`` squared error per prompt and position (mean over the last dim for ``[B, N, dy]``)."""
    if preds.shape != ys.shape:
        raise ValueError(f"preds {tuple(preds.shape)} and ys {tuple(ys.shape)} differ in shape")
    err = (preds - ys).square()
    if err.dim() == 3:
        err = err.mean(-1)
    elif err.dim() != 2:
        raise ValueError(f"expected [B, N] or [B, N, dy] tensors, got {tuple(ys.shape)}")
    return err


def select_positions(t: torch.Tensor, positions: Positions) -> torch.Tensor:
    """Select positions along the last dim: ``None`` (all), a slice, or a list of indices."""
    if positions is None:
        return t
    if isinstance(positions, slice):
        return t[..., positions]
    idx = torch.as_tensor(positions, dtype=torch.long, device=t.device)
    return t.index_select(-1, idx)


def _score(model_pos, base_pos, zero_pos):
    return (model_pos - zero_pos).sum(-1) / (base_pos - zero_pos).sum(-1)


class ICLRegressionScore(Metric):
    """ICL regression score ``S = sum_i (e_model,i - e_0,i) / sum_i (e_base,i - e_0,i)``.

    ``e_*,i`` is the mean squared error at context position ``i`` over all prompts seen,
    ``e_0`` that of the zero predictor. ``S = 1``: as good as the baseline; ``S = 0``: no
    better than predicting 0 (``S`` can be > 1 or < 0). ``positions`` restricts the sums
    (list of indices or a slice; default all). ``update(model_preds, baseline_preds, ys)``
    accepts ``[B, N]`` or ``[B, N, dy]``. Pass ``n_positions`` to fix the state shape up
    front (needed for DDP if some rank might see no data); otherwise the per-position
    states grow from a scalar 0 at the first update.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, positions: Positions = None, n_positions: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.positions = positions
        shape = () if n_positions is None else (int(n_positions),)
        for nm in ("model_sum", "base_sum", "zero_sum"):
            self.add_state(nm, default=torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, model_preds: torch.Tensor, baseline_preds: torch.Tensor, ys: torch.Tensor) -> None:
        ys = ys.detach()
        em = squared_errors(model_preds.detach(), ys).double()
        eb = squared_errors(baseline_preds.detach(), ys).double()
        e0 = squared_errors(torch.zeros_like(ys), ys).double()
        self.model_sum = self.model_sum + em.sum(0)
        self.base_sum = self.base_sum + eb.sum(0)
        self.zero_sum = self.zero_sum + e0.sum(0)
        self.count = self.count + em.shape[0]

    def per_position(self) -> dict[str, torch.Tensor]:
        """Mean squared error per position of the model, baseline and zero predictor."""
        n = self.count.clamp_min(1)
        return {"model": self.model_sum / n, "baseline": self.base_sum / n, "zero": self.zero_sum / n}

    def compute(self) -> torch.Tensor:
        e = self.per_position()
        return _score(*(select_positions(e[k], self.positions) for k in ("model", "baseline", "zero"))).float()


def icl_score_ci(model_err: torch.Tensor, base_err: torch.Tensor, zero_err: torch.Tensor,
                 positions: Positions = None, level: float = 0.95, n_boot: int = 1000,
                 generator: torch.Generator | None = None):
    """ICL score with a percentile bootstrap confidence interval over prompts.

    Inputs are per-prompt per-position squared errors ``[B, N]`` (see :func:`squared_errors`)
    of the model, the baseline and the zero predictor on the same prompts. The point
    estimate is the score of :class:`ICLRegressionScore`. Each of the ``n_boot`` replicates
    resamples the ``B`` prompts with replacement (whole prompts, so the correlation across
    positions is kept) and recomputes the score; ``(lo, hi)`` are the ``(1-level)/2`` and
    ``(1+level)/2`` quantiles of the replicates. Returns floats ``(score, lo, hi)``.
    """
    m = select_positions(model_err.double(), positions)
    b = select_positions(base_err.double(), positions)
    z = select_positions(zero_err.double(), positions)
    num = (m - z).sum(-1)  # [B]: score = sum_b num_b / sum_b den_b
    den = (b - z).sum(-1)
    score = float(num.sum() / den.sum())
    B = num.shape[0]
    gen_dev = generator.device if generator is not None else num.device
    draws = torch.randint(0, B, (n_boot, B), generator=generator, device=gen_dev).to(num.device)
    counts = torch.zeros(n_boot, B, dtype=torch.float64, device=num.device)
    counts.scatter_add_(1, draws, torch.ones_like(counts))
    reps = (counts @ num) / (counts @ den)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64, device=num.device)
    lo, hi = torch.nanquantile(reps, q).tolist()
    return score, lo, hi


def icl_score_ci_delta(model_err: torch.Tensor, base_err: torch.Tensor, zero_err: torch.Tensor,
                       positions: Positions = None, level: float = 0.95):
    """ICL score with the delta-method (linearisation) interval of the ratio estimator, for evaluations too
    large to bootstrap. With per-prompt ``num_b = sum_i (e_model - e_0)`` and ``den_b = sum_i (e_base - e_0)``
    the score is ``S = sum num / sum den`` and ``Var(S) ~= Var(num_b - S den_b) / (B mean(den)^2)``;
    ``(lo, hi) = S -+ z sd``. It agrees with the bootstrap for large B (tested). Returns ``(score, lo, hi)``."""
    m = select_positions(model_err.double(), positions)
    b = select_positions(base_err.double(), positions)
    z = select_positions(zero_err.double(), positions)
    num, den = (m - z).sum(-1), (b - z).sum(-1)
    B = num.shape[0]
    score = float(num.sum() / den.sum())
    resid = num - score * den
    sd = float(resid.std(unbiased=True) / (den.mean().abs() * B**0.5)) if B > 1 else float("inf")
    q = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.5 + level / 2)))
    return score, score - q * sd, score + q * sd


def error_band(err: torch.Tensor, level: float = 0.99) -> dict[str, torch.Tensor]:
    """Per-position mean of ``[B, N]`` errors with ``ContextErrors``' normal interval (its formula, one batch)."""
    m = ContextErrors(level=level)
    m.update_errors(err)
    return m._band()


class ContextErrors(Metric):
    """Mean squared error per context position with a normal-approximation CI.

    ``compute()`` returns ``{"mean", "lo", "hi"}`` (``[N]`` tensors) with
    ``mean +- z * std / sqrt(n)``, ``std`` the sample standard deviation over prompts and
    ``z`` the two-sided normal quantile of ``level`` (0.99 -> 2.576). States: per-position
    sum and sum of squares of the errors, and the prompt count (all summed across
    processes). ``update(preds, ys)`` takes predictions and targets (``[B, N]`` or
    ``[B, N, dy]``); ``update_errors(err)`` takes precomputed ``[B, N]`` errors.
    """

    full_state_update = False
    higher_is_better = False
    is_differentiable = False

    def __init__(self, level: float = 0.99, n_positions: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.level = float(level)
        self.z = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.5 + level / 2)))
        shape = () if n_positions is None else (int(n_positions),)
        self.add_state("err_sum", default=torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("err_sq_sum", default=torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, ys: torch.Tensor) -> None:
        self.update_errors(squared_errors(preds.detach(), ys.detach()))

    def update_errors(self, err: torch.Tensor) -> None:
        err = err.detach().double()
        self.err_sum = self.err_sum + err.sum(0)
        self.err_sq_sum = self.err_sq_sum + err.square().sum(0)
        self.count = self.count + err.shape[0]

    def compute(self) -> dict[str, torch.Tensor]:
        return self._band()

    def _band(self) -> dict[str, torch.Tensor]:
        n = self.count
        mean = self.err_sum / n.clamp_min(1)
        var = (self.err_sq_sum - n * mean.square()) / (n - 1).clamp_min(1)
        half = self.z * var.clamp_min(0).sqrt() / n.clamp_min(1).sqrt()
        return {"mean": mean, "lo": mean - half, "hi": mean + half}
