"""Typed schema and validation of a composed config.

Every section that training reads is described by a dataclass; OmegaConf merges the user's values into
it (type errors: "trainer.max_steps='abc' ..."), then ``RULES`` check ranges and cross-field constraints.
All problems surface as one ``ConfigError`` line: the key, the bad value and what is allowed.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


class ConfigError(ValueError):
    """A user-facing, one-line configuration error."""


# ---- schema ----------------------------------------------------------------------------------------
@dataclass
class TaskSchema:
    n_dims: int = 20
    n_points: int = 41
    sparsity: Optional[int] = None
    curriculum_points_start: int = 11
    curriculum_points_inc: int = 0
    baseline: str = "zero"


@dataclass
class ModelSchema:
    d_model: int = 256
    n_layer: int = 12
    n_head: int = 8
    init_std: float = 0.02


@dataclass
class ScheduleSchema:
    start: int = 1
    end: int = 1
    inc: int = 0
    interval: int = 1


@dataclass
class CurriculumSchema:
    enabled: bool = True
    dims: ScheduleSchema = field(default_factory=ScheduleSchema)
    points: ScheduleSchema = field(default_factory=ScheduleSchema)


@dataclass
class OptimSchema:
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    batch_size: int = 64
    foreach: bool = True
    fused: bool = False


@dataclass
class TrainerSchema:
    max_steps: int = 500000
    accelerator: str = "auto"
    devices: int = 1
    precision: str = "32-true"
    ckpt_every_n_steps: int = 50000
    last_ckpt_every_n_steps: int = 1000
    log_every_n_steps: int = 100
    gradient_clip_val: Optional[float] = None
    progress_bar: bool = True
    num_threads: Optional[int] = None
    compile: bool = False
    deterministic: bool = False


@dataclass
class EvalSchema:
    n_prompts: int = 1280
    batch_size: int = 256
    every_n_steps: int = 10000
    baselines: list[str] = field(default_factory=list)
    positions: Optional[Any] = None
    seed_offset: int = 1000003
    shift: Optional[str] = None
    cache_dir: Optional[str] = None


SCHEMA = {"task": TaskSchema, "model": ModelSchema, "curriculum": CurriculumSchema, "optim": OptimSchema,
          "trainer": TrainerSchema, "eval": EvalSchema}


def _typed(section: str, node) -> Any:
    """Merge the schema's fields of ``node`` into the dataclass (extra keys are left to their owner)."""
    schema = SCHEMA[section]
    names = {f.name for f in dataclasses.fields(schema)}
    sub = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k in names}
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), sub)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        value = getattr(e, "value", None)
        ftype = {f.name: f.type for f in dataclasses.fields(schema)}.get(key.split(".")[0], "?")
        raise ConfigError(f"{section}.{key}={value!r}: expected {getattr(ftype, '__name__', ftype)}") from None
    return OmegaConf.to_object(merged)


def _need(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {allowed}")


def validate(cfg: DictConfig) -> dict[str, Any]:
    """Return the typed sections; raise ConfigError on the first problem."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{getattr(e, 'full_key', '?')}: {str(e).splitlines()[0]}") from None
    t = {s: _typed(s, cfg[s]) for s in SCHEMA}
    task, model, cur, opt, tr, ev = (t[s] for s in ("task", "model", "curriculum", "optim", "trainer", "eval"))

    _need(task.n_dims >= 1, "task.n_dims", task.n_dims, "must be an integer >= 1")
    _need(task.n_points >= 1, "task.n_points", task.n_points, "must be an integer >= 1")
    if task.sparsity is not None:
        _need(1 <= task.sparsity <= task.n_dims, "task.sparsity", task.sparsity,
              f"must be between 1 and task.n_dims={task.n_dims}")
    for k in ("d_model", "n_layer", "n_head"):
        _need(getattr(model, k) >= 1, f"model.{k}", getattr(model, k), "must be an integer >= 1")
    _need(model.d_model % model.n_head == 0, "model.n_head", model.n_head,
          f"must divide model.d_model={model.d_model}")
    _need(opt.lr > 0, "optim.lr", opt.lr, "must be > 0")
    _need(opt.batch_size >= 1, "optim.batch_size", opt.batch_size, "must be an integer >= 1")
    _need(opt.weight_decay >= 0, "optim.weight_decay", opt.weight_decay, "must be >= 0")
    _need(tr.max_steps >= 1, "trainer.max_steps", tr.max_steps, "must be an integer >= 1")
    for k in ("ckpt_every_n_steps", "last_ckpt_every_n_steps", "log_every_n_steps"):
        _need(getattr(tr, k) >= 1, f"trainer.{k}", getattr(tr, k), "must be an integer >= 1")
    _need(ev.n_prompts >= 1, "eval.n_prompts", ev.n_prompts, "must be an integer >= 1")
    _need(ev.every_n_steps >= 1, "eval.every_n_steps", ev.every_n_steps, "must be an integer >= 1")
    if cur.enabled:
        for part, size, key in (("dims", task.n_dims, "task.n_dims"), ("points", task.n_points, "task.n_points")):
            s = getattr(cur, part)
            _need(1 <= s.start <= size, f"curriculum.{part}.start", s.start, f"must be between 1 and {key}={size}")
            _need(s.start <= s.end <= size, f"curriculum.{part}.end", s.end,
                  f"must be between curriculum.{part}.start={s.start} and {key}={size}")
            _need(s.inc >= 0, f"curriculum.{part}.inc", s.inc, "must be >= 0")
            _need(s.interval >= 1, f"curriculum.{part}.interval", s.interval, "must be >= 1")
    from .baselines import BASELINES

    for b in [task.baseline, *ev.baselines]:
        _need(b in BASELINES or b.startswith("ckpt:"), "task.baseline" if b == task.baseline else "eval.baselines",
              b, f"allowed: {', '.join(sorted(BASELINES))} or ckpt:<path>")
        if b.startswith("ckpt:"):
            _need(Path(b[5:]).is_file(), "task.baseline", b, "checkpoint file not found")
    return t


def group_options(group: str) -> list[str]:
    d = CONF_DIR / group
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def check_group_choices(overrides: list[str]) -> None:
    """Unknown group choices (task=foo, model/ffn=bar, experiment=baz) as one-line errors, before Hydra."""
    for ov in overrides:
        if "=" not in ov or ov.startswith(("+", "~")) or ov.startswith("hydra"):
            continue
        key, value = ov.split("=", 1)
        key = key.lstrip("+")
        group = key.replace(".", "/")
        if not (CONF_DIR / group).is_dir():  # a value override such as task.n_dims=5
            continue
        opts = group_options(group)
        for v in value.split(","):  # multirun sweeps a,b,c
            v = v.strip()
            if v and v != "null" and v not in opts:
                raise ConfigError(f"{key}={v!r}: unknown {key} (allowed: {', '.join(opts)})")


def compose_config(overrides: list[str] | tuple = (), config_name: str = "config") -> DictConfig:
    """Compose a run config in-process (tests, demo, notebooks) exactly as ``python -m icl_hybrids`` would,
    with ``name`` and ``run_dir`` resolved from the group choices."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    check_group_choices(list(overrides))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.name = str(cfg.name)
        cfg.run_dir = str(cfg.hydra.run.dir)
        del cfg["hydra"]
    return cfg
