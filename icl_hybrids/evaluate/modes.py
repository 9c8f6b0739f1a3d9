"""The evaluation modes: one checkpoint (own task, another task, a shift), a trajectory, a prompt dump."""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ..config import ConfigError, add_config_dirs, group_options
from ..io import atomic_write_json
from ..shifts import check_applicable, make_eval_set, parse_shift
from .args import _int, eval_settings
from .context import (
    _say,
    baseline_overrides,
    baseline_predictions,
    build_task_config,
    cache_dir_for,
    check_length,
    cross_task,
    default_out,
    eval_baseline_names,
    instantiate_task,
    load_checkpoint,
    model_fn,
    resolve_device,
    run_dir_of,
    safe_key,
    scored,
    with_points,
    write_npz,
)

#: ckpt_format values whose files come from the reference code bases (icl_hybrids/interop.py)
REFERENCE_FORMATS = ("garg", "paper_code")


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
    n = cfg.eval.get("n_points")
    if n is not None:  # length generalisation: prompts of n points, on the own task or eval_task
        n = _int("eval.n_points", n)
        task = cross_task(module, cfg.eval_task, task_ovs, n_points=n) if is_cross else with_points(mcfg["task"], n)
    else:
        task = cross_task(module, cfg.eval_task, task_ovs) if is_cross else own
    check_length(module.model, task.n_points, "eval.n_points" if n is not None else "task.n_points",
                 str(mcfg.get("name", "model")))
    check_applicable(shift, task)
    settings = eval_settings(cfg.eval, mcfg.get("eval"))
    seed = int(cfg.seed if cfg.seed is not None else mcfg.get("seed", 0))
    es = make_eval_set(task, settings["n_prompts"], seed + settings["seed_offset"], shift)
    names = eval_baseline_names(task, settings)
    return mcfg, own, is_cross, task, settings, seed, es, names, scored(task, es, settings)


def evaluate_checkpoint(cfg, task_ovs: list[str], fmt: str = "icl_hybrids") -> dict:
    """ckpt=<file> [eval_task=<task>] [eval.shift=...] [eval.n_points=...] [dump=<file.npz>]; ``fmt`` garg /
    paper_code: a reference code base's checkpoint, converted (interop.py; task=, task.<key>=, model.<key>=)."""
    from ..evaluation import summarize
    from ..plots import cross_task as cross_task_plot
    from ..plots import error_curves

    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    if fmt in REFERENCE_FORMATS:
        from ..interop import load_module

        module = load_module(cfg.ckpt, fmt, cfg.task, task_ovs, device=device)
        task_ovs = []  # they shaped the checkpoint's own task and model
    else:
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
        "n_params": module.model.n_params(), "n_points": task.n_points, "train_n_points": own.n_points,
        "ckpt_format": fmt, **summary,
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
        from ..io import read_json

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
    from ..evaluation import summarize
    from ..plots import trajectory

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
    if cfg.eval.get("n_points") is not None:
        tcfg["task"]["n_points"] = _int("eval.n_points", cfg.eval.n_points)
    task = instantiate_task(tcfg["task"])
    shift = parse_shift(cfg.eval.shift)
    check_applicable(shift, task)
    settings = eval_settings(cfg.eval, tcfg.get("eval"))
    seed = int(cfg.seed if cfg.seed is not None else tcfg.get("seed", 0))
    from ..baselines import baseline_is_slow, baseline_names

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
