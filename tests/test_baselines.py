"""Batched baselines vs per-prompt, per-prefix scikit-learn / numpy / torch references."""

import itertools
import math

import numpy as np
import pytest
import torch

from icl_hybrids.baselines import baseline_names, get_baseline
from icl_hybrids.baselines.linear import lasso_cd, lasso_homotopy, prefix_gram
from icl_hybrids.baselines.nn import TwoLayerNNBaseline
from icl_hybrids.refs import (
    matched_draws,
    per_prefix,
    ref_averaging,
    ref_decision_tree,
    ref_lasso,
    ref_two_layer_nn_matched,
)

FAST = ["zero", "averaging", "knn", "least_squares", "ridge", "lasso", "decision_tree",
        "sparse_parity_bayes", "mqar_lookup"]


def _data(B=6, N=10, d=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(B, N, d, generator=g, dtype=dtype)
    w = torch.randn(B, d, 1, generator=g, dtype=dtype)
    ys = (xs @ w).squeeze(-1) + 0.1 * torch.randn(B, N, generator=g, dtype=dtype)
    return xs, ys


def test_registry_is_the_config_group():
    """Baselines are conf/baseline/<name>.yaml (_target_ + hyperparameters), nothing registered in code."""
    from icl_hybrids.config import CONF_DIR

    assert baseline_names() == sorted(p.stem for p in (CONF_DIR / "baseline").glob("*.yaml"))
    assert {"zero", "averaging", "knn", "least_squares", "ridge", "lasso", "lasso_exact", "two_layer_nn",
            "two_layer_nn_text", "decision_tree", "gradient_boosting", "sparse_parity_bayes",
            "mqar_lookup"} <= set(baseline_names())
    assert get_baseline("ridge", alpha=2.0).alpha == 2.0
    assert get_baseline("knn", n_dims=5).name == "knn"
    assert get_baseline("lasso", overrides={"tol": 1e-6}).tol == 1e-6
    with pytest.raises(ValueError, match="unknown baseline 'nope'; allowed: "):
        get_baseline("nope")
    with pytest.raises(ValueError, match="baseline.lasso.tolerance: not a setting"):
        get_baseline("lasso", overrides={"tolerance": 1e-6})


def test_reference_settings_are_selectable():
    """The paper's code: Lasso at sklearn's tol 1e-4 (CD from 0), 2-layer NN with Adam 5e-3, batch 100, 100
    steps (conf/include/baselines/all.yml); the alternatives: exact Lasso, the paper text's 1000 x batch 1."""
    la, le = get_baseline("lasso"), get_baseline("lasso_exact")
    assert (la.tol, la.solver, la.max_iter, le.solver) == (1e-4, "cd", 100000, "homotopy")
    nn, nt = get_baseline("two_layer_nn"), get_baseline("two_layer_nn_text")
    assert (nn.n_steps, nn.batch_size, nn.lr, nn.hidden_size) == (100, 100, 5e-3, 100)
    assert (nt.n_steps, nt.batch_size, nt.lr, nt.hidden_size) == (1000, 1, 5e-3, 100)


def test_lasso_reference_tolerance_matches_sklearn_default():
    """tol 1e-4 stops sklearn early on under-determined prefixes; our `lasso` reproduces that (same
    algorithm and stopping rule), `lasso_exact` does not (it is the exact minimiser)."""
    g = torch.Generator().manual_seed(11)
    B, N, d = 6, 24, 10
    xs = torch.randn(B, N, d, generator=g, dtype=torch.float64)
    w = torch.randn(B, d, 1, generator=g, dtype=torch.float64) * (torch.rand(B, d, 1, generator=g) < 0.3)
    ys = (xs @ w).squeeze(-1)

    ref = ref_lasso(xs, ys, alpha=0.001, tol=1e-4, max_iter=100000)  # sklearn Lasso per prompt per prefix
    got = get_baseline("lasso")(xs, ys)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    exact = get_baseline("lasso_exact")(xs, ys)
    under = slice(2, d)  # prefixes with fewer points than dimensions
    assert (exact[:, under] - ref[:, under]).abs().max() > 1e-2
    torch.testing.assert_close(exact[:, 2 * d:], ref[:, 2 * d:], rtol=0, atol=1e-3)  # well-posed: equal


def test_baseline_overrides_reach_the_estimator_and_the_cache_key():
    from icl_hybrids.config import ConfigError, compose_config, validate
    from icl_hybrids.evaluation import baseline_kwargs
    from icl_hybrids.lit import build_task

    cfg = compose_config(["task=sparse_linear", "experiment=smoke", "baseline.lasso.tol=1e-8"])
    validate(cfg)
    task = build_task(cfg.task)
    from omegaconf import OmegaConf

    kw = baseline_kwargs("lasso", task, OmegaConf.to_container(cfg.baseline))
    assert kw["tol"] == 1e-8 and kw["solver"] == "cd" and kw["n_dims"] == task.n_dims
    assert baseline_kwargs("lasso", task)["tol"] == 1e-4
    with pytest.raises(ConfigError, match="baseline.lasso.tolx"):
        validate(compose_config(["task=sparse_linear", "experiment=smoke", "baseline.lasso.tolx=1"]))
    with pytest.raises(ConfigError, match="baseline.nope"):
        validate(compose_config(["task=sparse_linear", "experiment=smoke", "baseline.nope.a=1"]))


@pytest.mark.parametrize("name", FAST + ["two_layer_nn"])
def test_shape_dtype_position0_and_causality(name):
    kw = {"n_steps": 3, "hidden_size": 4} if name == "two_layer_nn" else {}
    est = get_baseline(name, **kw)
    xs, ys = _data(B=3, N=7, d=3, dtype=torch.float32)
    if name == "sparse_parity_bayes":
        xs = torch.sign(xs)
        ys = xs[..., 0] * xs[..., 2]
    preds = est(xs, ys)
    assert preds.shape == ys.shape and preds.dtype == ys.dtype
    assert torch.all(preds[:, 0] == 0)
    # the prediction at position k must not depend on y_k or on any later point
    k = 4
    xs2, ys2 = xs.clone(), ys.clone()
    xs2[:, k + 1 :] = -xs2[:, k + 1 :] * 3
    ys2[:, k:] = -ys2[:, k:] + 1
    preds2 = est(xs2, ys2)
    torch.testing.assert_close(preds[:, : k + 1], preds2[:, : k + 1], rtol=0, atol=1e-6)


def test_zero_and_vector_targets():
    xs = torch.randn(2, 5, 3)
    ys = torch.randn(2, 5, 4)
    assert torch.equal(get_baseline("zero")(xs, ys), torch.zeros_like(ys))


def test_averaging_matches_loop():
    xs, ys = _data()
    ref = ref_averaging(xs, ys)  # w = mean_{j<i} y_j x_j per prefix
    torch.testing.assert_close(get_baseline("averaging")(xs, ys), ref, rtol=0, atol=1e-10)


def test_knn_matches_sklearn():
    from sklearn.neighbors import KNeighborsRegressor

    xs, ys = _data(B=8, N=12, d=5)

    def fp(X, y, x):
        return KNeighborsRegressor(n_neighbors=min(3, len(y))).fit(X, y).predict(x)[0]

    ref = per_prefix(xs, ys, fp)
    torch.testing.assert_close(get_baseline("knn")(xs, ys), ref, rtol=0, atol=1e-10)

    def fp_dist(X, y, x):
        return KNeighborsRegressor(n_neighbors=min(2, len(y)), weights="distance").fit(X, y).predict(x)[0]

    ref = per_prefix(xs, ys, fp_dist)
    got = get_baseline("knn", n_neighbors=2, weights="distance")(xs, ys)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)


