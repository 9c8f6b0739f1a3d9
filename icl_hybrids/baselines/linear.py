"""Least squares, ridge and lasso, batched over prompts and over all prefix lengths.

Every prefix problem ``(prompt b, prefix length i)`` uses the rows ``0..i-1`` of ``xs[b]``;
the prediction is ``<x_i, w_{b,i}>`` and position 0 (empty prefix) predicts 0.
All solves are float64; results are cast back to ``ys.dtype``.
"""

from __future__ import annotations

import torch

from .base import Baseline, check_inputs, prompt_chunks

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

    ``w_{b,i} = pinv(X_{b,<i}) y_{b,<i}``, all in float64, by two Cholesky-based fast paths
    with an exact SVD fallback:

    * ``i <= d`` (under-determined; ``X_{<i}`` has full row rank almost surely): the
      min-norm prediction is ``k_i^T K_i^{-1} y_{<i}`` with ``K = X X^T`` and
      ``k_i = X_{<i} x_i``. Prefix Gram matrices are leading principal submatrices of ``K``, so
      one Cholesky ``K[:m+1, :m+1] = L L^T`` per prompt (``m = min(d, N-1)``; the last diagonal
      entry is shifted, which changes only ``L[m, m]``) gives every prefix: row ``i`` of ``L``
      is ``L_i^{-1} k_i`` and ``z = L^{-1} y`` is prefix-consistent, so
      ``pred_i = sum_{j<i} L[i, j] z_j``.
    * ``i > d`` (over-determined): batched Cholesky solve of the ``d x d`` prefix normal
      equations ``(sum_{j<i} x_j x_j^T) w = sum_{j<i} y_j x_j``.
    * Prefix problems where a factorisation failed (``cholesky_ex`` info) or is poorly
      conditioned (``min diag(L)^2 / max diag(L)^2 < cond_tol``; rank-deficient or
      near-singular prefixes) are re-solved exactly on zero-padded prefix matrices (zero rows
      do not change the min-norm solution) with ``torch.linalg.lstsq(driver="gelsd")`` on CPU
      and ``torch.linalg.pinv`` elsewhere (cutoff ``max(N, d) * eps``, numpy's ``rcond``).

    ``last_stats`` records how many prefix problems needed the fallback. Device-agnostic.
    """

    name = "least_squares"

    def __init__(self, n_dims: int | None = None, max_chunk_elems: int = 1 << 23,
                 cond_tol: float = 1e-4):
        self.max_chunk_elems = int(max_chunk_elems)
        self.cond_tol = float(cond_tol)
        self.last_stats: dict = {}

    @staticmethod
    def _exact(x: torch.Tensor, y: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        """Exact min-norm predictions for problems ``(x [P,N,d], y [P,N], prefix length i [P])``."""
        P, N, d = x.shape
        keep = (torch.arange(N, device=x.device)[None] < i[:, None]).to(x.dtype)  # [P, N]
        Xp, Yp = x * keep.unsqueeze(-1), (y * keep).unsqueeze(-1)
        if Xp.device.type == "cpu":  # LAPACK gelsd: numpy's driver
            w = torch.linalg.lstsq(Xp, Yp, driver="gelsd").solution
        else:  # lstsq on GPU only has "gels" (full rank); pinv is the min-norm solution
            w = torch.linalg.pinv(Xp) @ Yp
        xq = x[torch.arange(P, device=x.device), i]  # [P, d]
        return (xq * w.squeeze(-1)).sum(-1)

    def _chunk(self, x: torch.Tensor, y: torch.Tensor):
        """Predictions ``[b, N]`` and the mask of prefix problems that need the exact path."""
        b, N, d = x.shape
        dev, dt = x.device, x.dtype
        pred = torch.zeros(b, N, dtype=dt, device=dev)
        bad = torch.zeros(b, N, dtype=torch.bool, device=dev)
        tol = self.cond_tol
        # ---- under-determined / square prefixes i = 1..m
        m = min(d, N - 1)
        if m >= 1:
            xa = x[:, : m + 1]
            K = xa @ xa.transpose(-1, -2)  # [b, m+1, m+1]
            K[:, m, m] += K[:, m, m].abs() + 1.0  # only changes L[m, m] (unused)
            L, info = torch.linalg.cholesky_ex(K)
            z = torch.linalg.solve_triangular(L[:, :m, :m], y[:, :m].unsqueeze(-1), upper=False)
            pr = (L[:, 1:, :m].tril() @ z).squeeze(-1)  # [b, m]: pr[i-1] = sum_{j<i} L[i,j] z_j
            dg = torch.diagonal(L, dim1=-2, dim2=-1)[:, :m]  # [b, m]
            dg2 = dg * dg
            ok = torch.isfinite(dg2) & (dg2 > 0)
            ok &= dg2 >= tol * torch.cummax(torch.where(ok, dg2, 0.0), -1).values
            ok &= (info == 0).unsqueeze(-1)
            ok = torch.cummin(ok.to(torch.uint8), -1).values.bool()  # prefix i uses diag[:i]
            ok &= torch.isfinite(pr)
            pred[:, 1 : m + 1] = torch.where(ok, pr, 0.0)
            bad[:, 1 : m + 1] = ~ok
        # ---- over-determined prefixes i = d+1..N-1
        if N - 1 > d:
            xo = x[:, : N - 1]
            outer = xo.unsqueeze(-1) * xo.unsqueeze(-2)  # [b, N-1, d, d]
            G = torch.cumsum(outer, 1)[:, d:]  # G[:, k] = sum_{j <= d+k} -> prefix i = d+1+k
            c = torch.cumsum(xo * y[:, : N - 1].unsqueeze(-1), 1)[:, d:]
            L, info = torch.linalg.cholesky_ex(G)
            w = torch.cholesky_solve(c.unsqueeze(-1), L).squeeze(-1)
            pr = (x[:, d + 1 :] * w).sum(-1)
            dg2 = torch.diagonal(L, dim1=-2, dim2=-1).square()
            ok = (info == 0) & torch.isfinite(dg2).all(-1)
            ok &= dg2.amin(-1) >= tol * dg2.amax(-1)
            ok &= torch.isfinite(pr)
            pred[:, d + 1 :] = torch.where(ok, pr, 0.0)
            bad[:, d + 1 :] = ~ok
        return pred, bad

    def __call__(self, xs, ys):
        check_inputs(xs, ys)
        B, N, d = xs.shape
        self.last_stats = {"n_problems": B * max(N - 1, 0), "n_fallback": 0}
        out = torch.zeros(B, N, dtype=torch.float64, device=xs.device)
        if N <= 1 or B == 0:
            return out.to(ys.dtype)
        for sl in prompt_chunks(B, N * d * d, self.max_chunk_elems):
            x = xs[sl].double()
            y = ys[sl].double()
            pred, bad = self._chunk(x, y)
            if bool(bad.any()):
                pb, pi = bad.nonzero(as_tuple=True)
                self.last_stats["n_fallback"] += int(pb.numel())
                for s in prompt_chunks(pb.numel(), N * d, self.max_chunk_elems):
                    pred[pb[s], pi[s]] = self._exact(x[pb[s]], y[pb[s]], pi[s])
            out[sl] = pred
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

    ``solver="cd"`` skips the homotopy and runs that coordinate descent from ``w = 0``: scikit-learn's
    algorithm and stopping rule, so with ``tol=1e-4`` (its default) it reproduces the reference code's
    ``Lasso(alpha, fit_intercept=False, max_iter=1e5)``, which stops early on under-determined prefixes
    (``conf/baseline/lasso.yaml``; ``lasso_exact`` is the exact solution; docs/conventions.md).
    """

    def __init__(self, alpha: float = 0.001, tol: float = 1e-8, max_iter: int = 100000,
                 n_dims: int | None = None, max_chunk_problems: int = 1 << 15,
                 homotopy_max_steps: int | None = None, solver: str = "homotopy"):
        if solver not in ("homotopy", "cd"):
            raise ValueError(f"lasso solver={solver!r}: allowed: homotopy, cd")
        self.solver = solver
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
        if self.solver == "cd":
            w, _ = lasso_cd(G, c, yy, lam, tol=self.tol, max_iter=self.max_iter)
            self.last_stats["n_problems"] = self.last_stats.get("n_problems", 0) + G.shape[0]
            return w
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
