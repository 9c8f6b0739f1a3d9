"""Evaluation CLI: score checkpoints (own task, other tasks, out-of-distribution prompts, whole training
trajectories) against the classical baselines, and dump evaluation prompts with baseline predictions.

    python -m icl_hybrids.evaluate ckpt=<run_dir>/checkpoints/last.ckpt
    python -m icl_hybrids.evaluate ckpt=<file> eval_task=linear            # cross-task (paper Fig. 4b)
    python -m icl_hybrids.evaluate ckpt_dir=<run_dir>                       # trajectory (paper Figs. 4a-6)
    python -m icl_hybrids.evaluate ckpt=<file> eval.shift=scale_x:2         # Garg et al.'s OOD prompts
    python -m icl_hybrids.evaluate task=linear dump=prompts.npz eval.n_prompts=256

Arguments are Hydra-style key=value overrides of conf/evaluate.yaml; bad input is one line on stderr
(``error: <key>=<value>: <what is allowed>``) and exit status 2. See docs/evaluation.md.
"""
from __future__ import annotations

import io
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from .config import CONF_DIR, ConfigError, add_config_dirs, group_options
from .io import atomic_write_json
from .shifts import EvalSet, Shift, check_applicable, make_eval_set, parse_shift

log = logging.getLogger("icl_hybrids.evaluate")

EVAL_KEYS = ("n_prompts", "batch_size", "baselines", "positions", "seed_offset", "shift")


# ---- arguments ---------------------------------------------------------------------------------------
def _defaults():
    return OmegaConf.load(CONF_DIR / "evaluate.yaml")


def parse_args(argv: list[str]) -> tuple[Any, list[str]]:
    """conf/evaluate.yaml updated by the key=value overrides; ``task.<k>=v`` / ``experiment=`` overrides are
    returned apart (they shape a task config composed from conf/config.yaml)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    cfg = _defaults()
    task_ovs: list[str] = []
    parser = OverridesParser.create()
    allowed = ", ".join([k for k in cfg if k != "eval"] + [f"eval.{k}" for k in cfg.eval] + ["task.<key>", "experiment"])
    for arg in argv:
        if arg.startswith("-"):
            raise ConfigError(f"{arg}: options are not supported; give key=value arguments (allowed keys: {allowed})")
        if "=" not in arg:
            raise ConfigError(f"{arg}: expected key=value (allowed keys: {allowed})")
        key, value = arg.split("=", 1)
        if key == "eval.shift" and "=" in value and not value.startswith(("'", '"')):
            value = value.replace("=", ":", 1)  # eval.shift=scale_x=2 -> scale_x:2
        if key.startswith("task.") or key == "experiment":
            if key == "experiment" and value not in group_options("experiment"):
                raise ConfigError(f"experiment={value!r}: unknown experiment (allowed: {', '.join(group_options('experiment'))})")
            task_ovs.append(f"{key}={value}")
            continue
        top, _, sub = key.partition(".")
        if top == "baseline" and sub.count(".") == 1:  # baseline.<name>.<key>: settings on top of the YAML
            try:
                OmegaConf.update(cfg, key, parser.parse_overrides([f"{key}={value}"])[0].value(), merge=False)
            except HydraException as e:
                raise ConfigError(f"{key}={value}: {str(e).strip().splitlines()[0]}") from None
            continue
        if top not in cfg or top == "baseline" or (top == "eval") != bool(sub) or (sub and sub not in cfg.eval):
            raise ConfigError(f"{key}={value}: unknown key (allowed: {allowed})")
        try:
            parsed = parser.parse_overrides([f"{key}={value}"])[0].value()
        except HydraException as e:
            raise ConfigError(f"{key}={value}: {str(e).strip().splitlines()[0]}") from None
        OmegaConf.update(cfg, key, parsed, merge=False)
    return cfg, task_ovs


def _int(key: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}={value!r}: must be an integer >= {minimum}")
    return value


def eval_settings(cli_eval, ckpt_eval: dict | None) -> dict:
    """conf/eval/default.yaml <- the checkpoint's eval section <- the command line (non-null values)."""
    s = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "eval" / "default.yaml"))
    for k in EVAL_KEYS:
        if ckpt_eval and k in ckpt_eval:
            s[k] = ckpt_eval[k]
    for k in EVAL_KEYS:
        v = cli_eval.get(k)
        if v is not None:
            s[k] = OmegaConf.to_container(v) if OmegaConf.is_config(v) else v
    s["n_prompts"] = _int("eval.n_prompts", s["n_prompts"])
    s["batch_size"] = _int("eval.batch_size", s["batch_size"])
    s["seed_offset"] = _int("eval.seed_offset", s["seed_offset"], minimum=0)
    b = s.get("baselines") or []
    if isinstance(b, str):
        b = [b]
    from .baselines import baseline_names

    for name in b:
        if not (isinstance(name, str) and (name in baseline_names() or name.startswith("ckpt:"))):
            raise ConfigError(f"eval.baselines={name!r}: allowed: {', '.join(baseline_names())} or ckpt:<path>")
        if name.startswith("ckpt:") and not Path(name[5:]).is_file():
            raise ConfigError(f"eval.baselines={name!r}: checkpoint file not found")
    s["baselines"] = list(b)
    return s


