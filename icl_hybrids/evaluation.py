"""Evaluation shared by the training callback and the evaluate CLI: fixed prompts, model and baseline
predictions, per-position errors with 99% CIs, and the ICL regression score (paper Sec. 3.3)."""
from __future__ import annotations

import logging

import torch
from torch import Tensor

from .baselines import get_baseline
from .metrics import ContextErrors, ICLRegressionScore, icl_score_ci, squared_errors
from .tasks import Batch, Task

log = logging.getLogger("icl_hybrids.evaluation")


def eval_prompts(task: Task, n_prompts: int, seed: int, device="cpu") -> Batch:
    """The run's evaluation prompts: full task size, seeded independently of training."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return task.sample(n_prompts, generator=g, device=device)


@torch.no_grad()
def model_predictions(model, batch: Batch, batch_size: int = 256) -> Tensor:
    was_training = model.training
    model.eval()
    out = torch.cat([model(batch.xs[i:i + batch_size], batch.ys[i:i + batch_size])
                     for i in range(0, batch.xs.shape[0], batch_size)])
    model.train(was_training)
    return out.float()


def baseline_kwargs(name: str, task: Task) -> dict:
    """Task parameters a baseline's constructor asks for (e.g. the parity subset size ``k``)."""
    from .baselines import baseline_class
    from .models.block import accepts

    offer = {"n_dims": task.n_dims, "k": getattr(task, "sparsity", None)}
    return {k: v for k, v in offer.items() if v is not None and accepts(baseline_class(name).__init__, k)}


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


def baseline_predictions(task: Task, names, batch: Batch, cache_dir=None) -> dict[str, Tensor]:
    """Predictions of every named baseline (zero always first) on ``batch``, cached by content hash of
    (prompts, estimator, settings) under ``cache_dir`` (see ``cached_predictions``)."""
    return cached_predictions(
        names, lambda n: get_baseline(n, **baseline_kwargs(n, task))(batch.xs, batch.ys).float(),
        lambda n: _cache_key(n, baseline_kwargs(n, task), batch), cache_dir)


def score_positions(task: Task, n_points: int, positions=None) -> list[int]:
    """Default: every position the task scores (all; MQAR: the queries). ``positions`` may be a list of
    ints or a [start, stop) pair given as {"start": a, "stop": b}."""
    if positions is None:
        return torch.nonzero(task.scored_positions(n_points)).flatten().tolist()
    if isinstance(positions, dict):
        return list(range(int(positions.get("start", 0)), int(positions.get("stop", n_points))))
    return [int(p) for p in positions]


def summarize(model_preds: Tensor, baseline_preds: dict[str, Tensor], ys: Tensor, baseline: str,
              positions: list[int]) -> dict:
    """Everything results.json reports about one evaluation."""
    ys = ys.float()
    err_model = squared_errors(model_preds, ys)  # [B, N]
    errs = {k: squared_errors(v, ys) for k, v in baseline_preds.items()}
    ctx = ContextErrors()
    ctx.update(model_preds, ys)
    ce = ctx.compute()
    metric = ICLRegressionScore(positions=positions)
    metric.update(model_preds, baseline_preds[baseline], ys)
    score = metric.compute()
    _, lo, hi = icl_score_ci(err_model, errs[baseline], errs["zero"], positions=positions,
                             generator=torch.Generator().manual_seed(0))
    out = {
        "icl_score": float(score), "icl_score_ci95": [float(lo), float(hi)], "baseline": baseline,
        "score_positions": positions,
        "context_lengths": list(range(ys.shape[1])),
        "model_errors": ce["mean"].tolist(), "model_errors_ci99": [ce["lo"].tolist(), ce["hi"].tolist()],
        "baseline_errors": {}, "baseline_errors_ci99": {}, "n_prompts": int(ys.shape[0]),
    }
    for k, e in errs.items():
        c = ContextErrors()
        c.update(baseline_preds[k], ys)
        r = c.compute()
        out["baseline_errors"][k] = r["mean"].tolist()
        out["baseline_errors_ci99"][k] = [r["lo"].tolist(), r["hi"].tolist()]
    return out
