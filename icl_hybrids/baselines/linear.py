"""Least squares, ridge and lasso, batched over prompts and over all prefix lengths.

Every prefix problem ``(prompt b, prefix length i)`` uses the rows ``0..i-1`` of ``xs[b]``;
the prediction is ``<x_i, w_{b,i}>`` and position 0 (empty prefix) predicts 0.
All solves are float64; results are cast back to ``ys.dtype``.
"""

from __future__ import annotations

import torch

from .base import Baseline, check_inputs, prompt_chunks, strict_lower_mask

__all__ = [
    "LeastSquaresBaseline",
    "RidgeBaseline",
    "LassoBaseline",
    "prefix_gram",
    "lasso_homotopy",
    "lasso_cd",
]


def prefix_gram(x: torch.Tensor, y: torch.Tensor):
    """Exclusive prefix statistics of every prompt (float64).

    Returns ``G [B, N, d, d]`` with ``G[b, i] = sum_{j<i} x_j x_j^T``, ``c [B, N, d]`` with
    ``c[b, i] = sum_{j<i} y_j x_j`` and ``yy [B, N] = sum_{j<i} y_j^2``.
    """
    outer = x.unsqueeze(-1) * x.unsqueeze(-2)
    G = torch.cumsum(outer, dim=1)
    G = torch.cat([torch.zeros_like(G[:, :1]), G[:, :-1]], dim=1)
    xy = x * y.unsqueeze(-1)
    c = torch.cumsum(xy, dim=1)
    c = torch.cat([torch.zeros_like(c[:, :1]), c[:, :-1]], dim=1)
    yy = torch.cumsum(y * y, dim=1)
    yy = torch.cat([torch.zeros_like(yy[:, :1]), yy[:, :-1]], dim=1)
    return G, c, yy


class LeastSquaresBaseline(Baseline):
    """Minimum-norm least squares on every prefix (``numpy.linalg.lstsq`` / gelsd semantics).

    ``w_{b,i} = pinv(X_{b,<i}) y_{b,<i}``, computed in float64 on zero-padded prefix
    matrices ``[B*(N-1), N, d]`` (zero rows do not change the min-norm solution) with one
    batched SVD-based solve: ``torch.linalg.lstsq(driver="gelsd")`` on CPU,
    ``torch.linalg.pinv`` elsewhere (both with the relative cutoff ``max(N, d) * eps``,
    numpy's default ``rcond``). Works on GPU too (Garg's code required CPU for lstsq).
    """

    name = "least_squares"

    def __init__(self, n_dims: int | None = None, max_chunk_elems: int = 1 << 23):
        self.max_chunk_elems = int(max_chunk_elems)

    def __call__(self, xs, ys):
        check_inputs(xs, ys)
        B, N, d = xs.shape
        out = torch.zeros(B, N, dtype=torch.float64, device=xs.device)
        if N <= 1 or B == 0:
            return out.to(ys.dtype)
        M = strict_lower_mask(N, device=xs.device, dtype=torch.float64)  # [N(i), N(j)]
        for sl in prompt_chunks(B, N * N * d, self.max_chunk_elems):
            x = xs[sl].double()
            y = ys[sl].double()
            b = x.shape[0]
            Xp = x.unsqueeze(1) * M[None, :, :, None]  # [b, N(i), N(j), d]
            Yp = y.unsqueeze(1) * M[None]  # [b, N(i), N(j)]
            Xp = Xp[:, 1:].reshape(b * (N - 1), N, d)
            Yp = Yp[:, 1:].reshape(b * (N - 1), N, 1)
            if Xp.device.type == "cpu":  # LAPACK gelsd: numpy's driver, ~1.5x faster than pinv
                w = torch.linalg.lstsq(Xp, Yp, driver="gelsd").solution  # [b*(N-1), d, 1]
            else:  # lstsq on GPU only has "gels" (full rank); pinv is the min-norm solution
                w = torch.linalg.pinv(Xp) @ Yp
            w = w.reshape(b, N - 1, d)
            out[sl, 1:] = (x[:, 1:] * w).sum(-1)
        return out.to(ys.dtype)


