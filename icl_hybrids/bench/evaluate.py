"""``evaluate``: seconds for one checkpoint's evaluation (prompts, model, baselines, summary)."""
from __future__ import annotations

import time

import torch

from .harness import Runner, _r, _sync, _timing
from .sizes import EVAL_MODEL


def bench_evaluate(mode: str, size: dict, runner: Runner, reps: int) -> dict:
    from hydra.utils import instantiate

    from ..config import compose_config
    from ..evaluation import baseline_predictions, eval_prompts, model_predictions, score_positions, summarize
    from ..models.model import build_model

    dev = runner.device
    mc = EVAL_MODEL[mode]
    over = ["model=gpt2", "task=linear", *[f"model.{k}={v}" for k, v in mc.items()],
            f"eval.n_prompts={size['eval_prompts']}"]
    if mode == "tiny":
        over += [f"task.n_dims={size['task']['n_dims']}", f"task.n_points={size['task']['n_points']}"]
    cfg = compose_config(over)
    task = instantiate(cfg.task)
    torch.manual_seed(0)
    model = build_model(cfg.model, n_dims=task.n_dims, y_dim=task.y_dim, max_points=task.n_points).to(dev)
    names = [task.baseline, *cfg.eval.baselines]
    parts: dict[str, list[float]] = {k: [] for k in ("prompts", "model", "baselines", "summarize", "total")}

    def once():
        t0 = time.perf_counter()
        batch = eval_prompts(task, int(cfg.eval.n_prompts), int(cfg.seed) + int(cfg.eval.seed_offset), device=dev)
        _sync(dev)
        t1 = time.perf_counter()
        mp = model_predictions(model, batch, int(cfg.eval.batch_size))
        _sync(dev)
        t2 = time.perf_counter()
        bp = baseline_predictions(task, names, batch)
        _sync(dev)
        t3 = time.perf_counter()
        summarize(mp.cpu(), {k: v.cpu() for k, v in bp.items()}, batch.ys.cpu(), task.baseline,
                  score_positions(task, task.n_points, cfg.eval.positions))
        t4 = time.perf_counter()
        for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
            parts[k].append(v)

    t = runner.compare({"evaluate": once}, reps)["evaluate"]
    for v in parts.values():
        del v[0]  # the warm-up call
    best = min(range(len(parts["total"])), key=parts["total"].__getitem__)
    return {"device": dev.type, "what": ("icl_hybrids.evaluation: eval_prompts, model_predictions, "
                                         "baseline_predictions (zero + the task's default), summarize"),
            "checkpoint": f"gpt2 {mc} with random weights (init seed 0)", "task": "linear",
            "shapes": {"n_prompts": int(cfg.eval.n_prompts), "n_points": task.n_points, "n_dims": task.n_dims,
                       "eval_batch_size": int(cfg.eval.batch_size)},
            "baselines": ["zero", *names], **_timing(t),
            "breakdown_s": {k: _r(v[best]) for k, v in parts.items() if k != "total"}}