# ---- models, tasks, baselines ------------------------------------------------------------------------
def load_checkpoint(path: str, key: str = "ckpt", device: str = "cpu"):
    p = Path(str(path))
    if not p.is_file():
        raise ConfigError(f"{key}={str(path)!r}: checkpoint file not found")
    from .lit import load_module

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
    from .config import compose_config

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
    from .lit import build_task

    t = task_cfg
    for k in ("n_dims", "n_points"):
        _int(f"task.{k}", t.get(k))
    if t.get("sparsity") is not None and not 1 <= int(t["sparsity"]) <= int(t["n_dims"]):
        raise ConfigError(f"task.sparsity={t['sparsity']!r}: must be between 1 and task.n_dims={t['n_dims']}")
    try:
        return build_task(OmegaConf.create(t))
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"{key}: cannot build the task ({str(e).strip().splitlines()[0]})") from None


def cross_task(module, eval_task: str, task_ovs: list[str]):
    """The evaluation task ``eval_task`` at the checkpoint's n_dims, with n_points = min(its own default, the
    checkpoint's n_points) unless task.n_points=... is given."""
    own = module.task
    given = {o.split("=", 1)[0] for o in task_ovs}
    ovs = [f"task.n_dims={own.n_dims}", *task_ovs]
    cfg = build_task_config(eval_task, ovs, key="eval_task")["task"]
    if "task.n_points" not in given:
        cfg["n_points"] = min(int(cfg["n_points"]), own.n_points)
    if int(cfg["n_points"]) > own.n_points:
        raise ConfigError(f"task.n_points={cfg['n_points']}: must be <= the checkpoint's n_points={own.n_points}")
    task = instantiate_task(cfg, key="eval_task")
    if task.y_dim != module.model.y_dim:
        raise ConfigError(f"eval_task={eval_task!r}: targets of width {task.y_dim} do not fit the checkpoint's "
                          f"read-out of width {module.model.y_dim} (trained on {own.name})")
    return task


def baseline_overrides(cfg, mcfg: dict | None) -> dict:
    """``baseline.<name>.<key>`` settings: the checkpoint's own (so ckpt=last.ckpt reproduces results.json),
    then the command line's."""
    out = {k: dict(v or {}) for k, v in ((mcfg or {}).get("baseline") or {}).items()}
    node = cfg.get("baseline")
    for k, v in ((OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node) or {}).items():
        out.setdefault(k, {}).update(v or {})
    return out


def make_baseline(name: str, task, device: str = "cpu", overrides: dict | None = None):
    from .baselines import get_baseline
    from .evaluation import baseline_kwargs

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

    from .evaluation import _cache_key as training_key
    from .tasks import Batch

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
    from .evaluation import baseline_kwargs, cached_predictions

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
    from .evaluation import model_predictions
    from .tasks import Batch

    def fn(xs, ys):
        return model_predictions(model, Batch(xs.to(device), ys.to(device)), batch_size).cpu()

    return fn


def eval_baseline_names(task, settings: dict) -> list[str]:
    names = [task.baseline, *(["averaging"] if task.y_dim == 1 else []), *settings["baselines"]]
    return list(dict.fromkeys(names))