def test_knn_ties_by_index():
    xs = torch.tensor([[[1.0], [-1.0], [1.0], [-1.0], [0.0]]])
    ys = torch.tensor([[1.0, 2.0, 3.0, 4.0, 0.0]])
    pred = get_baseline("knn", n_neighbors=2)(xs, ys)
    assert pred[0, 4].item() == pytest.approx(1.5)  # four equidistant: first two by index
    assert pred[0, 2].item() == pytest.approx(1.5)  # x=1: nearest is y=1, then y=2 (index 1)


def test_least_squares_matches_numpy_all_prefixes():
    xs, ys = _data(B=8, N=12, d=5)
    ref = per_prefix(xs, ys, lambda X, y, x: (x @ np.linalg.lstsq(X, y, rcond=None)[0])[0])
    got = get_baseline("least_squares")(xs, ys)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-8)  # incl. underdetermined (min-norm)


def test_least_squares_rank_deficient_min_norm():
    xs, ys = _data(B=2, N=9, d=4)
    xs[:, :, 3] = xs[:, :, 0]  # duplicated feature: rank 3 for every prefix
    ref = per_prefix(xs, ys, lambda X, y, x: (x @ np.linalg.lstsq(X, y, rcond=None)[0])[0])
    torch.testing.assert_close(get_baseline("least_squares")(xs, ys), ref, rtol=0, atol=1e-8)


