"""Model selection over a swept hyperparameter without touching the test prompts:

    python -m icl_hybrids.aggregate dir=DIR best_over=optim.lr

For every task x model cell of a sweep that varied ``optim.lr`` (run directories <task>/<name>/optim.lr=<v>/seed<k>,
icl_hybrids.sweep.SweptDirname), each value's finished runs are scored from their ``checkpoints/last.ckpt``
on a *validation* prompt set: the run's own task and baselines, prompts drawn with a different seed offset
(``val_seed_offset=``, default 2 x eval.seed_offset: disjoint from the evaluation prompts that results.json's
score comes from, and from training's). The value with the best mean validation score over seeds is chosen,
and the table reports the *test* score (results.json) of that choice. Validation scores are cached per run
in ``val_score.json`` (keyed by checkpoint step, seed offset and prompt count).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from .runs import MODELS, TASKS, Cell, collect, order

VAL_FILE = "val_score.json"
DEFAULT_VAL_SEED_OFFSET = 2 * 1000003


def split_variant(variant: str, key: str) -> tuple[str | None, str]:
    """(the value of ``key`` in ``variant``, the rest of the variant): "optim.lr=0.001,x=1" -> ("0.001", "x=1")."""
    value, rest = None, []
    for item in variant.split(",") if variant else []:
        k, _, v = item.partition("=")
        if k.lstrip("+~") == key:
            value = v
        else:
            rest.append(item)
    return value, ",".join(rest)


def val_score(run, seed_offset: int = DEFAULT_VAL_SEED_OFFSET, n_prompts: int | None = None) -> float | None:
    """The run's ICL score on the validation prompts (its last.ckpt; None without a loadable checkpoint)."""
    import torch

    ckpt = run.run_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        return None
    cache = run.run_dir / VAL_FILE
    from ..lit import load_module

    module = load_module(str(ckpt))
    cfg = module.cfg
    n = int(n_prompts or cfg.eval.n_prompts)
    key = {"step": module.global_step_loaded, "seed_offset": int(seed_offset), "n_prompts": n}
    if cache.is_file():
        try:
            c = json.loads(cache.read_text())
            if all(c.get(k) == v for k, v in key.items()):
                return c["icl_score"]
        except (OSError, ValueError, KeyError):
            pass
    from omegaconf import OmegaConf

    from ..evaluation import FixedEvaluation, score_positions
    from ..io import atomic_write_json

    task = module.task
    overrides = OmegaConf.to_container(cfg.baseline, resolve=True) if cfg.get("baseline") else {}
    fe = FixedEvaluation(task, n, int(cfg.seed) + int(seed_offset), [task.baseline],
                         score_positions(task, task.n_points, cfg.eval.positions), chunk=cfg.eval.get("chunk_prompts"),
                         cache_dir=cfg.eval.get("cache_dir"), overrides=overrides)
    module.model.eval()
    with torch.no_grad():
        s = fe.score(module.model, int(cfg.eval.batch_size))
    score = s["icl_score"] if s.get("icl_score") is not None and math.isfinite(s["icl_score"]) else None
    atomic_write_json(cache, {**key, "icl_score": score})
    return score


def best_over(sweep_dir, key: str, seed_offset: int = DEFAULT_VAL_SEED_OFFSET, n_prompts: int | None = None) -> list[dict]:
    """One row per task x model (x the other swept keys): the candidates' validation scores, the chosen value
    and its test score (with the CI of its cell, as in the table)."""
    cells, _, _ = collect(sweep_dir)
    groups: dict[tuple, list[tuple[str, Cell]]] = {}
    for c in cells:
        variant = c.runs[0].variant if c.runs else ""
        value, rest = split_variant(variant, key)
        if value is None:
            continue
        name = c.runs[0].name
        groups.setdefault((c.task, name, rest), []).append((value, c))
    rows = []
    for (task, name, rest), cands in groups.items():
        vals = []
        for value, c in cands:
            scores = [val_score(r, seed_offset, n_prompts) for r in c.done if r.run_dir is not None]
            scores = [s for s in scores if s is not None]
            vals.append((value, sum(scores) / len(scores) if scores else None, len(scores), c))
        scored = [v for v in vals if v[1] is not None]
        best = max(scored, key=lambda v: v[1]) if scored else None
        st = best[3].stats() if best else {}
        rows.append({
            "task": task, "model": name + (f"[{rest}]" if rest else ""), "key": key,
            "chosen": best[0] if best else None, "val_score": best[1] if best else None,
            "test_score": st.get("score"), "test_ci_lo": st.get("prompt_ci_lo") if st.get("seed_ci_lo") is None
            else st.get("seed_ci_lo"), "test_ci_hi": st.get("prompt_ci_hi") if st.get("seed_ci_hi") is None
            else st.get("seed_ci_hi"), "n_seeds": best[2] if best else 0,
            "candidates": {v: s for v, s, _, _ in sorted(vals, key=lambda v: _num(v[0]))},
        })
    rank_t, rank_m = {t: i for i, t in enumerate(TASKS)}, {m: i for i, m in enumerate(MODELS)}
    rows.sort(key=lambda r: (rank_t.get(r["task"], len(rank_t)), r["task"],
                             rank_m.get(r["model"].split("[")[0], len(rank_m)), r["model"]))
    return rows


def _num(v: str):
    try:
        return (0, float(v), v)
    except (TypeError, ValueError):
        return (1, 0.0, str(v))


def _f(x, nd=3) -> str:
    return "—" if x is None else f"{x:.{nd}f}"


def write_best(sweep_dir, key: str, out_dir=None, seed_offset: int = DEFAULT_VAL_SEED_OFFSET,
               n_prompts: int | None = None) -> dict:
    """best_over_<key>.md and .csv in ``out_dir`` (default: the sweep directory); returns their paths and rows."""
    rows = best_over(sweep_dir, key, seed_offset, n_prompts)
    out = Path(out_dir or sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = "best_over_" + key.replace("/", "_")
    lines = [f"# Best {key} per cell: `{sweep_dir}`", "",
             f"Chosen on validation prompts (seed offset {seed_offset}, the runs' last.ckpt); the score is the "
             "test score of that choice (results.json, the evaluation prompts).", "",
             f"| task | model | best {key} | val score | test score [95% CI] | candidates (val score) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        ci = (f" [{_f(r['test_ci_lo'])}, {_f(r['test_ci_hi'])}]" if r["test_ci_lo"] is not None else "")
        cands = "; ".join(f"{v}: {_f(s)}" for v, s in r["candidates"].items())
        lines.append(f"| {r['task']} | {r['model']} | {r['chosen'] or '—'} | {_f(r['val_score'])} | "
                     f"{_f(r['test_score'])}{ci} | {cands} |")
    md = out / f"{stem}.md"
    md.write_text("\n".join(lines) + "\n")
    path_csv = out / f"{stem}.csv"
    with open(path_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task", "model", "key", "chosen", "val_score", "test_score", "test_ci_lo", "test_ci_hi",
                    "n_seeds", "candidates"])
        for r in rows:
            w.writerow([r["task"], r["model"], key, r["chosen"], r["val_score"], r["test_score"], r["test_ci_lo"],
                        r["test_ci_hi"], r["n_seeds"], json.dumps(r["candidates"])])
    return {"md": md, "csv": path_csv, "rows": rows}


__all__ = ["best_over", "order", "split_variant", "val_score", "write_best"]
