"""Checkpoints, tasks, devices, baselines and output paths shared by every evaluation mode."""
from __future__ import annotations

import io
import logging
import re
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from ..config import ConfigError, group_options
from ..shifts import EvalSet, Shift
from .args import _int

log = logging.getLogger("icl_hybrids.evaluate")


# ---- models, tasks, baselines ------------------------------------------------------------------------
def load_checkpoint(path: str, key: str = "ckpt", device: str = "cpu"):
    p = Path(str(path))
    if not p.is_file():
        raise ConfigError(f"{key}={str(path)!r}: checkpoint file not found")
    from ..lit import load_module

    try:
        module = load_module(str(p), map_location=device)
    except Exception as e:  # noqa: BLE001 - any unreadable file is bad user input here
        raise ConfigError(f"{key}={str(path)!r}: not a checkpoint written by icl_hybrids training "
                          f"({type(e).__name__}: {str(e).strip().splitlines()[0][:120] if str(e).strip() else ''})") from None
    return module.to(device).eval()


def resolve_device(name: str, key: str = "device") -> str:
    name = str(name)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ConfigError(f"{key}={name!r}: allowed: cpu, cuda, cuda:<i>, auto")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{key}={name!r}: CUDA is not available here (use {key}=cpu)")
    return name


def build_task_config(name: str, task_ovs: list[str], key: str = "task") -> dict:
    from ..config import compose_config

    opts = group_options("task")
    if name not in opts:
        raise ConfigError(f"{key}={name!r}: unknown task (allowed: {', '.join(opts)})")
    try:
        cfg = compose_config([f"task={name}", *task_ovs])
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - Hydra / OmegaConf errors on task.<key>=... overrides
        raise ConfigError(f"{' '.join(task_ovs) or key + '=' + name}: {str(e).strip().splitlines()[0]}") from None
    return OmegaConf.to_container(cfg, resolve=True)


def instantiate_task(task_cfg: dict, key: str = "task"):
    from ..lit import build_task

    t = task_cfg
    for k in ("n_dims", "n_points"):
        _int(f"task.{k}", t.get(k))
    if t.get("sparsity") is not None and not 1 <= int(t["sparsity"]) <= int(t["n_dims"]):
        raise ConfigError(f"task.sparsity={t['sparsity']!r}: must be between 1 and task.n_dims={t['n_dims']}")
    try:
        return build_task(OmegaConf.create(t))
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"{key}: cannot build the task ({str(e).strip().splitlines()[0]})") from None


def cross_task(module, eval_task: str, task_ovs: list[str], n_points: int | None = None):
    """The evaluation task ``eval_task`` at the checkpoint's n_dims, with n_points = min(its own default, the
    checkpoint's n_points) unless task.n_points=... is given; ``n_points`` (eval.n_points, length
    generalisation) replaces both and is checked against the model's positions instead."""
    own = module.task
    given = {o.split("=", 1)[0] for o in task_ovs}
    ovs = [f"task.n_dims={own.n_dims}", *task_ovs]
    cfg = build_task_config(eval_task, ovs, key="eval_task")["task"]
    if n_points is not None:
        cfg["n_points"] = int(n_points)
    elif "task.n_points" not in given:
        cfg["n_points"] = min(int(cfg["n_points"]), own.n_points)
    if n_points is None and int(cfg["n_points"]) > own.n_points:
        raise ConfigError(f"task.n_points={cfg['n_points']}: must be <= the checkpoint's n_points={own.n_points} "
                          "(longer prompts: eval.n_points=<n>)")
    task = instantiate_task(cfg, key="eval_task")
    if task.y_dim != module.model.y_dim:
        raise ConfigError(f"eval_task={eval_task!r}: targets of width {task.y_dim} do not fit the checkpoint's "
                          f"read-out of width {module.model.y_dim} (trained on {own.name})")
    return task


def with_points(task_cfg: dict, n_points: int, key: str = "eval.n_points"):
    """The checkpoint's task (its config ``task_cfg``) with prompts of ``n_points`` points."""
    return instantiate_task({**task_cfg, "n_points": int(n_points)}, key=key)


def max_points(model) -> int | None:
    """The longest prompt (in points) ``model`` can read: learned absolute positions have a table of 2 x n rows
    (n: the training prompt length, or the profile's n_positions); RoPE, no positions and Mamba stages have no
    limit (None)."""
    from ..models.positional import LearnedPositional

    caps = [m.wpe.num_embeddings // 2 for m in model.modules() if isinstance(m, LearnedPositional)]
    return min(caps) if caps else None


def check_length(model, n_points: int, key: str, name: str) -> None:
    """One line when prompts of ``n_points`` points do not fit the model's learned positions."""
    cap = max_points(model)
    if cap is not None and n_points > cap:
        raise ConfigError(f"{key}={n_points}: model {name} has learned absolute positions for at most {cap} points "
                          f"(allowed: <= {cap}; RoPE, no positions or a Mamba stage evaluate at any length)")


def baseline_overrides(cfg, mcfg: dict | None) -> dict:
    """``baseline.<name>.<key>`` settings: the checkpoint's own (so ckpt=last.ckpt reproduces results.json),
    then the command line's."""
    out = {k: dict(v or {}) for k, v in ((mcfg or {}).get("baseline") or {}).items()}
    node = cfg.get("baseline")
    for k, v in ((OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node) or {}).items():
        out.setdefault(k, {}).update(v or {})
    return out


def make_baseline(name: str, task, device: str = "cpu", overrides: dict | None = None):
    from ..baselines import get_baseline
    from ..evaluation import baseline_kwargs

    try:
        kw = baseline_kwargs(name, task, overrides)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if name.startswith("ckpt:"):
        kw["device"] = device
    try:
        return get_baseline(name, **kw)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"baseline {name!r}: {e}") from None