def test_least_squares_closed_form_error_curve():
    d, B, N = 8, 2000, 12
    g = torch.Generator().manual_seed(1)
    xs = torch.randn(B, N, d, generator=g, dtype=torch.float64)
    ys = (xs @ torch.randn(B, d, 1, generator=g, dtype=torch.float64)).squeeze(-1)
    err = (get_baseline("least_squares")(xs, ys) - ys).square().mean(0) / d
    for k in range(d):
        assert abs(err[k].item() - (1 - k / d)) < 0.12, (k, err[k].item())
    assert torch.all(err[d + 1 :] < 1e-12)


def test_ridge_matches_sklearn():
    from sklearn.linear_model import Ridge

    xs, ys = _data(B=8, N=12, d=5)
    for alpha in (1.0, 0.1):
        ref = per_prefix(xs, ys, lambda X, y, x, a=alpha: Ridge(alpha=a, fit_intercept=False).fit(X, y).predict(x)[0])
        got = get_baseline("ridge", alpha=alpha)(xs, ys)
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-9)


def _sk_lasso(xs, ys, alpha):
    """sklearn Lasso(alpha, fit_intercept=False, tol=1e-8) per prompt per prefix; every fit converged."""
    info = {}
    ref = ref_lasso(xs, ys, alpha=alpha, tol=1e-8, max_iter=100000, info=info)
    assert info["converged"].all(), "sklearn Lasso did not converge"
    return ref


@pytest.mark.parametrize("alpha", [0.001, 0.1])
def test_lasso_matches_sklearn(alpha):
    g = torch.Generator().manual_seed(3)
    B, N, d = 8, 12, 5
    xs = torch.randn(B, N, d, generator=g, dtype=torch.float64)
    w = torch.randn(B, d, 1, generator=g, dtype=torch.float64) * (torch.rand(B, d, 1, generator=g) < 0.5)
    ys = (xs @ w).squeeze(-1) + 0.05 * torch.randn(B, N, generator=g, dtype=torch.float64)
    ref = _sk_lasso(xs, ys, alpha)
    est = get_baseline("lasso_exact", alpha=alpha)
    got = est(xs, ys)
    assert torch.allclose(got, ref, rtol=0, atol=1e-4), (got - ref).abs().max()
    assert est.last_stats["n_fallback_cd"] == 0
    if alpha < 0.01:
        return  # CD on nearly unregularised underdetermined prefixes is slow (seconds)
    # forced coordinate-descent fallback (homotopy capped at 2 steps) agrees as well
    est_cd = get_baseline("lasso_exact", alpha=alpha, homotopy_max_steps=2)
    got_cd = est_cd(xs, ys)
    assert est_cd.last_stats["n_fallback_cd"] > 5
    assert torch.allclose(got_cd, ref, rtol=0, atol=1e-4), (got_cd - ref).abs().max()


