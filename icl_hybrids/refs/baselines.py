"""The reference code bases' in-context baselines (Garg et al., dtsip/in-context-learning
``src/models.py``): one prefix, and for the scikit-learn / GD models one prompt, at a time.
dtype-generic; run on CPU as there. ``pred[:, 0] = 0`` (no context) throughout."""
from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def per_prefix(xs, ys, fit_predict: Callable) -> torch.Tensor:
    """One fit per prompt per prefix: ``pred[b, i] = fit_predict(X[b, :i], Y[b, :i], X[b, i:i+1])`` on the
    numpy arrays of ``xs`` [B, N, d] / ``ys`` [B, N] (CPU); ``pred[:, 0] = 0``; dtype and shape of ``ys``."""
    X, Y = xs.cpu().numpy(), ys.cpu().numpy()
    out = torch.zeros_like(ys.cpu())
    for i in range(1, Y.shape[1]):
        for b in range(Y.shape[0]):
            out[b, i] = float(fit_predict(X[b, :i], Y[b, :i], X[b, i:i + 1]))
    return out


def ref_least_squares(xs, ys):
    """Garg's LeastSquaresModel: torch.linalg.lstsq per prefix (batched over prompts), CPU (gelsy)."""
    xs, ys = xs.cpu(), ys.cpu()
    preds = [torch.zeros_like(ys[:, 0])]
    for i in range(1, ys.shape[1]):
        ws = torch.linalg.lstsq(xs[:, :i], ys[:, :i].unsqueeze(2)).solution
        preds.append((xs[:, i:i + 1] @ ws)[:, 0, 0])
    return torch.stack(preds, dim=1)


def ref_averaging(xs, ys):
    """Garg's AveragingModel: w = mean_{j<i} y_j x_j per prefix."""
    preds = [torch.zeros_like(ys[:, 0])]
    for i in range(1, ys.shape[1]):
        w = (xs[:, :i] * ys[:, :i].unsqueeze(-1)).mean(dim=1).unsqueeze(-1)
        preds.append((xs[:, i:i + 1] @ w)[:, 0, 0])
    return torch.stack(preds, dim=1)


def ref_knn(xs, ys, n_neighbors: int = 3):
    """Garg's NNModel (uniform weights): per prefix distances, then a per-prompt loop."""
    preds = [torch.zeros_like(ys[:, 0])]
    for i in range(1, ys.shape[1]):
        dist = (xs[:, :i] - xs[:, i:i + 1]).square().sum(dim=2).sqrt()
        ranks = dist.argsort()[:, :min(i, n_neighbors)]
        preds.append(torch.stack([y[n].mean() for y, n in zip(ys[:, :i], ranks)]))
    return torch.stack(preds, dim=1)


def ref_lasso(xs, ys, alpha: float = 0.001, tol: float = 1e-4, max_iter: int = 100000, info: dict | None = None):
    """Garg's LassoModel: sklearn Lasso(alpha, fit_intercept=False, max_iter) per prompt per prefix.
    ``info["converged"]`` ([B, N] bool) records which fits stopped before ``max_iter`` (Garg raised on
    the ConvergenceWarning; here it is recorded)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Lasso

    stopped_early = []  # one flag per fit, in per_prefix's order (prefix-major)

    def fit_predict(x, y, q):
        clf = Lasso(alpha=alpha, fit_intercept=False, max_iter=max_iter, tol=tol).fit(x, y)
        stopped_early.append(clf.n_iter_ < max_iter)
        return q[0] @ clf.coef_

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        out = per_prefix(xs, ys, fit_predict)
    if info is not None:
        B, N = ys.shape[:2]
        converged = torch.ones(ys.shape, dtype=torch.bool)
        converged[:, 1:] = torch.tensor(stopped_early, dtype=torch.bool).reshape(N - 1, B).T
        info["converged"] = converged
    return out


def ref_decision_tree(xs, ys, max_depth: int | None = 4, random_state: int = 0):
    """Garg's DecisionTreeModel: sklearn DecisionTreeRegressor(max_depth) per prompt per prefix."""
    from sklearn.tree import DecisionTreeRegressor

    return per_prefix(xs, ys, lambda x, y, q: DecisionTreeRegressor(
        max_depth=max_depth, random_state=random_state).fit(x, y).predict(q)[0])