def scored(task, es: EvalSet, settings: dict) -> list[int]:
    from .evaluation import score_positions

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

    from .io import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, **{k: (v.detach().cpu().numpy() if torch.is_tensor(v) else np.asarray(v)) for k, v in arrays.items()})
    atomic_write_bytes(path, buf.getvalue())


def _say(msg: str) -> None:
    print(msg, flush=True)


# ---- modes -----------------------------------------------------------------------------------------
def _eval_context(cfg, module, task_ovs: list[str], shift):
    """What every checkpoint mode derives from the (reference) checkpoint: its config, its own task, the
    task evaluated (own or eval_task), settings, seed, the evaluation set, baseline names and positions."""
    mcfg = OmegaConf.to_container(module.cfg, resolve=True)
    add_config_dirs(mcfg.get("config_dirs"))  # the user config directories the checkpoint was trained with
    own = module.task
    is_cross = cfg.eval_task is not None and cfg.eval_task != own.name
    if task_ovs and not is_cross:
        raise ConfigError(f"{task_ovs[0]}: task.<key> overrides only apply with eval_task=<task> or without a checkpoint")
    task = cross_task(module, cfg.eval_task, task_ovs) if is_cross else own
    check_applicable(shift, task)
    settings = eval_settings(cfg.eval, mcfg.get("eval"))
    seed = int(cfg.seed if cfg.seed is not None else mcfg.get("seed", 0))
    es = make_eval_set(task, settings["n_prompts"], seed + settings["seed_offset"], shift)
    names = eval_baseline_names(task, settings)
    return mcfg, own, is_cross, task, settings, seed, es, names, scored(task, es, settings)


def evaluate_checkpoint(cfg, task_ovs: list[str]) -> dict:
    """ckpt=<file> [eval_task=<task>] [eval.shift=...] [dump=<file.npz>]."""
    from .evaluation import summarize
    from .plots import cross_task as cross_task_plot
    from .plots import error_curves

    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    module = load_checkpoint(cfg.ckpt, device=device)
    shift = parse_shift(cfg.eval.shift)  # after the checkpoint's modules (a user's registered shifts) are imported
    mcfg, own, is_cross, task, settings, seed, es, names, positions = _eval_context(cfg, module, task_ovs, shift)

    ckpt_path = Path(cfg.ckpt).resolve()
    run_dir = run_dir_of(ckpt_path)
    bdev, cache = resolve_device(cfg.baseline_device, "baseline_device"), cache_dir_for(cfg, mcfg, run_dir)
    t0 = time.perf_counter()
    base = baseline_predictions(task, names, es, bdev, cache, baseline_overrides(cfg, mcfg))
    t_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    preds = es.predict(model_fn(module.model, settings["batch_size"], device))
    t_model = time.perf_counter() - t0
    summary = summarize(preds, base, es.targets, task.baseline, positions)

    out = Path(cfg.out) if cfg.out else default_out(run_dir, task.name if is_cross else None, shift)
    res = {
        "task": task.name, "task_config": task.describe(), "train_task": own.name,
        "train_task_config": own.describe(), "model": str(mcfg.get("name", "model")), "seed": seed,
        "step": int(getattr(module, "global_step_loaded", 0)), "ckpt": str(ckpt_path),
        "shift": str(shift) if shift else None, "eval_seed": seed + settings["seed_offset"],
        "n_params": module.model.n_params(), **summary,
    }
    res.update(_status(preds, res["icl_score"], run_dir))
    if is_cross:  # the same model on its training task, for the cross-task figure
        own_settings = {"positions": (mcfg.get("eval") or {}).get("positions")}
        own_es = make_eval_set(own, settings["n_prompts"], seed + settings["seed_offset"])
        own_base = baseline_predictions(own, [own.baseline], own_es, bdev, cache, baseline_overrides(cfg, mcfg))
        own_preds = own_es.predict(model_fn(module.model, settings["batch_size"], device))
        s = summarize(own_preds, own_base, own_es.targets, own.baseline, scored(own, own_es, own_settings))
        res.update(train_task_icl_score=s["icl_score"], train_task_baseline=own.baseline,
                   train_task_model_errors=s["model_errors"], train_task_model_errors_ci99=s["model_errors_ci99"],
                   train_task_context_lengths=s["context_lengths"])
    res.update(device=device, eval_time_s={"baselines": t_base, "model": t_model,
                                           "total": time.perf_counter() - t_start})
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results_eval.json", res)
    files = [out / "results_eval.json"]
    if cfg.plot:
        what = f"{res['model']} step {res['step']} on {task.name}" + (f" ({shift})" if shift else "")
        files.append(error_curves(res, out / "error_curves.png", title=what))
        if is_cross:
            files.append(cross_task_plot(res, out / "cross_task.png"))
    if cfg.dump:
        arrays = {**es.arrays(), "pred_model": preds, **{f"pred_{safe_key(k)}": v for k, v in base.items()}}
        write_npz(Path(cfg.dump), arrays)
        files.append(Path(cfg.dump))
    what = f"{res['model']} step {res['step']} on {task.name}{f' ({shift})' if shift else ''}"
    if res["status"] == "diverged":
        _say(f"{what}: diverged (the model's predictions are not finite; icl_score=null)")
    else:
        lo, hi = res["icl_score_ci95"]
        _say(f"{what}: icl_score={res['icl_score']:.4f} [95% CI {lo:.4f}, {hi:.4f}] vs {task.baseline} "
             f"({settings['n_prompts']} prompts, {res['eval_time_s']['total']:.1f}s)")
    if res.get("run_status") == "diverged":
        _say(f"note: this run diverged at step {res.get('run_diverged_at_step')} (its results.json); "
             "this is its last finite checkpoint")
    for f in files:
        _say(f"wrote {f}")
    return res


