"""Out-of-distribution evaluation prompts (Garg et al. 2022, Sec. 5 / ``src/eval.py``), written afresh.

Two kinds of shift:

* **prompt shifts** change every prompt as a whole (the x distribution, the y scale, label noise):
  ``skewed``, ``half_subspace``, ``scale_x:<s>``, ``scale_y:<s>``, ``noisy_y[:<std>]``. The model and the
  baselines are run once on the shifted prompts, exactly like an in-distribution evaluation.
* **query shifts** give every position i its own query point x'_i, different from the context point x_i
  that later positions see: ``orthogonal_train_test``, ``overlapping_contexts``, ``random_quadrants``,
  ``opposite_quadrants``. Position i is scored on the prompt (x_0, y_0, ..., x_{i-1}, y_{i-1}, x'_i), so a
  query shift costs one forward pass per position (prompt lengths 1..N: about N/2 times the tokens of a
  plain evaluation); ``EvalSet.predict`` does this for models and baselines alike.

Definitions (d = task.n_dims; each transformation is drawn once per evaluation from the seeded generator):

``skewed``                x = z A, A = U diag(1/1, 1/2, ..., 1/d) U^T * c with U a random orthogonal matrix and c
                          such that tr(Cov x) = d: covariance eigenvalues ∝ 1/i^2 (Garg's ``skewed``).
``half_subspace``         as skewed with eigenvalues (1,...,1,0,...,0) (d//2 ones): x lies in a random
                          d//2-dimensional subspace, tr(Cov x) = d.
``scale_x:<s>``           x -> s x (Garg evaluates s in {1/3, 1/2, 2, 3}); y is the task's function of the
                          scaled x (linear tasks: y scales by s too).
``scale_y:<s>``           y -> s y for the same prompts (Garg scales the task's weights; identical for
                          linear tasks, and the natural generalisation for the others).
``noisy_y[:<std>]``       y -> y + N(0, std^2) on every label, the scored targets included (Garg's
                          noisy linear regression); default std 1.
``random_quadrants``      context points are |x| * sign pattern (one random quadrant per prompt); the query at
                          each position is a fresh, unflipped x (so it is in a random quadrant).
``opposite_quadrants``    as random_quadrants, the query being the negated context point (opposite quadrant).
``orthogonal_train_test`` the query at position i is x_i minus its projection on span(x_0..x_{i-1}), rescaled
                          to ||x_i||. Only positions i < d exist (the context spans R^d after d points); the
                          evaluation is truncated to min(N, d) positions (Garg leaves the later queries 0).
``overlapping_contexts``  the query at position i >= 1 is a copy of a uniformly chosen earlier context point
                          x_j, j < i (Garg's ``overlapping_train_test``); position 0 keeps x_0.

The function of each prompt is drawn once and evaluated on context and query points together, so x'_i and
x_i are labelled by the same function. x-shifts need Gaussian inputs and scalar targets (the task declares
``Task.x_distribution``): linear, sparse_linear, mlp and decision_tree; y-shifts need scalar targets (also
sparse_parity); MQAR has none. Adding a shift is one function with ``@register_shift(name, ...)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .config import ConfigError
from .tasks import Task


def gaussian_x(task: Task) -> bool:
    """x-shifts need Gaussian inputs and scalar targets (the task says: ``Task.x_distribution``)."""
    return task.x_distribution == "gaussian" and task.y_dim == 1


def scalar_y(task: Task) -> bool:
    return task.y_dim == 1


@dataclass(frozen=True)
class ShiftSpec:
    """A registered shift: ``build(task, n_prompts, seed, value, device) -> EvalSet``, whether it takes a value
    (none | required | optional), which tasks it applies to, and whether it has per-position queries."""

    name: str
    build: Callable
    value: str = "none"
    applies: Callable[[Task], bool] = gaussian_x
    per_position: bool = False
    default: float | None = None


SHIFTS: dict[str, ShiftSpec] = {}
ALIASES: dict[str, str] = {}
DEFAULT_NOISE_STD = 1.0


def register_shift(name: str, *, value: str = "none", applies: Callable[[Task], bool] = gaussian_x,
                   per_position: bool = False, default: float | None = None, aliases: tuple[str, ...] = ()):
    """Decorator: register ``fn(task, n_prompts, seed, value, device) -> EvalSet`` as ``eval.shift=<name>``.
    A user's module can add a shift the same way (imported before evaluation, e.g. from its task module)."""
    if value not in ("none", "required", "optional"):
        raise ValueError(f"register_shift({name!r}): value={value!r}: allowed: none, required, optional")

    def deco(fn):
        SHIFTS[name] = ShiftSpec(name, fn, value, applies, per_position, default)
        ALIASES.update({a: name for a in aliases})
        return fn

    return deco


