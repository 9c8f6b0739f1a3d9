"""Evaluation CLI: score checkpoints (own task, other tasks, out-of-distribution prompts, whole training
trajectories) against the classical baselines, and dump evaluation prompts with baseline predictions.

    python -m icl_hybrids.evaluate ckpt=<run_dir>/checkpoints/last.ckpt
    python -m icl_hybrids.evaluate ckpt=<file> eval_task=linear            # cross-task (paper Fig. 4b)
    python -m icl_hybrids.evaluate ckpt_dir=<run_dir>                       # trajectory (paper Figs. 4a-6)
    python -m icl_hybrids.evaluate ckpt=<file> eval.shift=scale_x:2         # Garg et al.'s OOD prompts
    python -m icl_hybrids.evaluate task=linear dump=prompts.npz eval.n_prompts=256
    python -m icl_hybrids.evaluate ckpt=<file> eval.n_points=80                # length generalisation
    python -m icl_hybrids.evaluate ckpt=<garg>/state.pt ckpt_format=garg task=linear model.n_head=8

Arguments are Hydra-style key=value overrides of conf/evaluate.yaml; bad input is one line on stderr
(``error: <key>=<value>: <what is allowed>``) and exit status 2. See docs/evaluation.md.
"""
from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from ..config import ConfigError, group_options
from ..shifts import parse_shift
from .args import EVAL_KEYS, _defaults, eval_settings, parse_args
from .context import (
    baseline_overrides,
    baseline_predictions,
    cache_dir_for,
    instantiate_task,
    load_checkpoint,
    make_baseline,
    model_fn,
    resolve_device,
)
from .modes import REFERENCE_FORMATS, dump_prompts, evaluate_checkpoint, evaluate_trajectory, list_checkpoints

# Layout: args (conf/evaluate.yaml + overrides), context (checkpoints, tasks, baselines, paths), modes (the
# three evaluation modes), here: run() dispatching on the arguments and main() (the CLI, __main__.py).


def checkpoint_format(cfg) -> str | None:
    """ckpt_format, with ``auto`` resolved from the file's contents (interop.detect); None without ckpt=."""
    from ..interop import FORMATS, detect

    fmt = str(cfg.get("ckpt_format", "auto"))
    if fmt not in FORMATS:
        raise ConfigError(f"ckpt_format={fmt!r}: allowed: {', '.join(FORMATS)}")
    if cfg.ckpt_dir is not None and fmt in REFERENCE_FORMATS:
        raise ConfigError(f"ckpt_format={fmt}: a reference checkpoint is scored one file at a time (ckpt=<file>)")
    if cfg.ckpt is None:
        return None
    if not Path(str(cfg.ckpt)).is_file():
        raise ConfigError(f"ckpt={str(cfg.ckpt)!r}: checkpoint file not found")
    return detect(cfg.ckpt) if fmt == "auto" else fmt


def run(cfg, task_ovs: list[str] | None = None) -> dict:
    task_ovs = task_ovs or []
    if cfg.ckpt is not None and cfg.ckpt_dir is not None:
        raise ConfigError(f"ckpt_dir={cfg.ckpt_dir!r}: give either ckpt=<file> or ckpt_dir=<run_dir>, not both")
    if cfg.eval_task is not None and cfg.eval_task not in group_options("task"):
        raise ConfigError(f"eval_task={cfg.eval_task!r}: unknown task (allowed: {', '.join(group_options('task'))})")
    fmt = checkpoint_format(cfg)
    reference = fmt in REFERENCE_FORMATS  # a foreign checkpoint: task= and model.<key>= describe it
    if (cfg.ckpt is not None or cfg.ckpt_dir is not None) and cfg.task is not None and not reference:
        raise ConfigError(f"task={cfg.task!r}: a checkpoint fixes its task; use eval_task=<task> to evaluate it on another")
    model_ovs = [o for o in task_ovs if o.startswith("model.")]
    if model_ovs and not reference:
        raise ConfigError(f"{model_ovs[0]}: model.<key> only describes a reference checkpoint "
                          f"(ckpt_format={'|'.join(REFERENCE_FORMATS)}); ours carry their model")
    try:
        parse_shift(cfg.eval.shift)  # fail fast on a bad shift, before loading anything
    except ConfigError as e:
        # a name registered by the checkpoint's own modules (a user's shift) is known only once it is loaded
        if cfg.ckpt is None and cfg.ckpt_dir is None or "unknown shift" not in str(e):
            raise
    if cfg.ckpt is not None:
        return evaluate_checkpoint(cfg, task_ovs, fmt)
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


__all__ = ["EVAL_KEYS", "baseline_overrides", "baseline_predictions", "cache_dir_for", "dump_prompts", "eval_settings",
           "evaluate_checkpoint", "evaluate_trajectory", "instantiate_task", "list_checkpoints", "load_checkpoint",
           "main", "make_baseline", "model_fn", "parse_args", "resolve_device", "run"]
