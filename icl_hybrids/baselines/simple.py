"""Zero, averaging and k-nearest-neighbour estimators (Garg et al. 2022, ``src/models.py``)."""

from __future__ import annotations

import torch

from .base import Baseline, check_inputs, strict_lower_mask

__all__ = ["ZeroBaseline", "AveragingBaseline", "KNNBaseline"]


class ZeroBaseline(Baseline):
    """Predicts 0 everywhere (the ``e_0`` reference of the ICL score). Accepts ``[B, N, dy]``."""

    name = "zero"
    vector_targets = True

    def __init__(self, n_dims: int | None = None):
        pass

    def __call__(self, xs, ys):
        check_inputs(xs, ys, vector_targets=True)
        return torch.zeros_like(ys)


class AveragingBaseline(Baseline):
    """Garg's ``AveragingModel``: ``w_i = mean_{j<i} y_j x_j``, ``pred_i = <x_i, w_i>``."""

    name = "averaging"

    def __init__(self, n_dims: int | None = None):
        pass

    def __call__(self, xs, ys):
        check_inputs(xs, ys)
        B, N, d = xs.shape
        x = xs.double()
        z = x * ys.double().unsqueeze(-1)  # [B, N, d]
        csum = torch.cumsum(z, dim=1)
        excl = torch.cat([torch.zeros_like(csum[:, :1]), csum[:, :-1]], dim=1)
        counts = torch.arange(N, device=xs.device, dtype=torch.float64).clamp_min(1.0)
        w = excl / counts[None, :, None]
        return (x * w).sum(-1).to(ys.dtype)  # position 0: w = 0 -> pred 0


class KNNBaseline(Baseline):
    """Garg's ``NNModel``: average of the ys of the ``min(k, i)`` nearest earlier points.

    Distance is Euclidean. ``weights="uniform"`` (Garg's default and what his
    ``get_relevant_baselines`` uses with ``n_neighbors=3``) averages the neighbour ys;
    ``weights="distance"`` weights them by ``1/dist`` and, if the query coincides with
    a neighbour (dist 0), averages only the exact matches (as in Garg's code). Ties in
    distance are broken by index order (earlier point first, stable sort).
    """

    vector_targets = False

    def __init__(self, n_neighbors: int = 3, weights: str = "uniform", n_dims: int | None = None):
        if weights not in ("uniform", "distance"):
            raise ValueError(f"weights must be 'uniform' or 'distance', got {weights!r}")
        self.n_neighbors = int(n_neighbors)
        self.weights = weights
        self.name = "knn" if (self.n_neighbors == 3 and weights == "uniform") else f"knn_k={n_neighbors}_{weights}"

    def __call__(self, xs, ys):
        check_inputs(xs, ys)
        B, N, d = xs.shape
        if N == 0:
            return ys.clone()
        x = xs.double()
        y = ys.double()
        dist = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")  # [B, N(i), N(j)]
        ctx = strict_lower_mask(N, device=xs.device)
        dist = dist.masked_fill(~ctx, float("inf"))
        k = min(self.n_neighbors, max(N - 1, 1))
        sd, order = torch.sort(dist, dim=-1, stable=True)
        sd, order = sd[..., :k], order[..., :k]  # [B, N, k]
        n_valid = torch.arange(N, device=xs.device).clamp_max(k)  # min(k, i)
        valid = torch.arange(k, device=xs.device)[None, :] < n_valid[:, None]  # [N, k]
        valid = valid.unsqueeze(0).expand(B, N, k)
        ny = torch.gather(y.unsqueeze(1).expand(B, N, N), 2, order)  # neighbour ys
        if self.weights == "uniform":
            w = valid.double()
        else:
            exact = (sd == 0) & valid
            has_exact = exact.any(-1, keepdim=True)
            inv = torch.where(valid, 1.0 / sd.clamp_min(1e-300), torch.zeros_like(sd))
            w = torch.where(has_exact, exact.double(), inv)
        den = w.sum(-1)
        pred = (w * ny).sum(-1) / den.clamp_min(1e-300)
        pred = torch.where(den > 0, pred, torch.zeros_like(pred))  # position 0 -> 0
        return pred.to(ys.dtype)