def test_lasso_solvers_kkt_and_fallback():
    xs, ys = _data(B=4, N=10, d=5, seed=5)
    G, c, yy = prefix_gram(xs, ys)
    G, c, yy = G[:, 1:].reshape(-1, 5, 5), c[:, 1:].reshape(-1, 5), yy[:, 1:].reshape(-1)
    lam = 0.01 * torch.arange(1, 10, dtype=torch.float64).repeat(4)
    w_h, ok = lasso_homotopy(G, c, lam)
    assert ok.all()
    w_cd, _ = lasso_cd(G, c, yy, lam, tol=1e-12, max_iter=200000)

    def obj(w):
        return 0.5 * yy - (c * w).sum(-1) + 0.5 * (w * (G @ w.unsqueeze(-1)).squeeze(-1)).sum(-1) + lam * w.abs().sum(-1)

    assert torch.all(obj(w_h) <= obj(w_cd) + 1e-10)  # homotopy is the exact optimum
    # duplicated feature: non-unique w (homotopy may fail -> CD fallback) but unique predictions
    xs2, ys2 = _data(B=3, N=10, d=4, seed=6)
    xs2[:, :, 3] = xs2[:, :, 1]
    ref = _sk_lasso(xs2[:, :, :3], ys2, 0.1)  # same model without the duplicate
    torch.testing.assert_close(get_baseline("lasso_exact", alpha=0.1 / 1)(xs2, ys2).double(), ref,
                               rtol=0, atol=1e-4, check_dtype=False)


def _nn_reference(est, xs, ys, generator):
    """Per-network plain-torch loop (nn.Linear + torch.optim.Adam + MSE, Garg's GDModel as in
    ``refs.ref_two_layer_nn_matched``) with the same initial weights and minibatch indices that
    ``est(xs, ys, generator)`` draws."""
    B, N, d = xs.shape
    lengths = torch.arange(1, N).repeat(B)
    params = est.init_params(lengths.numel(), d, generator, dtype=est.dtype)
    idx = [est.sample_indices(lengths, generator) for _ in range(est.n_steps)]
    init_of, indices_of = matched_draws(params, idx, B, N, est.batch_size)
    return ref_two_layer_nn_matched(xs.to(est.dtype), ys.to(est.dtype), init_of, indices_of, range(1, N),
                                    hidden=est.hidden_size, lr=est.lr, steps=est.n_steps, betas=est.betas,
                                    eps=est.eps)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_two_layer_nn_matches_reference_loop(batch_size):
    xs, ys = _data(B=2, N=6, d=3, seed=7)
    est = TwoLayerNNBaseline(hidden_size=8, n_steps=40, lr=5e-3, batch_size=batch_size, dtype=torch.float64)
    got = est(xs, ys, generator=torch.Generator().manual_seed(11))
    ref = _nn_reference(est, xs, ys, torch.Generator().manual_seed(11))
    assert (got - ref).abs().max() < 1e-10
    again = est(xs, ys, generator=torch.Generator().manual_seed(11))
    assert torch.equal(got, again)


def test_two_layer_nn_fits_simple_target():
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(4, 12, 2, generator=g)
    ys = xs[..., 0] - 0.5 * xs[..., 1]
    est = TwoLayerNNBaseline(n_steps=400, lr=5e-3, batch_size=1, seed=0)
    err = (est(xs, ys) - ys).square()[:, 6:].mean()
    assert err < 0.25 * ys[:, 6:].square().mean()


