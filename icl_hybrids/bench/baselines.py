"""``baselines.<name>``: our batched estimators (``icl_hybrids.baselines``) vs the reference code bases'
per-prefix (and per-prompt) fits (``icl_hybrids.refs``) on identical prompts."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..refs import (
    matched_draws,
    ref_averaging,
    ref_decision_tree,
    ref_knn,
    ref_lasso,
    ref_least_squares,
    ref_two_layer_nn_matched,
)
from .harness import Runner, _r, _ratio, _timing

# task whose prompts each estimator is benchmarked on (its natural task), at the linear task's size
BASELINE_TASKS = {"least_squares": "linear", "averaging": "linear", "knn": "linear", "lasso": "sparse_linear",
                  "two_layer_nn": "mlp", "decision_tree": "decision_tree"}


def _prompts(task_name: str, B: int, N: int, d: int, seed: int = 0):
    from hydra.utils import instantiate

    from ..config import compose_config

    cfg = compose_config([f"task={task_name}", f"task.n_dims={d}", f"task.n_points={N}"])
    task = instantiate(cfg.task)
    g = torch.Generator().manual_seed(seed)
    return task.sample(B, generator=g)


def _two_layer_nn_case(est, xs, ys):
    """Run ours once recording its random draws (initial weights, minibatch indices), so that the
    reference trains the same networks from the same start on the same minibatches. Returns ours'
    predictions and ``init_of(i, n, dtype)`` / ``indices_of(i, t, n)``: the draws of prefix ``i`` for the
    first ``n`` prompts (``refs.matched_draws``)."""
    records = []

    class Recording(type(est)):
        def fit_predict(self, X, Y, lengths, x_test, params, generator=None, indices=None):
            init = {k: v.clone() for k, v in params.items()}
            if indices is None:
                indices = [self.sample_indices(lengths, generator) for _ in range(self.n_steps)]
            records.append((init, indices))
            return super().fit_predict(X, Y, lengths, x_test, params, indices=indices)

    rec = copy.copy(est)
    rec.__class__ = Recording
    preds = rec(xs, ys)
    init = {k: torch.cat([r[0][k] for r in records]) for k in records[0][0]}
    k_max = max(r[1][0].shape[1] for r in records)
    idx = [torch.cat([F.pad(r[1][t], (0, k_max - r[1][t].shape[1])) for r in records]) for t in range(est.n_steps)]
    init_of, indices_of = matched_draws(init, idx, xs.shape[0], xs.shape[1], est.batch_size)
    return preds, init_of, indices_of


def bench_baseline(name: str, size: dict, runner: Runner, reps: int, slow_reps: int) -> dict:
    from ..baselines import get_baseline

    dev = runner.device
    p = size["prompts"]
    B, N, d = p["B"], p["N"], p["d"]
    n_ref = min(size["ref_prompts"][name], B)
    batch = _prompts(BASELINE_TASKS[name], B, N, d)
    xs, ys = batch.xs.to(dev), batch.ys.to(dev)
    xr, yr = batch.xs[:n_ref], batch.ys[:n_ref]  # the reference's prompts (CPU)
    x64, y64 = xr.double(), yr.double()
    est = get_baseline(name, **size.get("baseline_kwargs", {}).get(name, {}))
    problems_scale, prefixes, ours_reps = 1.0, None, reps
    entry = {"device": dev.type, "task": BASELINE_TASKS[name],
             "shapes": {"B": B, "N": N, "d": d, "reference_prompts": n_ref},
             "ours_impl": f"icl_hybrids.baselines.get_baseline({name!r}) on all B prompts, "
                          f"{xs.dtype} in/out, on {dev.type}"}
    ref_reps = reps
    warm = {}
    well_posed = None  # bool mask [n_ref, N] of the compared predictions
    extra = {}
    if name == "least_squares":
        ref = lambda: ref_least_squares(x64, y64)  # noqa: E731
        entry["reference"] = "Garg LeastSquaresModel: torch.linalg.lstsq (CPU, gelsy) per prefix, batched over prompts"
        entry["reference_dtype"] = "float64"
        entry["well_posed"] = "all prefixes (the minimum-norm solution is unique)"
    elif name == "averaging":
        ref = lambda: ref_averaging(x64, y64)  # noqa: E731
        entry["reference"] = "Garg AveragingModel: mean_{j<i} y_j x_j per prefix, batched over prompts"
        entry["reference_dtype"] = "float64"
        entry["well_posed"] = "all prefixes"
    elif name == "knn":
        k = getattr(est, "n_neighbors", 3)
        ref = lambda: ref_knn(x64, y64, k)  # noqa: E731
        entry["reference"] = f"Garg NNModel(n_neighbors={k}): distances per prefix, python loop over prompts"
        entry["reference_dtype"] = "float64"
        entry["well_posed"] = "all prefixes (no distance ties among continuous points)"
    elif name == "lasso":
        info: dict = {}
        kw = dict(alpha=est.alpha, tol=est.tol, max_iter=est.max_iter)
        ref = lambda: ref_lasso(x64, y64, info=info, **kw)  # noqa: E731
        warm["reference"] = lambda: ref_lasso(x64[:1], y64[:1], **kw)
        x32, y32 = xr, yr
        extra["reference_garg_defaults"] = lambda: ref_lasso(x32, y32, alpha=est.alpha, tol=1e-4, max_iter=100000)
        warm["reference_garg_defaults"] = lambda: ref_lasso(x32[:1], y32[:1], alpha=est.alpha, tol=1e-4)
        entry["reference"] = (f"Garg LassoModel: sklearn Lasso(alpha={est.alpha}, fit_intercept=False, "
                              f"max_iter={est.max_iter}) per prompt per prefix, at matched tol={est.tol} "
                              "(ours' tolerance) on float64 prompts")
        entry["reference_dtype"] = "float64"
        entry["reference_garg_defaults_note"] = ("sklearn's default tol=1e-4 on float32 prompts, as Garg ran it; "
                                                 "timing only (its solutions are not converged to 1e-4)")
        entry["well_posed"] = "prefixes where sklearn converged (n_iter < max_iter)"
        ref_reps = slow_reps
    elif name == "decision_tree":
        ours_reps = slow_reps  # ours is the same per-prompt scikit-learn loop (trees are not batched)
        depth = getattr(est, "max_depth", 4)
        rs = getattr(est, "random_state", 0)
        ref = lambda: ref_decision_tree(xr, yr, max_depth=depth, random_state=rs)  # noqa: E731
        warm["reference"] = lambda: ref_decision_tree(xr[:1], yr[:1], max_depth=depth, random_state=rs)
        entry["reference"] = (f"Garg DecisionTreeModel: sklearn DecisionTreeRegressor(max_depth={depth}) "
                              "per prompt per prefix")
        entry["reference_dtype"] = "float32 (sklearn trees work in float32)"
        entry["well_posed"] = "all prefixes"
        ref_reps = slow_reps
    elif name == "two_layer_nn":
        # The reference's cost per (prompt, prefix) does not depend on the prefix (each step trains on
        # min(batch_size, i) points, <= batch_size), so it is fitted on a subset of prompts and prefixes
        # and its time scaled by the number of (prompt, prefix) problems. Agreement: ours and the
        # reference in float64 on the reference's prompts from the same recorded random draws (in
        # float32 the rounding differences between batched and per-network matmuls grow over the Adam
        # steps: ~6e-4 after 1000 steps); the timed reference starts from the same draws in float32.
        prefixes = list(range(1, N, max(1, size.get("nn_ref_prefix_stride", 1))))
        hp = dict(hidden=est.hidden_size, lr=est.lr, steps=est.n_steps, betas=est.betas, eps=est.eps)
        est64 = copy.copy(est)
        est64.dtype = torch.float64
        ours64, init_of, indices_of = _two_layer_nn_case(est64, x64, y64)
        xr_, yr_ = xr.to(est.dtype), yr.to(est.dtype)
        ref = lambda: ref_two_layer_nn_matched(xr_, yr_, init_of, indices_of, prefixes, **hp)  # noqa: E731
        warm["reference"] = lambda: ref_two_layer_nn_matched(xr_[:1], yr_[:1], init_of, indices_of,
                                                             prefixes[:1], **hp)
        problems_scale = (N - 1) / len(prefixes)
        entry["reference"] = (f"Garg GDModel(NeuralNetwork(d, {est.hidden_size}, 1), adam, lr={est.lr}, "
                              f"batch_size={est.batch_size}, num_steps={est.n_steps}): per prefix a "
                              "ParallelNetworks looping over prompts; same initial weights and minibatches as ours")
        entry["hyperparameters"] = {"hidden_size": est.hidden_size, "n_steps": est.n_steps, "lr": est.lr,
                                    "batch_size": est.batch_size}
        if size.get("baseline_kwargs", {}).get(name):
            dflt = type(est)()
            entry["hyperparameters_note"] = (
                "changed from the registry defaults (" + ", ".join(
                    f"{k}: {getattr(dflt, k)} -> {v}" for k, v in size["baseline_kwargs"][name].items())
                + "); both sides' cost is linear in n_steps, so the ratio is that of the default")
        entry["reference_dtype"] = str(est.dtype).replace("torch.", "")
        entry["reference_prefixes"] = prefixes
        entry["agreement"] = ("float64 run of ours and the reference on the reference's prompts, same recorded "
                              "initial weights and minibatches")
        entry["well_posed"] = "the fitted prefixes"
        ref_reps = slow_reps
        ours_reps = slow_reps

        def agreement():
            r64 = ref_two_layer_nn_matched(x64, y64, init_of, indices_of, prefixes, **hp)
            return ours64.double(), r64
    else:
        raise ValueError(f"no reference for baseline {name!r}")
    scale = B / n_ref * (problems_scale if name == "two_layer_nn" else 1.0)
    if scale != 1.0:
        entry["reference_extrapolated"] = (
            f"reference fitted on {n_ref} of the {B} prompts" +
            (f" and {len(prefixes)} of the {N - 1} prefixes" if name == "two_layer_nn" else "") +
            f"; its times are scaled by {_r(scale)} (it is a loop over prompts and prefixes)")
    last: dict = {}  # the latest outputs of the timed calls, for the agreement below

    def keep(key, fn):
        def call():
            last[key] = fn()
        return call

    fns = {"ours": keep("ours", lambda: est(xs, ys)), "reference": keep("reference", ref), **extra}
    reps_of = {"ours": ours_reps, "reference": ref_reps, **{k: 1 for k in extra}}
    t = runner.compare(fns, reps, reps_of, warm=warm)
    entry["ours"] = _timing(t["ours"])
    entry["reference_timing"] = _timing(t["reference"], scale)
    entry["speedup"] = _r(_ratio(t["reference"]["min_s"] * scale, t["ours"]["min_s"]))
    entry["speedup_median"] = _r(_ratio(t["reference"]["median_s"] * scale, t["ours"]["median_s"]))
    for k in extra:
        entry[k] = _timing(t[k], scale)
        entry[f"speedup_vs_{k}"] = _r(_ratio(t[k]["min_s"] * scale, t["ours"]["min_s"]))
    if warm:
        entry["reference_peak_mem_note"] = "reference peak memory measured on a 1-prompt warm-up call"

    # agreement
    if name == "two_layer_nn":
        ours, refp = agreement()  # untimed float64 calls
        well_posed = ~refp.isnan()
    else:
        ours, refp = last["ours"].cpu()[:n_ref].double(), last["reference"].double()
    if name == "lasso":
        well_posed = info["converged"]
        entry["reference_not_converged"] = int((~well_posed[:, 1:]).sum())
    mask = torch.ones_like(refp, dtype=torch.bool) if well_posed is None else well_posed
    entry["max_abs_diff"] = _r(float((ours - refp).abs()[mask].max()) if mask.any() else 0.0, 3)
    entry["compared_predictions"] = int(mask.sum())
    entry["pred_max_abs"] = _r(float(refp[mask].abs().max()), 3)
    return entry
