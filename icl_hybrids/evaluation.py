"""Evaluation shared by the training callback and the evaluate CLI: fixed prompts, model and baseline
predictions, per-position errors with 99% CIs, and the ICL regression score (paper Sec. 3.3)."""
from __future__ import annotations

import logging

import torch
from torch import Tensor

from .baselines import get_baseline
from .metrics import error_band, icl_score_ci, icl_score_ci_delta, squared_errors
from .tasks import Batch, Task

log = logging.getLogger("icl_hybrids.evaluation")


#: torch's CPU generator (mt19937) keeps only the low 32 bits of a seed, so the seed spaces are split by the
#: top bit of 32: training batches use seed * 1_000_003 + step (lit.ICLModule.generator), validated to stay
#: below 2**31 (config.validate); evaluation prompts use EVAL_SEED_BASE + seed + eval.seed_offset, in
#: [2**31, 2**32). Disjoint seeds, so no evaluation prompt is a training prompt (tests/test_eval_statistics.py).
EVAL_SEED_BASE = 1 << 31
SEED_SPACE = 1 << 31


def eval_generator(seed: int, device="cpu") -> torch.Generator:
    """A generator in the evaluation seed space (``EVAL_SEED_BASE + seed``): every evaluation draw (prompts,
    shifts, label noise) comes from one, never from a training seed."""
    if not 0 <= int(seed) < SEED_SPACE:
        raise ValueError(f"evaluation seed {seed} (seed + eval.seed_offset): must be in [0, 2**31)")
    g = torch.Generator(device=device)
    g.manual_seed(EVAL_SEED_BASE + int(seed))
    return g


def eval_chunks(task: Task, n_prompts: int, seed: int, chunk: int | None = None, device="cpu"):
    """The run's evaluation prompts, full task size, as consecutive chunks of <= ``chunk`` prompts drawn
    from one generator (a pure function of ``seed``), so memory stays bounded at any evaluation size."""
    g = eval_generator(seed, device)
    chunk = int(chunk or n_prompts)
    for start in range(0, int(n_prompts), chunk):
        yield task.sample(min(chunk, int(n_prompts) - start), generator=g, device=device)


def eval_prompts(task: Task, n_prompts: int, seed: int, device="cpu") -> Batch:
    """All evaluation prompts at once (the first chunk of ``eval_chunks`` when it holds them all)."""
    return next(eval_chunks(task, n_prompts, seed, None, device))


@torch.no_grad()
def model_predictions(model, batch: Batch, batch_size: int = 256) -> Tensor:
    was_training = model.training
    model.eval()
    out = torch.cat([model(batch.xs[i:i + batch_size], batch.ys[i:i + batch_size])
                     for i in range(0, batch.xs.shape[0], batch_size)])
    model.train(was_training)
    return out.float()


def baseline_kwargs(name: str, task: Task, overrides=None) -> dict:
    """Constructor arguments of baseline ``name`` on ``task``: its configured settings
    (``conf/baseline/<name>.yaml``), the run's ``baseline.<name>`` overrides (``overrides`` is the run
    config's whole ``baseline`` node), and the task parameters its constructor asks for (``n_dims``, the
    parity subset size ``k``). All of it enters the cache key."""
    from .baselines import baseline_class, baseline_settings
    from .models.block import accepts

    own = (overrides or {}).get(name) or {}
    kw = baseline_settings(name, own)
    offer = {"n_dims": task.n_dims, "k": getattr(task, "sparsity", None)}
    init = baseline_class(name).__init__
    kw.update({k: v for k, v in offer.items() if v is not None and accepts(init, k)})
    return kw


def _cache_key(name: str, kw: dict, batch: Batch) -> str:
    """Content hash of the prompts and the estimator's settings: equal inputs, equal predictions."""
    import hashlib

    h = hashlib.sha256()
    for t in (batch.xs, batch.ys):
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(repr((name, sorted(kw.items()))).encode())
    return h.hexdigest()[:24]


def cached_predictions(names, compute, key, cache_dir=None) -> dict[str, Tensor]:
    """``{name: compute(name)}`` for ``zero`` and every name (ordered, unique). With ``cache_dir`` a result is
    stored as ``<cache_dir>/<name>-<key(name)>.pt`` (atomic) and read back next time, so the runs of a sweep
    and the evaluate CLI that share prompts fit the expensive estimators (2-layer NN, trees) once. ``zero``
    and ``ckpt:`` baselines are not cached; a damaged entry is recomputed."""
    from pathlib import Path

    from .io import atomic_save_torch

    out = {}
    for name in dict.fromkeys(["zero", *names]):
        cacheable = cache_dir is not None and name != "zero" and not name.startswith("ckpt:")
        path = Path(cache_dir) / f"{name}-{key(name)}.pt" if cacheable else None
        if path is not None and path.is_file():
            try:
                out[name] = torch.load(path, map_location="cpu", weights_only=True).float()
                log.info("baseline %s: cached %s", name, path)
                continue
            except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed
                pass
        out[name] = compute(name)
        if path is not None:
            atomic_save_torch(out[name].cpu(), path)
    return out