def _finite(v) -> bool:
    import math

    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _status(preds, score, run_dir: Path | None) -> dict:
    """status: "diverged" when the model's predictions (or the score) are not finite, else "ok"; plus the
    training run's own status when its results.json says it diverged."""
    out = {"status": "ok" if bool(torch.isfinite(preds).all()) and _finite(score) else "diverged"}
    try:
        from .io import read_json

        rr = read_json(Path(run_dir) / "results.json") if run_dir is not None else None
    except (OSError, ValueError):
        rr = None
    if isinstance(rr, dict) and rr.get("status") == "diverged":
        out.update(run_status="diverged", run_diverged_at_step=rr.get("diverged_at_step"))
    return out


def list_checkpoints(path: str) -> list[Path]:
    p = Path(str(path))
    d = p / "checkpoints" if (p / "checkpoints").is_dir() else p
    if not d.is_dir():
        raise ConfigError(f"ckpt_dir={str(path)!r}: no such directory (give a run directory or its checkpoints/)")
    files = sorted(d.glob("*.ckpt"))
    if not files:
        raise ConfigError(f"ckpt_dir={str(path)!r}: no *.ckpt files in {d}")
    return files


def _step_of(path: Path) -> int | None:
    m = re.fullmatch(r"step(\d+)\.ckpt", path.name)
    return int(m.group(1)) if m else None