def _cache_key(name: str, kw: dict, es: EvalSet) -> str:
    """Content hash of the prompts and the estimator's settings. For plain prompts it is the training
    callback's key (``evaluation._cache_key``), so evaluation reuses the predictions cached during training."""
    import hashlib

    from ..evaluation import _cache_key as training_key
    from ..tasks import Batch

    if es.xq is None and es.n_points == es.xs.shape[1]:
        return training_key(name, kw, Batch(es.xs, es.ys))
    h = hashlib.sha256()
    for k, v in sorted(es.arrays().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    h.update(repr((name, sorted(kw.items()), es.n_points, "per-position")).encode())
    return h.hexdigest()[:24]


def baseline_predictions(task, names: list[str], es: EvalSet, device: str = "cpu",
                         cache_dir: Path | None = None, overrides: dict | None = None) -> dict[str, torch.Tensor]:
    """Predictions of every baseline in ``names`` (zero first) on the evaluation set, computed on ``device``,
    returned on the CPU. With ``cache_dir`` they are stored as ``<cache_dir>/<name>-<hash>.pt``, keyed by the
    prompts' content, in the training callback's layout (conf/eval/default.yaml: eval.cache_dir), so the slow
    baselines (2-layer NN, trees) are fitted once per prompt set. ``zero`` and ``ckpt:`` baselines are not
    cached."""
    from ..evaluation import baseline_kwargs, cached_predictions

    moved = []  # the evaluation set on ``device``, moved once, on first use

    def compute(name: str) -> torch.Tensor:
        if not moved:
            moved.append(es if device == "cpu" else
                         EvalSet(**{**es.__dict__, **{k: v.to(device) for k, v in es.arrays().items()}}))
        t0 = time.perf_counter()
        pred = moved[0].predict(make_baseline(name, task, device, overrides)).float().cpu()
        log.info("baseline %s: %.1fs", name, time.perf_counter() - t0)
        return pred

    return cached_predictions(names, compute, lambda n: _cache_key(n, baseline_kwargs(n, task, overrides), es),
                              cache_dir)


def cache_dir_for(cfg, ckpt_cfg: dict | None, run_dir: Path | None = None) -> Path | None:
    """``baseline_cache``: null/false = off; "auto" = the checkpoint's eval.cache_dir (training's cache,
    default ``${out_root}/.baseline_cache``; off without a checkpoint); else a path."""
    v = cfg.baseline_cache
    if v in (None, False, "null", "none", "false"):
        return None
    if v == "auto":
        d = ((ckpt_cfg or {}).get("eval") or {}).get("cache_dir")
        return _training_path(Path(str(d)), ckpt_cfg, run_dir) if d else None
    return Path(str(v))


def _training_path(d: Path, ckpt_cfg: dict | None, run_dir: Path | None) -> Path | None:
    """A relative path from the training config, resolved against the directory training ran in (found by
    matching the recorded run_dir to where the checkpoint is now), so evaluating from another directory
    neither misses the cache nor creates a stray one; None (cache off) when that cannot be worked out."""
    if d.is_absolute():
        return d
    rec = Path(str((ckpt_cfg or {}).get("run_dir") or ""))
    if run_dir is not None and str(rec) not in ("", ".") and not rec.is_absolute():
        actual = Path(run_dir).resolve()
        n = len(rec.parts)
        if len(actual.parts) > n and actual.parts[-n:] == rec.parts:
            return Path(*actual.parts[:-n]) / d
    return d if d.exists() else None


def model_fn(model, batch_size: int, device: str):
    from ..evaluation import model_predictions
    from ..tasks import Batch

    def fn(xs, ys):
        return model_predictions(model, Batch(xs.to(device), ys.to(device)), batch_size).cpu()

    return fn


def eval_baseline_names(task, settings: dict) -> list[str]:
    names = [task.baseline, *(["averaging"] if task.y_dim == 1 else []), *settings["baselines"]]
    return list(dict.fromkeys(names))


def scored(task, es: EvalSet, settings: dict) -> list[int]:
    from ..evaluation import score_positions

    pos = [p for p in score_positions(task, task.n_points, settings.get("positions")) if 0 <= p < es.n_points]
    if not pos:
        hint = (f" (the task scores only its last task.n_queries={task.n_queries} positions)"
                if getattr(task, "n_queries", None) is not None else "")
        raise ConfigError(f"eval.positions={settings.get('positions')!r}: no scored position below "
                          f"{es.n_points} (the evaluated prompt length){hint}")
    return pos


# ---- outputs ---------------------------------------------------------------------------------------
def run_dir_of(ckpt_path: Path) -> Path:
    d = ckpt_path.parent
    return d.parent if d.name == "checkpoints" else d


def default_out(run_dir: Path, eval_task: str | None, shift: Shift | None) -> Path:
    tag = "__".join(t for t in (eval_task, shift.tag if shift else None) if t)
    return run_dir / "eval" / tag if tag else run_dir / "eval"


def safe_key(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_")


def write_npz(path: Path, arrays: dict[str, Any]) -> None:
    """Atomic .npz: written to a temporary file beside ``path``, then renamed."""
    import numpy as np

    from ..io import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, **{k: (v.detach().cpu().numpy() if torch.is_tensor(v) else np.asarray(v)) for k, v in arrays.items()})
    atomic_write_bytes(path, buf.getvalue())


def _say(msg: str) -> None:
    print(msg, flush=True)