def baseline_predictions(task: Task, names, batch: Batch, cache_dir=None, overrides=None) -> dict[str, Tensor]:
    """Predictions of every named baseline (zero always first) on ``batch``, cached by content hash of
    (prompts, estimator, settings) under ``cache_dir`` (see ``cached_predictions``). ``overrides``: the run
    config's ``baseline`` node (``baseline.<name>.<key>`` settings)."""
    kw = {n: baseline_kwargs(n, task, overrides) for n in dict.fromkeys(["zero", *names])}
    return cached_predictions(
        names, lambda n: get_baseline(n, **kw[n])(batch.xs, batch.ys).float(),
        lambda n: _cache_key(n, kw[n], batch), cache_dir)


def score_positions(task: Task, n_points: int, positions=None) -> list[int]:
    """Default: every position the task scores (all; MQAR: the queries). ``positions`` may be a list of
    ints or a [start, stop) pair given as {"start": a, "stop": b}."""
    if positions is None:
        return torch.nonzero(task.scored_positions(n_points)).flatten().tolist()
    if isinstance(positions, dict):
        return list(range(int(positions.get("start", 0)), int(positions.get("stop", n_points))))
    return [int(p) for p in positions]


#: Up to this many prompts the score's CI is a percentile bootstrap over prompts; beyond it (a GPU-size
#: evaluation) the delta-method interval of the ratio estimator, which needs no resampling (docs/evaluation.md).
BOOTSTRAP_MAX_PROMPTS = 20000


def summarize(model_preds: Tensor, baseline_preds: dict[str, Tensor], ys: Tensor, baseline: str,
              positions: list[int]) -> dict:
    """Everything results.json reports about one evaluation (from predictions)."""
    ys = ys.float()
    return summarize_errors(squared_errors(model_preds.float(), ys),
                            {k: squared_errors(v.float(), ys) for k, v in baseline_preds.items()}, baseline, positions)


def summarize_errors(err_model: Tensor, errs: dict[str, Tensor], baseline: str, positions: list[int]) -> dict:
    """Everything results.json reports about one evaluation, from per-prompt, per-position squared errors
    ``[B, N]`` of the model and of every baseline (``zero`` included)."""
    n_prompts = int(err_model.shape[0])
    if n_prompts <= BOOTSTRAP_MAX_PROMPTS:
        score, lo, hi = icl_score_ci(err_model, errs[baseline], errs["zero"], positions=positions,
                                     generator=torch.Generator().manual_seed(0))
        method = "bootstrap"
    else:
        score, lo, hi = icl_score_ci_delta(err_model, errs[baseline], errs["zero"], positions=positions)
        method = "delta"

    def curve(e):
        r = error_band(e)
        return r["mean"].tolist(), [r["lo"].tolist(), r["hi"].tolist()]

    mean, ci = curve(err_model)
    out = {
        "icl_score": float(score), "icl_score_ci95": [float(lo), float(hi)], "icl_score_ci_method": method,
        "baseline": baseline, "score_positions": positions,
        "context_lengths": list(range(err_model.shape[1])),
        "model_errors": mean, "model_errors_ci99": ci,
        "baseline_errors": {}, "baseline_errors_ci99": {}, "n_prompts": n_prompts,
    }
    for k, e in errs.items():
        out["baseline_errors"][k], out["baseline_errors_ci99"][k] = curve(e)
    return out


def format_score(summary: dict) -> str:
    """``0.912 +- 0.006 (95% CI 0.906..0.918, 1280 prompts)``: a score is never printed without its CI width."""
    s, (lo, hi) = summary["icl_score"], summary["icl_score_ci95"]
    if s is None or lo is None:
        return "n/a"
    return f"{s:.3f} +- {(hi - lo) / 2:.3f} (95% CI {lo:.3f}..{hi:.3f}, {summary['n_prompts']} prompts)"


class FixedEvaluation:
    """A run's evaluation: fixed prompts (regenerated chunk by chunk, never all in memory), the baselines'
    errors on them computed once (and cached on disk per chunk), and ``score(model)`` at any step."""

    def __init__(self, task: Task, n_prompts: int, seed: int, names, positions, chunk: int | None = None,
                 cache_dir=None, overrides=None):
        self.task, self.n_prompts, self.seed, self.chunk = task, int(n_prompts), int(seed), chunk
        self.positions = positions
        parts: dict[str, list[Tensor]] = {}
        for batch in eval_chunks(task, self.n_prompts, self.seed, chunk):
            preds = baseline_predictions(task, names, batch, cache_dir=cache_dir, overrides=overrides)
            for k, v in preds.items():
                parts.setdefault(k, []).append(squared_errors(v.float(), batch.ys.float()))
        self.baseline_errors = {k: torch.cat(v) for k, v in parts.items()}

    def model_errors(self, model, batch_size: int = 256, device="cpu") -> Tensor:
        out = []
        for batch in eval_chunks(self.task, self.n_prompts, self.seed, self.chunk):
            preds = model_predictions(model, Batch(batch.xs.to(device), batch.ys.to(device)), batch_size).cpu()
            out.append(squared_errors(preds, batch.ys.float()))
        return torch.cat(out)

    def score(self, model, batch_size: int = 256, device="cpu") -> dict:
        return summarize_errors(self.model_errors(model, batch_size, device), self.baseline_errors,
                                self.task.baseline, self.positions)