def test_decision_tree_matches_sklearn():
    xs, ys = _data(B=4, N=10, d=3)
    ref = ref_decision_tree(xs, ys, max_depth=None, random_state=0)  # sklearn, per prompt per prefix
    got = get_baseline("decision_tree")(xs.float(), ys.float())
    assert got.dtype == torch.float32 and got.shape == ys.shape and torch.all(got[:, 0] == 0)
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(get_baseline("decision_tree", n_jobs=2, backend="threading")(xs, ys), ref, rtol=0, atol=1e-12)


def test_gradient_boosting_matches_sklearn():
    from sklearn.ensemble import HistGradientBoostingRegressor

    xs, ys = _data(B=2, N=6, d=3)
    est = get_baseline("gradient_boosting", max_iter=20)
    ref = per_prefix(xs, ys, lambda X, y, x: HistGradientBoostingRegressor(**est.kw).fit(X, y).predict(x)[0])
    torch.testing.assert_close(est(xs, ys), ref, rtol=0, atol=1e-10)


def test_sparse_parity_bayes_bruteforce():
    d, k, B, N = 5, 2, 8, 12
    g = torch.Generator().manual_seed(2)
    xs = torch.randint(0, 2, (B, N, d), generator=g).double() * 2 - 1
    subsets = list(itertools.combinations(range(d), k))
    S = torch.randint(0, len(subsets), (B,), generator=g)
    ys = torch.stack([xs[b][:, list(subsets[S[b]])].prod(-1) for b in range(B)])
    ys[0, 5] = -ys[0, 5]  # one noisy prompt: eventually no consistent subset -> 0
    ref = torch.zeros(B, N, dtype=torch.float64)
    for b in range(B):
        for i in range(1, N):
            cons = [s for s in subsets
                    if all(math.prod(xs[b, j, list(s)].tolist()) == ys[b, j] for j in range(i))]
            vals = [math.prod(xs[b, i, list(s)].tolist()) for s in cons]
            ref[b, i] = sum(vals) / len(vals) if vals else 0.0
    got = get_baseline("sparse_parity_bayes", k=k, n_dims=d)(xs, ys)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    assert torch.all(got[1:, -1].abs() == 1)  # identified after 11 noise-free examples (w.h.p.)


def test_mqar_lookup():
    keys = torch.tensor([[1.0, 0], [0, 1], [1, 0], [1, 1], [0, 1], [2, 2]])
    xs = keys[None].repeat(2, 1, 1)
    xs[1] = keys.flip(0)
    ys = torch.arange(2 * 6 * 3, dtype=torch.float32).reshape(2, 6, 3)
    pred = get_baseline("mqar_lookup")(xs, ys)
    exp = torch.zeros_like(ys)
    exp[0, 2] = ys[0, 0]  # key [1,0] seen at 0
    exp[0, 4] = ys[0, 1]  # key [0,1] seen at 1
    exp[1, 4] = ys[1, 1]  # flipped: [0,1] at 1 and 4; [1,0] at 3 and 5
    exp[1, 5] = ys[1, 3]
    torch.testing.assert_close(pred, exp)
    xs[0, 5] = xs[0, 0]  # repeated key -> most recent earlier occurrence (index 2)
    assert torch.equal(get_baseline("mqar_lookup")(xs, ys)[0, 5], ys[0, 2])
    assert get_baseline("mqar_lookup")(xs, ys[..., 0]).shape == (2, 6)


def test_every_baseline_names_itself_for_plots():
    """A baseline describes its own display name (``_label_`` in its YAML): no list of names in plots."""
    from icl_hybrids.baselines import baseline_label, baseline_names, baseline_settings

    names = baseline_names()
    labels = {n: baseline_label(n) for n in names}
    assert all(labels[n] != n for n in names), [n for n in names if labels[n] == n]
    assert len(set(labels.values())) == len(names)  # two baselines never share a legend entry
    assert all("_label_" not in baseline_settings(n) for n in names)  # metadata, not a constructor argument
    assert baseline_label("ckpt:/some/run.ckpt") == "ckpt:/some/run.ckpt"
    assert baseline_label("ridge_alpha=0.5") == "ridge_alpha=0.5"