class RidgeBaseline(Baseline):
    """Ridge regression without intercept, sklearn's ``Ridge(alpha, fit_intercept=False)``.

    Objective ``||y - Xw||^2 + alpha ||w||^2`` on every prefix;
    ``w = (X^T X + alpha I)^{-1} X^T y`` from exclusive prefix Gram matrices (float64
    Cholesky solve, batched ``[B, N, d, d]``).
    """

    def __init__(self, alpha: float = 1.0, n_dims: int | None = None):
        if alpha <= 0:
            raise ValueError("ridge alpha must be > 0 (use least_squares for alpha = 0)")
        self.alpha = float(alpha)
        self.name = "ridge" if self.alpha == 1.0 else f"ridge_alpha={alpha}"

    def __call__(self, xs, ys):
        check_inputs(xs, ys)
        B, N, d = xs.shape
        x = xs.double()
        G, c, _ = prefix_gram(x, ys.double())
        eye = torch.eye(d, dtype=torch.float64, device=xs.device)
        L = torch.linalg.cholesky(G + self.alpha * eye)
        w = torch.cholesky_solve(c.unsqueeze(-1), L).squeeze(-1)
        return (x * w).sum(-1).to(ys.dtype)  # position 0: c = 0 -> w = 0


# --------------------------------------------------------------------------- lasso solvers