class ParallelNetworks(nn.Module):
    """Garg's base_models.ParallelNetworks of NeuralNetwork(in, hidden, 1): a python loop over prompts.
    Built from given weights W1 [P, h, d], b1 [P, h], W2 [P, 1, h], b2 [P, 1] (``nn.Linear`` layout)."""

    def __init__(self, W1, b1, W2, b2):
        super().__init__()
        self.nets = nn.ModuleList()
        for p in range(W1.shape[0]):
            net = nn.Sequential(nn.Linear(W1.shape[2], W1.shape[1]), nn.ReLU(), nn.Linear(W1.shape[1], 1))
            net = net.to(W1.dtype)  # before the copy: float64 weights are not rounded to float32 on the way
            with torch.no_grad():
                net[0].weight.copy_(W1[p]), net[0].bias.copy_(b1[p])
                net[2].weight.copy_(W2[p]), net[2].bias.copy_(b2[p])
            self.nets.append(net)

    def forward(self, xs):
        outs = None
        for i, net in enumerate(self.nets):
            out = net(xs[i])
            if outs is None:
                outs = torch.zeros([len(self.nets)] + list(out.shape), dtype=out.dtype, device=out.device)
            outs[i] = out
        return outs


def ref_two_layer_nn(xs, ys, init, lr: float = 5e-3, steps: int = 100, batch_size: int = 100):
    """Garg's GDModel (NeuralNetwork 2-layer ReLU, Adam, MSE): a fresh ParallelNetworks per prefix,
    ``steps`` full-batch Adam steps (batch_size >= prefix), prediction at the query. ``init(i)`` gives
    the initial (W1, b1, W2, b2) of prefix ``i`` for all prompts, so the fit starts where ours does."""
    preds = [torch.zeros_like(ys[:, 0])]
    for i in range(1, ys.shape[1]):
        model = ParallelNetworks(*init(i))
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        train_xs, train_ys = xs[:, :i], ys[:, :i]
        for _ in range(steps):
            mask = torch.zeros(i, dtype=torch.bool)
            mask[torch.randperm(i)[:batch_size]] = True
            opt.zero_grad()
            loss = F.mse_loss(model(train_xs[:, mask])[:, :, 0], train_ys[:, mask])
            loss.backward()
            opt.step()
        with torch.no_grad():
            preds.append(model(xs[:, i:i + 1])[:, 0, 0])
    return torch.stack(preds, dim=1)


def matched_draws(init: dict, idx: list, n_prompts: int, n_points: int, batch_size: int):
    """The random draws of our ``TwoLayerNNBaseline`` on ``n_prompts`` prompts of ``n_points`` points --
    ``init`` (its ``init_params``: W1 [P, d, h], b1 [P, h], W2 [P, h], b2 [P]) and ``idx`` (one
    ``sample_indices`` [P, k] per step), problems P flattened prompt-major over the prefixes 1..N-1 --
    as the ``init_of(i, n, dtype)`` / ``indices_of(i, t, n)`` of :func:`ref_two_layer_nn_matched`: the
    draws of prefix ``i`` (step ``t``) for the first ``n`` prompts."""
    N = n_points

    def problems(i, n):  # rows of the problems (prompt b < n, prefix i): prompt-major flattening
        return torch.arange(min(n, n_prompts)) * (N - 1) + (i - 1)

    def init_of(i, n, dtype):  # as nn.Linear weights: W1 [P, h, d], b1 [P, h], W2 [P, 1, h], b2 [P, 1]
        p = problems(i, n)
        return tuple(t.to(dtype) for t in (init["W1"][p].transpose(1, 2), init["b1"][p],
                                           init["W2"][p].unsqueeze(1), init["b2"][p].unsqueeze(1)))

    def indices_of(i, t, n):
        return idx[t][problems(i, n), :min(batch_size, i)]

    return init_of, indices_of


def ref_two_layer_nn_matched(xs, ys, init_of, indices_of, prefixes, hidden: int, lr: float, steps: int,
                             betas, eps):
    """Garg's GDModel loop (a fresh ParallelNetworks per prefix, forward as a python loop over prompts,
    torch.optim.Adam, MSE) on the given ``prefixes``, with the initial weights and minibatches given per
    prefix (:func:`matched_draws`). Garg averages the loss over prompts and shares the minibatch; here
    each network gets its own minibatch and its own MSE (what ours does) -- the same work; the averaging
    only rescales the gradients, which Adam ignores up to eps. Predictions at prefixes not fitted are NaN."""
    preds = torch.full_like(ys, float("nan"))
    preds[:, 0] = 0.0
    n = xs.shape[0]
    for i in prefixes:
        model = ParallelNetworks(*init_of(i, n, xs.dtype))
        opt = torch.optim.Adam(model.parameters(), lr=lr, betas=betas, eps=eps)
        for t in range(steps):
            idx = indices_of(i, t, n)  # [P, bs]
            opt.zero_grad()
            loss = 0.0
            for p, net in enumerate(model.nets):
                loss = loss + F.mse_loss(net(xs[p, idx[p]])[:, 0], ys[p, idx[p]])
            loss.backward()
            opt.step()
        with torch.no_grad():
            preds[:, i] = model(xs[:, i:i + 1])[:, 0, 0]
    return preds