def evaluate_trajectory(cfg, task_ovs: list[str]) -> dict:
    """ckpt_dir=<run_dir> [eval_task=<task>] [eval.shift=...]: every checkpoint on the same prompts."""
    from .evaluation import summarize
    from .plots import trajectory

    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    files = list_checkpoints(cfg.ckpt_dir)
    # the newest checkpoint (last.ckpt, else the highest step<k>.ckpt) fixes the task, settings and prompts
    steps_files = sorted((f for f in files if _step_of(f) is not None), key=_step_of)
    others = [f for f in files if _step_of(f) is None]
    last = [f for f in others if f.name == "last.ckpt"]
    # a checkpoint that does not load is skipped with a warning, not the end of the whole trajectory
    order = [*last, *reversed(steps_files), *[f for f in others if f not in last]]
    ref = ref_file = None
    bad: set[Path] = set()
    for f in order:
        try:
            ref, ref_file = load_checkpoint(str(f), key="ckpt_dir", device=device), f
            break
        except ConfigError as e:
            print(f"warning: skipping {f}: {str(e).split(': ', 1)[-1]}", file=sys.stderr)
            bad.add(f)
    if ref is None:
        raise ConfigError(f"ckpt_dir={str(cfg.ckpt_dir)!r}: none of the {len(files)} checkpoints loads")
    shift = parse_shift(cfg.eval.shift)  # after the checkpoint's modules (a user's registered shifts) are imported
    mcfg, own, is_cross, task, settings, seed, es, names, positions = _eval_context(cfg, ref, task_ovs, shift)
    run_dir = run_dir_of(files[0])
    base = baseline_predictions(task, names, es, resolve_device(cfg.baseline_device, "baseline_device"),
                                cache_dir_for(cfg, mcfg, run_dir), baseline_overrides(cfg, mcfg))

    per_step: dict[int, dict] = {}
    paths: dict[int, str] = {}
    for f in steps_files + others:
        if f in bad:
            continue
        try:
            module = ref if f == ref_file else load_checkpoint(str(f), key="ckpt_dir", device=device)
        except ConfigError as e:
            print(f"warning: skipping {f}: {str(e).split(': ', 1)[-1]}", file=sys.stderr)
            continue
        if module.task.describe() != own.describe():
            raise ConfigError(f"ckpt_dir={str(cfg.ckpt_dir)!r}: {f.name} holds a different task "
                              f"({module.task.describe()} vs {own.describe()})")
        step = int(getattr(module, "global_step_loaded", _step_of(f) or 0))
        if step in per_step:  # last.ckpt duplicates the newest step<k>.ckpt
            continue
        preds = es.predict(model_fn(module.model, settings["batch_size"], device))
        per_step[step] = summarize(preds, base, es.targets, task.baseline, positions)
        paths[step] = str(f.resolve())
        sc = per_step[step]["icl_score"]
        _say(f"step {step}: icl_score={sc:.4f}" if _finite(sc) and bool(torch.isfinite(preds).all())
             else f"step {step}: diverged (non-finite predictions)")
    steps = sorted(per_step)
    first = per_step[steps[0]]
    traj = {
        "task": task.name, "task_config": task.describe(), "train_task": own.name, "model": str(mcfg.get("name", "model")),
        "seed": seed, "shift": str(shift) if shift else None, "baseline": task.baseline,
        "eval_seed": seed + settings["seed_offset"], "n_prompts": settings["n_prompts"], "score_positions": positions,
        "steps": steps, "checkpoints": {str(s): paths[s] for s in steps},
        "icl_scores": {str(s): per_step[s]["icl_score"] for s in steps},
        "icl_score_ci95": {str(s): per_step[s]["icl_score_ci95"] for s in steps},
        "context_lengths": first["context_lengths"],
        "model_errors": {str(s): per_step[s]["model_errors"] for s in steps},
        "model_errors_ci99": {str(s): per_step[s]["model_errors_ci99"] for s in steps},
        "baseline_errors": first["baseline_errors"], "baseline_errors_ci99": first["baseline_errors_ci99"],
        "device": device, "eval_time_s": time.perf_counter() - t_start,
    }
    out = Path(cfg.out) if cfg.out else default_out(run_dir, task.name if is_cross else None, shift)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "trajectory.json", traj)
    written = [out / "trajectory.json"]
    if cfg.plot:
        cross = f" (trained on {own.name})" if is_cross else ""
        written.append(trajectory(traj, out / "trajectory.png",
                                  title=f"{traj['model']} checkpoints on {task.name}{cross}"
                                        + (f" ({shift})" if shift else "")))
    _say(f"{len(steps)} checkpoints in {traj['eval_time_s']:.1f}s")
    for f in written:
        _say(f"wrote {f}")
    return traj