@dataclass(frozen=True)
class Shift:
    name: str
    value: float | None = None

    @property
    def per_position(self) -> bool:
        return SHIFTS[self.name].per_position

    @property
    def tag(self) -> str:
        """File-name friendly label: skewed, scale_x2, noisy_y0.5."""
        return self.name if self.value is None else f"{self.name}{self.value:g}"

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value:g}"


def allowed_text() -> str:
    return ("allowed: " + ", ".join(f"{n}:<s>" if sp.value == "required" else (f"{n}[:<s>]" if sp.value == "optional" else n)
                                    for n, sp in SHIFTS.items()))


def parse_shift(spec, key: str = "eval.shift") -> Shift | None:
    """``None`` / ``"skewed"`` / ``"scale_x:2"`` / ``"scale_x=2"`` / ``"noisy_y"`` -> Shift; ConfigError otherwise."""
    if spec is None or str(spec).strip() in ("", "null", "none", "None"):
        return None
    text = str(spec).strip()
    name, sep, val = text.replace("=", ":").partition(":")
    name = ALIASES.get(name.strip(), name.strip())
    if name not in SHIFTS:
        raise ConfigError(f"{key}={text!r}: unknown shift ({allowed_text()})")
    need = SHIFTS[name].value
    if need == "none" and sep:
        raise ConfigError(f"{key}={text!r}: {name} takes no value")
    if need == "required" and not val.strip():
        raise ConfigError(f"{key}={text!r}: {name} needs a factor, e.g. {name}:2 (Garg: 0.333, 0.5, 2, 3)")
    value = None
    if val.strip():
        try:
            value = float(val)
        except ValueError:
            raise ConfigError(f"{key}={text!r}: the value after ':' must be a number") from None
        if not value > 0:
            raise ConfigError(f"{key}={text!r}: the value must be > 0")
    if value is None:
        value = SHIFTS[name].default
    return Shift(name, value)


def check_applicable(shift: Shift | None, task: Task, key: str = "eval.shift") -> None:
    if shift is not None and not SHIFTS[shift.name].applies(task):
        ok = [n for n, sp in SHIFTS.items() if sp.applies(task)]
        raise ConfigError(f"{key}={str(shift)!r}: not defined for task {task.name} "
                          f"({'allowed: ' + ', '.join(ok) if ok else 'this task has no shifts'})")