def _masked_system(G: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """``G`` restricted to the active set ``A`` (identity on inactive coordinates)."""
    Af = A.to(G.dtype)
    return G * Af.unsqueeze(-1) * Af.unsqueeze(-2) + torch.diag_embed(1.0 - Af)


def _kkt_ok(G, c, lam, w, rtol: float = 1e-9):
    """Check the lasso optimality conditions of ``0.5 w^T G w - c^T w + lam ||w||_1``."""
    g = c - (G @ w.unsqueeze(-1)).squeeze(-1)
    scale = torch.maximum(lam, c.abs().amax(-1)).clamp_min(1e-300).unsqueeze(-1)
    tol = rtol * scale
    lam_ = lam.unsqueeze(-1)
    nz = w != 0
    ok_nz = ((g - lam_ * torch.sign(w)).abs() <= tol) | ~nz
    ok_z = (g.abs() <= lam_ + tol) | nz
    return (ok_nz & ok_z).all(-1) & torch.isfinite(w).all(-1)


def lasso_homotopy(G, c, lam, max_steps: int | None = None):
    """Batched exact lasso by homotopy (LARS with the lasso modification).

    Solves ``min_w 0.5 w^T G w - c^T w + lam ||w||_1`` (i.e. ``0.5||y - Xw||^2 + lam||w||_1``
    with ``G = X^T X``, ``c = X^T y``) for ``P`` independent problems ``G [P, d, d]``,
    ``c [P, d]``, ``lam [P]`` by following the regularisation path from ``max|c|`` down to
    ``lam``; each step is one masked batched solve, so all problems advance together.
    The final active set is re-solved exactly and the KKT conditions are checked.

    Returns ``(w [P, d], ok [P])``; ``ok`` is False where the path failed (singular active
    set, step cap) or the final KKT check failed; callers should fall back to
    coordinate descent (:func:`lasso_cd`) there.
    """
    P, d, _ = G.shape
    dev, dt = G.device, G.dtype
    if max_steps is None:
        max_steps = 8 * d + 32
    w = torch.zeros(P, d, dtype=dt, device=dev)
    A = torch.zeros(P, d, dtype=torch.bool, device=dev)
    s = torch.zeros(P, d, dtype=dt, device=dev)
    failed = torch.zeros(P, dtype=torch.bool, device=dev)
    ar = torch.arange(P, device=dev)

    cur = c.abs().amax(-1) if d > 0 else torch.zeros(P, dtype=dt, device=dev)
    done = cur <= lam
    j0 = c.abs().argmax(-1)
    start = ~done
    A[ar[start], j0[start]] = True
    s[ar[start], j0[start]] = torch.sign(c[ar[start], j0[start]])

    idx = ar[~done]
    for _ in range(max_steps):
        if idx.numel() == 0:
            break
        Gi, ci, wi, Ai, si, li, ti = G[idx], c[idx], w[idx], A[idx], s[idx], cur[idx], lam[idx]
        dw, info = torch.linalg.solve_ex(_masked_system(Gi, Ai), si * Ai.to(dt))
        dw = dw * Ai.to(dt)
        bad = (info != 0) | ~torch.isfinite(dw).all(-1)
        dw = torch.nan_to_num(dw)
        a = (Gi @ dw.unsqueeze(-1)).squeeze(-1)
        g = ci - (Gi @ wi.unsqueeze(-1)).squeeze(-1)
        inf = torch.tensor(float("inf"), dtype=dt, device=dev)
        lam_ = li.unsqueeze(-1)
        gp = torch.where((1 - a) > 0, (lam_ - g) / (1 - a), inf)
        gm = torch.where((1 + a) > 0, (lam_ + g) / (1 + a), inf)
        gp = torch.where(Ai | (gp <= 0), inf, gp)
        gm = torch.where(Ai | (gm <= 0), inf, gm)
        gjoin_p, jp = gp.min(-1)
        gjoin_m, jm = gm.min(-1)
        join_plus = gjoin_p <= gjoin_m
        gjoin = torch.where(join_plus, gjoin_p, gjoin_m)
        jjoin = torch.where(join_plus, jp, jm)
        gd = torch.where(Ai & (dw != 0), -wi / torch.where(dw != 0, dw, torch.ones_like(dw)), inf)
        gd = torch.where(gd > 0, gd, inf)
        gdrop, jdrop = gd.min(-1)
        gtarget = li - ti
        gamma = torch.minimum(torch.minimum(gjoin, gdrop), gtarget)
        hit_target = gtarget <= torch.minimum(gjoin, gdrop)
        is_drop = ~hit_target & (gdrop < gjoin)
        is_join = ~hit_target & ~is_drop

        wi = wi + gamma.unsqueeze(-1) * dw
        li = torch.where(hit_target, ti, li - gamma)
        rows = torch.arange(idx.numel(), device=dev)
        rd = rows[is_drop]
        wi[rd, jdrop[is_drop]] = 0.0
        Ai[rd, jdrop[is_drop]] = False
        si[rd, jdrop[is_drop]] = 0.0
        rj = rows[is_join]
        Ai[rj, jjoin[is_join]] = True
        si[rj, jjoin[is_join]] = torch.where(join_plus[is_join], 1.0, -1.0).to(dt)
        bad = bad | ~torch.isfinite(gamma)

        w[idx], A[idx], s[idx], cur[idx] = wi, Ai, si, li
        failed[idx[bad]] = True
        finished = hit_target | bad
        done[idx[finished]] = True
        idx = idx[~finished]
    failed[idx] = True  # step cap reached

    # exact re-solve on the final active set with the final signs
    Af = A.to(dt)
    wf, info = torch.linalg.solve_ex(_masked_system(G, A), (c - lam.unsqueeze(-1) * s) * Af)
    wf = torch.nan_to_num(wf * Af)
    sign_ok = ((torch.sign(wf) == s) | ~A).all(-1)
    use = (info == 0) & sign_ok & ~failed
    w = torch.where(use.unsqueeze(-1), wf, w)
    ok = use & _kkt_ok(G, c, lam, w)
    return w, ok


def lasso_cd(G, c, yy, lam, w0=None, tol: float = 1e-8, max_iter: int = 100000):
    """Batched cyclic coordinate descent for ``0.5||y - Xw||^2 + lam ||w||_1`` (Gram form).

    Same updates and stopping rule as scikit-learn's ``enet_coordinate_descent``: after a
    sweep, if ``max|dw| <= tol * max|w|`` (or ``w == 0``) the duality gap is computed and
    the problem stops when ``gap < tol * ||y||^2``; ``max_iter`` caps the sweeps. The loop
    runs over sweeps and coordinates, vectorised over the problems; converged problems
    are removed from the working set. Returns ``(w, n_iter)``.
    """
    P, d, _ = G.shape
    dev, dt = G.device, G.dtype
    w = torch.zeros(P, d, dtype=dt, device=dev) if w0 is None else w0.clone()
    n_iter = torch.full((P,), max_iter, dtype=torch.long, device=dev)
    diag = torch.diagonal(G, dim1=-2, dim2=-1)
    idx = torch.arange(P, device=dev)
    Gi, ci, yi, li, di = G, c, yy, lam, diag
    wi = w.clone()
    qi = (Gi @ wi.unsqueeze(-1)).squeeze(-1)
    for it in range(max_iter):
        if idx.numel() == 0:
            break
        safe = torch.where(di > 0, di, torch.ones_like(di))
        wmax = torch.zeros(idx.numel(), dtype=dt, device=dev)
        dwmax = torch.zeros_like(wmax)
        for j in range(d):
            old = wi[:, j]
            tmp = ci[:, j] - qi[:, j] + di[:, j] * old
            new = torch.sign(tmp) * torch.clamp(tmp.abs() - li, min=0) / safe[:, j]
            new = torch.where(di[:, j] > 0, new, torch.zeros_like(new))
            delta = new - old
            qi = qi + Gi[:, :, j] * delta.unsqueeze(-1)
            wi[:, j] = new
            dwmax = torch.maximum(dwmax, delta.abs())
            wmax = torch.maximum(wmax, new.abs())
        cand = (wmax == 0) | (dwmax <= tol * wmax) | (it == max_iter - 1)
        if bool(cand.any()):
            xtr = ci - qi  # X^T R
            wc = (wi * ci).sum(-1)
            r2 = yi - 2 * wc + (wi * qi).sum(-1)
            dual = xtr.abs().amax(-1) if d > 0 else torch.zeros_like(r2)
            over = dual > li
            const = torch.where(over, li / dual.clamp_min(1e-300), torch.ones_like(dual))
            gap = torch.where(over, 0.5 * r2 * (1 + const**2), r2)
            gap = gap + li * wi.abs().sum(-1) - const * (yi - wc)
            conv = cand & (gap < tol * yi) | (yi == 0) | (it == max_iter - 1)
            if bool(conv.any()):
                w[idx[conv]] = wi[conv]
                n_iter[idx[conv]] = min(it + 1, max_iter)
                keep = ~conv
                idx, Gi, ci, yi, li, di, wi, qi = (
                    idx[keep], Gi[keep], ci[keep], yi[keep], li[keep], di[keep], wi[keep], qi[keep]
                )
    if idx.numel():
        w[idx] = wi
    return w, n_iter


class LassoBaseline(Baseline):
    """Lasso without intercept, scikit-learn's ``Lasso(alpha, fit_intercept=False)``.

    Objective on a prefix of length ``n``: ``1/(2n) ||y - Xw||^2 + alpha ||w||_1``
    (equivalently ``0.5||y - Xw||^2 + alpha n ||w||_1``). All ``B*N`` prefix problems are
    solved together in float64: first by an exact batched homotopy
    (:func:`lasso_homotopy`, verified by the KKT conditions to ~1e-9 relative), and the rare
    problems where that fails (degenerate/duplicate columns, step cap) by batched
    coordinate descent warm-started from the homotopy iterate, with scikit-learn's stopping
    rule (``tol`` on the relative duality gap, ``max_iter`` sweeps).
    ``last_stats`` records how many problems needed the fallback.
    """

    def __init__(self, alpha: float = 0.001, tol: float = 1e-8, max_iter: int = 100000,
                 n_dims: int | None = None, max_chunk_problems: int = 1 << 15,
                 homotopy_max_steps: int | None = None):
        self.alpha = float(alpha)
        self.homotopy_max_steps = homotopy_max_steps  # None: 8 d + 32 (tests force the fallback)
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self.max_chunk_problems = int(max_chunk_problems)
        self.name = "lasso" if self.alpha == 0.001 else f"lasso_alpha={alpha}"
        self.last_stats: dict = {}

    def solve(self, G, c, yy, n):
        """Solve flattened problems ``G [P,d,d], c [P,d], yy [P], n [P]`` -> ``w [P,d]``."""
        lam = self.alpha * n
        w, ok = lasso_homotopy(G, c, lam, max_steps=self.homotopy_max_steps)
        n_fb = int((~ok).sum())
        if n_fb:
            bad = (~ok).nonzero().squeeze(-1)
            wb, _ = lasso_cd(G[bad], c[bad], yy[bad], lam[bad], w0=w[bad],
                             tol=self.tol, max_iter=self.max_iter)
            w[bad] = wb
        self.last_stats["n_problems"] = self.last_stats.get("n_problems", 0) + G.shape[0]
        self.last_stats["n_fallback_cd"] = self.last_stats.get("n_fallback_cd", 0) + n_fb
        return w

    def __call__(self, xs, ys):
        check_inputs(xs, ys)
        B, N, d = xs.shape
        self.last_stats = {}
        out = torch.zeros(B, N, dtype=torch.float64, device=xs.device)
        if N <= 1 or B == 0:
            return out.to(ys.dtype)
        n = torch.arange(N, dtype=torch.float64, device=xs.device)
        for sl in prompt_chunks(B, N, self.max_chunk_problems):
            x = xs[sl].double()
            G, c, yy = prefix_gram(x, ys[sl].double())
            b = x.shape[0]
            w = self.solve(G[:, 1:].reshape(-1, d, d), c[:, 1:].reshape(-1, d),
                           yy[:, 1:].reshape(-1), n[1:].repeat(b))
            out[sl, 1:] = (x[:, 1:] * w.reshape(b, N - 1, d)).sum(-1)
        return out.to(ys.dtype)
