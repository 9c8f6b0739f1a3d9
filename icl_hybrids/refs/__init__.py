"""Reference implementations that the benchmark (``icl_hybrids.bench``) and the tests compare ours
against, mamba_ssm-style (``*_ref`` beside ``*_fn``; the scan references themselves are in
``icl_hybrids.ops``: ``selective_scan_ref``, ``causal_conv1d_ref``).

* :mod:`.baselines`: the reference code bases' estimators (Garg et al., dtsip/in-context-learning
  ``src/models.py``), written as there: one prefix, and for the scikit-learn / GD models one prompt,
  at a time. dtype-generic; CPU.
* :mod:`.mamba`: mambapy's ``MambaBlock.selective_scan`` (pscan) formulation.

Deliberately simple and slow; nothing in training or evaluation uses them.
"""
from .baselines import (
    ParallelNetworks,
    matched_draws,
    per_prefix,
    ref_averaging,
    ref_decision_tree,
    ref_knn,
    ref_lasso,
    ref_least_squares,
    ref_two_layer_nn,
    ref_two_layer_nn_matched,
)
from .mamba import mambapy_scan

__all__ = ["ParallelNetworks", "matched_draws", "per_prefix", "ref_averaging", "ref_decision_tree", "ref_knn",
           "ref_lasso", "ref_least_squares", "ref_two_layer_nn", "ref_two_layer_nn_matched", "mambapy_scan"]