# ---- evaluation sets -------------------------------------------------------------------------------
@dataclass
class EvalSet:
    """Evaluation prompts. Without per-position queries (``xq is None``) position i of prompt b is scored on
    (xs[b, :i], ys[b, :i], xs[b, i]) against ys[b, i]; with them, on (xs[b, :i], ys[b, :i], xq[b, i]) against
    yq[b, i]. Only the first ``n_points`` positions are evaluated."""

    xs: Tensor  # [B, N, d]
    ys: Tensor  # [B, N] or [B, N, dy]
    xq: Tensor | None = None  # [B, N, d]
    yq: Tensor | None = None
    n_points: int | None = None
    shift: Shift | None = None

    def __post_init__(self):
        if self.n_points is None:
            self.n_points = self.xs.shape[1]

    @property
    def targets(self) -> Tensor:
        return (self.ys if self.xq is None else self.yq)[:, : self.n_points]

    @property
    def n_prompts(self) -> int:
        return self.xs.shape[0]

    def position_prompts(self, i: int) -> tuple[Tensor, Tensor]:
        """The prompt that scores position i (length i + 1, its last point the query)."""
        if self.xq is None:
            return self.xs[:, : i + 1], self.ys[:, : i + 1]
        return (torch.cat([self.xs[:, :i], self.xq[:, i:i + 1]], 1), torch.cat([self.ys[:, :i], self.yq[:, i:i + 1]], 1))

    def predict(self, fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """Predictions [B, n_points] (or [B, n_points, dy]) of ``fn(xs, ys) -> preds`` (a model or a baseline,
        pred i from points < i)."""
        if self.xq is None:
            return fn(self.xs[:, : self.n_points], self.ys[:, : self.n_points])
        cols = []
        for i in range(self.n_points):
            px, py = self.position_prompts(i)
            cols.append(fn(px, py)[:, -1])
        return torch.stack(cols, 1)

    def arrays(self) -> dict[str, Tensor]:
        out = {"xs": self.xs, "ys": self.ys}
        if self.xq is not None:
            out.update(xq=self.xq, yq=self.yq)
        return out


def _generator(seed: int, device="cpu") -> torch.Generator:
    from .evaluation import eval_generator

    return eval_generator(seed, device)  # the evaluation seed space, disjoint from training's


def random_transform(eigenvalues: Tensor, g: torch.Generator, normalize: bool = True) -> Tensor:
    """A = U diag(eig) U^T with U random orthogonal; normalised so that tr(A^T A) = d (x = z A, z ~ N(0, I),
    then tr(Cov x) = d)."""
    d = eigenvalues.numel()
    z = torch.randn(d, d, generator=g, device=g.device, dtype=torch.float64)
    q, r = torch.linalg.qr(z)
    u = q * torch.sign(torch.diagonal(r)).unsqueeze(0)  # Haar-distributed orthogonal matrix
    a = u @ torch.diag(eigenvalues.double()) @ u.T
    if normalize:
        a = a * (d / (eigenvalues.double() ** 2).sum()).sqrt()
    return a.float()


def orthogonal_queries(xs: Tensor, n: int) -> Tensor:
    """q_i = x_i - P_{span(x_0..x_{i-1})} x_i, rescaled to ||x_i||, for i < n (batched Gram-Schmidt, float64)."""
    b, _, d = xs.shape
    x = xs.double()
    q = torch.zeros(b, n, d, dtype=torch.float64, device=xs.device)
    basis = torch.zeros(b, d, 0, dtype=torch.float64, device=xs.device)  # orthonormal columns
    for i in range(n):
        xi = x[:, i]  # [B, d]
        r = xi - (basis @ (basis.transpose(1, 2) @ xi.unsqueeze(-1))).squeeze(-1)
        r = r - (basis @ (basis.transpose(1, 2) @ r.unsqueeze(-1))).squeeze(-1)  # re-orthogonalise
        rn = r.norm(dim=-1, keepdim=True)
        q[:, i] = r * xi.norm(dim=-1, keepdim=True) / rn.clamp_min(1e-300)
        basis = torch.cat([basis, (r / rn.clamp_min(1e-300)).unsqueeze(-1)], 2)  # x_i joins the context
    return q.to(xs.dtype)


def make_eval_set(task: Task, n_prompts: int, seed: int, shift: Shift | None = None, device="cpu") -> EvalSet:
    """The evaluation prompts of ``task`` at full size, seeded by ``seed``. With ``shift=None`` they are exactly
    the training callback's prompts (``evaluation.eval_prompts``)."""
    from .evaluation import eval_prompts

    check_applicable(shift, task)
    if shift is None:
        batch = eval_prompts(task, int(n_prompts), seed, device=device)
        return EvalSet(batch.xs, batch.ys)
    es = SHIFTS[shift.name].build(task, int(n_prompts), seed, shift.value, device)
    es.shift = shift
    return es


# ---- the shifts (each registered where it is defined) ------------------------------------------------
def _x_shift(task, b, seed, device, transform) -> EvalSet:
    """Prompts whose x are ``transform(xs)`` of the unshifted draws, labelled by the task's function."""
    g = _generator(seed, device)
    xs = transform(task.sample_xs(b, task.n_points, task.n_dims, g, device))  # the same draws as unshifted
    return EvalSet(xs, task.evaluate(xs, task.n_dims, g))


def _covariance_shift(eig_of):
    def build(task, b, seed, value, device):
        a = random_transform(eig_of(task.n_dims), _generator(seed + 2, device)).to(device)  # fixed per evaluation
        return _x_shift(task, b, seed, device, lambda xs: xs @ a)
    return build


def _half(d):
    eig = torch.zeros(d, dtype=torch.float64)
    eig[: max(d // 2, 1)] = 1.0
    return eig


register_shift("skewed")(_covariance_shift(lambda d: 1.0 / torch.arange(1, d + 1, dtype=torch.float64)))
register_shift("half_subspace", aliases=("half-subspace",))(_covariance_shift(_half))


@register_shift("scale_x", value="required")
def _scale_x(task, b, seed, value, device):
    return _x_shift(task, b, seed, device, lambda xs: xs * value)


@register_shift("scale_y", value="required", applies=scalar_y)
def _scale_y(task, b, seed, value, device):
    from .evaluation import eval_prompts

    batch = eval_prompts(task, b, seed, device=device)
    return EvalSet(batch.xs, batch.ys * value)


@register_shift("noisy_y", value="optional", applies=scalar_y, default=DEFAULT_NOISE_STD)
def _noisy_y(task, b, seed, value, device):
    from .evaluation import eval_prompts

    batch = eval_prompts(task, b, seed, device=device)
    noise = torch.randn(batch.ys.shape, generator=_generator(seed + 1, device), device=device)
    return EvalSet(batch.xs, batch.ys + value * noise)


def _query_shift(task, b, seed, device, queries) -> EvalSet:
    """Per-position queries: ``queries(xs, gq) -> (context, queries, n_eval)``; one function per prompt labels
    both point sets."""
    n, d = task.n_points, task.n_dims
    g = _generator(seed, device)
    xs = task.sample_xs(b, n, d, g, device)
    ctx, xq, n_eval = queries(xs, _generator(seed + 3, device))
    ys_all = task.evaluate(torch.cat([ctx, xq], 1), d, g)
    return EvalSet(ctx, ys_all[:, :n], xq, ys_all[:, n:], n_points=n_eval)


def _quadrants(opposite: bool):
    def queries(xs, gq):
        pattern = torch.randn(xs.shape[0], 1, xs.shape[2], generator=gq, device=xs.device).sign()
        ctx = xs.abs() * pattern
        return ctx, (-ctx if opposite else xs), xs.shape[1]
    return lambda task, b, seed, value, device: _query_shift(task, b, seed, device, queries)


register_shift("random_quadrants", per_position=True)(_quadrants(False))
register_shift("opposite_quadrants", per_position=True)(_quadrants(True))


@register_shift("orthogonal_train_test", per_position=True, aliases=("orthogonal",))
def _orthogonal(task, b, seed, value, device):
    def queries(xs, gq):
        n_eval = min(xs.shape[1], xs.shape[2])
        return xs, torch.cat([orthogonal_queries(xs, n_eval), xs[:, n_eval:]], 1), n_eval  # >= n_eval: unscored
    return _query_shift(task, b, seed, device, queries)


@register_shift("overlapping_contexts", per_position=True, aliases=("overlapping_train_test",))
def _overlapping(task, b, seed, value, device):
    def queries(xs, gq):
        bsz, n, d = xs.shape
        i = torch.arange(n, device=xs.device)
        j = (torch.rand(bsz, n, generator=gq, device=xs.device) * i.clamp_min(1)).long()  # uniform over 0..i-1
        j = torch.minimum(j, (i - 1).clamp_min(0))
        return xs, torch.gather(xs, 1, j.unsqueeze(-1).expand(-1, -1, d)), n
    return _query_shift(task, b, seed, device, queries)
