"""Decision tree and gradient boosting baselines (scikit-learn, fitted per prompt per prefix).

These are the one exception to "batched in torch": trees cannot be batched, so each prompt
is handled by one joblib task (``n_jobs`` workers, default 1; ``backend`` as in joblib)
that fits one regressor (single-threaded) per prefix length ``i = 1..N-1`` on ``(xs[b, :i], ys[b, :i])`` and
predicts ``xs[b, i]``.
Position 0 predicts 0. Inputs are moved to CPU float64; the output goes back to the device
and dtype of ``ys``.
"""

from __future__ import annotations

import numpy as np
import torch
from joblib import Parallel, delayed

from .base import Baseline, check_inputs

__all__ = ["DecisionTreeBaseline", "GradientBoostingBaseline"]


def _fit_predict_prompt(x: np.ndarray, y: np.ndarray, make_model) -> np.ndarray:
    from threadpoolctl import threadpool_limits

    N = x.shape[0]
    out = np.zeros(N, dtype=np.float64)
    with threadpool_limits(limits=1):  # no OpenMP oversubscription inside joblib workers
        for i in range(1, N):
            model = make_model().fit(x[:i], y[:i])
            out[i] = float(model.predict(x[i : i + 1])[0])
    return out


class _SklearnPerPrefix(Baseline):
    def __init__(self, n_jobs: int = 1, backend: str | None = None):
        self.n_jobs = n_jobs
        self.backend = backend  # joblib backend (None: joblib's default, loky processes)

    def make_model(self):  # pragma: no cover
        raise NotImplementedError

    def __call__(self, xs, ys):
        check_inputs(xs, ys)
        x = xs.detach().to("cpu", torch.float64).numpy()
        y = ys.detach().to("cpu", torch.float64).numpy()
        rows = Parallel(n_jobs=self.n_jobs, backend=self.backend)(
            delayed(_fit_predict_prompt)(x[b], y[b], self.make_model) for b in range(x.shape[0])
        )
        out = np.stack(rows) if rows else np.zeros(y.shape)
        return torch.from_numpy(out).to(device=ys.device, dtype=ys.dtype)


class DecisionTreeBaseline(_SklearnPerPrefix):
    """``sklearn.tree.DecisionTreeRegressor(max_depth=max_depth)`` (Garg: ``DecisionTreeModel``).

    ``random_state`` (default 0) fixes sklearn's feature permutation, which breaks ties
    between equally good splits, so results are reproducible (Garg left it unset).
    """

    def __init__(self, max_depth: int | None = None, random_state: int | None = 0,
                 n_jobs: int = 1, backend: str | None = None, n_dims: int | None = None):
        super().__init__(n_jobs, backend)
        self.max_depth = max_depth
        self.random_state = random_state
        self.name = "decision_tree" if max_depth is None else f"decision_tree_max_depth={max_depth}"

    def make_model(self):
        from sklearn.tree import DecisionTreeRegressor

        return DecisionTreeRegressor(max_depth=self.max_depth, random_state=self.random_state)


class GradientBoostingBaseline(_SklearnPerPrefix):
    """Stand-in for Garg's ``XGBoostModel`` (``xgb.XGBRegressor()`` defaults); xgboost is not a
    dependency, so this uses ``sklearn.ensemble.HistGradientBoostingRegressor`` configured
    like XGBoost's defaults: 100 rounds, learning rate 0.3, depth-wise trees of
    ``max_depth=6``, L2 leaf regularisation ``lambda=1`` (leaf value ``sum(g)/(n+1)``), at
    least one sample per leaf (``min_child_weight=1``), no early stopping, mean as the
    initial prediction. Differences to XGBoost: histogram bins (exact here since prompts
    have far fewer than 255 distinct values per feature) and its split-finding details.
    """

    def __init__(self, max_iter: int = 100, learning_rate: float = 0.3, max_depth: int = 6,
                 l2_regularization: float = 1.0, min_samples_leaf: int = 1,
                 random_state: int | None = 0, n_jobs: int = 1, backend: str | None = None,
                 n_dims: int | None = None):
        super().__init__(n_jobs, backend)
        self.kw = dict(max_iter=max_iter, learning_rate=learning_rate, max_depth=max_depth,
                       l2_regularization=l2_regularization, min_samples_leaf=min_samples_leaf,
                       max_leaf_nodes=None, early_stopping=False, random_state=random_state)
        self.name = "gradient_boosting"

    def make_model(self):
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(**self.kw)
