"""Batched classical in-context estimators ("baselines") and their registry.

Every baseline is a callable ``est(xs, ys) -> preds`` with ``preds[:, i]`` computed only from
the context points ``0..i-1`` of the same prompt (and the query ``xs[:, i]``); position 0
predicts 0. See ``docs/baselines.md``.
"""

from __future__ import annotations

from .base import Baseline
from .bayes import MQARLookupBaseline, SparseParityBayesBaseline
from .linear import LassoBaseline, LeastSquaresBaseline, RidgeBaseline
from .nn import TwoLayerNNBaseline
from .simple import AveragingBaseline, KNNBaseline, ZeroBaseline
from .trees import DecisionTreeBaseline, GradientBoostingBaseline

BASELINES: dict[str, type] = {
    "zero": ZeroBaseline,
    "averaging": AveragingBaseline,
    "knn": KNNBaseline,
    "least_squares": LeastSquaresBaseline,
    "ridge": RidgeBaseline,
    "lasso": LassoBaseline,
    "two_layer_nn": TwoLayerNNBaseline,
    "decision_tree": DecisionTreeBaseline,
    "gradient_boosting": GradientBoostingBaseline,
    "sparse_parity_bayes": SparseParityBayesBaseline,
    "mqar_lookup": MQARLookupBaseline,
}


def baseline_class(name: str) -> type:
    """The class behind ``name``; ``ckpt:<path>`` is a trained checkpoint used as a baseline (the paper's
    GPT-2 for decision trees, Mamba for sparse parity)."""
    if name.startswith("ckpt:"):
        from .checkpoint import CheckpointBaseline

        return CheckpointBaseline
    try:
        return BASELINES[name]
    except KeyError:
        raise ValueError(f"unknown baseline '{name}'; allowed: {', '.join(sorted(BASELINES))}") from None


def get_baseline(name: str, **kwargs) -> Baseline:
    """Instantiate the baseline ``name`` with ``kwargs`` (a checkpoint baseline also gets its name/path)."""
    cls = baseline_class(name)
    return cls(name, **kwargs) if name.startswith("ckpt:") else cls(**kwargs)


__all__ = [
    "BASELINES",
    "Baseline",
    "baseline_class",
    "get_baseline",
    "ZeroBaseline",
    "AveragingBaseline",
    "KNNBaseline",
    "LeastSquaresBaseline",
    "RidgeBaseline",
    "LassoBaseline",
    "TwoLayerNNBaseline",
    "DecisionTreeBaseline",
    "GradientBoostingBaseline",
    "SparseParityBayesBaseline",
    "MQARLookupBaseline",
]