def dump_prompts(cfg, task_ovs: list[str]) -> dict:
    """task=<task> dump=<file.npz>: evaluation prompts and the predictions of every applicable baseline."""
    if cfg.task is None:
        raise ConfigError(f"dump={cfg.dump!r}: needs task=<task> (allowed: {', '.join(group_options('task'))}) or ckpt=<file>")
    tcfg = build_task_config(str(cfg.task), task_ovs)
    task = instantiate_task(tcfg["task"])
    shift = parse_shift(cfg.eval.shift)
    check_applicable(shift, task)
    settings = eval_settings(cfg.eval, tcfg.get("eval"))
    seed = int(cfg.seed if cfg.seed is not None else tcfg.get("seed", 0))
    from .baselines import baseline_is_slow, baseline_names

    if settings["baselines"] and cfg.eval.baselines is not None:
        names = ["zero", *settings["baselines"]]
    else:
        names = [b for b in task.applicable_baselines if b in baseline_names()]
        limit = int(cfg.slow_baselines_max_prompts)
        if settings["n_prompts"] > limit:
            skipped = [b for b in names if baseline_is_slow(b)]
            names = [b for b in names if not baseline_is_slow(b)]
            if skipped:
                print(f"note: skipping {', '.join(skipped)} for {settings['n_prompts']} > slow_baselines_max_prompts="
                      f"{limit} prompts (name them in eval.baselines=[...] to compute them)", file=sys.stderr)
    es = make_eval_set(task, settings["n_prompts"], seed + settings["seed_offset"], shift)
    t0 = time.perf_counter()
    cache = cache_dir_for(cfg, None)
    preds = baseline_predictions(task, list(dict.fromkeys(names)), es,
                                 resolve_device(cfg.baseline_device, "baseline_device"), cache,
                                 baseline_overrides(cfg, None))
    arrays = {**es.arrays(), **{f"pred_{safe_key(k)}": v for k, v in preds.items()}}
    path = Path(str(cfg.dump))
    write_npz(path, arrays)
    _say(f"{task.name}: {settings['n_prompts']} prompts, baselines {', '.join(preds)} "
         f"({time.perf_counter() - t0:.1f}s) -> wrote {path}")
    return {"task": task.name, "path": str(path), "keys": list(arrays), "seed": seed + settings["seed_offset"]}


def run(cfg, task_ovs: list[str] | None = None) -> dict:
    task_ovs = task_ovs or []
    if cfg.ckpt is not None and cfg.ckpt_dir is not None:
        raise ConfigError(f"ckpt_dir={cfg.ckpt_dir!r}: give either ckpt=<file> or ckpt_dir=<run_dir>, not both")
    if cfg.eval_task is not None and cfg.eval_task not in group_options("task"):
        raise ConfigError(f"eval_task={cfg.eval_task!r}: unknown task (allowed: {', '.join(group_options('task'))})")
    if (cfg.ckpt is not None or cfg.ckpt_dir is not None) and cfg.task is not None:
        raise ConfigError(f"task={cfg.task!r}: a checkpoint fixes its task; use eval_task=<task> to evaluate it on another")
    try:
        parse_shift(cfg.eval.shift)  # fail fast on a bad shift, before loading anything
    except ConfigError as e:
        # a name registered by the checkpoint's own modules (a user's shift) is known only once it is loaded
        if cfg.ckpt is None and cfg.ckpt_dir is None or "unknown shift" not in str(e):
            raise
    if cfg.ckpt is not None and not Path(str(cfg.ckpt)).is_file():
        raise ConfigError(f"ckpt={str(cfg.ckpt)!r}: checkpoint file not found")
    if cfg.ckpt is not None:
        return evaluate_checkpoint(cfg, task_ovs)
    if cfg.ckpt_dir is not None:
        if cfg.dump:
            raise ConfigError(f"dump={cfg.dump!r}: not available with ckpt_dir (use ckpt=<file>)")
        return evaluate_trajectory(cfg, task_ovs)
    if cfg.dump is not None:
        return dump_prompts(cfg, task_ovs)
    if cfg.task is not None:
        raise ConfigError(f"task={cfg.task!r}: without a checkpoint only dump=<file.npz> is available")
    raise ConfigError("ckpt=<file>: nothing to do; give ckpt=<file>, ckpt_dir=<run_dir> or task=<task> dump=<file.npz>")


def main(argv: list[str] | None = None) -> int:
    """In-process entry point: returns the exit status (0 ok, 2 bad input, with one line on stderr)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        print("\nkeys (conf/evaluate.yaml):\n" + OmegaConf.to_yaml(_defaults()))
        return 0
    try:
        cfg, task_ovs = parse_args(argv)
        res = run(cfg, task_ovs)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # an unwritable out=, a full disk: one line, not a traceback
        where = e.filename or "output"
        print(f"error: cannot write {where}: {e.strerror or e} (choose another out= or free space)", file=sys.stderr)
        return 2
    if isinstance(res, dict) and res.get("status") == "diverged":
        print(f"error: {res.get('ckpt')}: diverged (non-finite predictions; results written with icl_score=null)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
