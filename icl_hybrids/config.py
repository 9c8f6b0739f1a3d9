"""Typed schema and validation of a composed config.

Every section that training reads is described by a dataclass; OmegaConf merges the user's values into
it (type errors: "trainer.max_steps='abc' ..."), then ``RULES`` check ranges and cross-field constraints.
All problems surface as one ``ConfigError`` line: the key, the bad value and what is allowed.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


class ConfigError(ValueError):
    """A user-facing, one-line configuration error."""


# ---- schema ----------------------------------------------------------------------------------------
# Types only: every value, default included, comes from the YAML tree (conf/), the one source of defaults;
# a field the composed config lacks is reported as missing. Tasks keep defaults for their optional keys.
@dataclass
class TaskSchema:
    n_dims: int = MISSING
    n_points: int = MISSING
    baseline: str = MISSING
    sparsity: Optional[int] = None
    curriculum_points_start: int = 1
    curriculum_points_inc: int = 0


@dataclass
class ModelSchema:
    d_model: int = MISSING
    n_layer: int = MISSING
    n_head: int = MISSING
    init_std: float = MISSING


@dataclass
class ScheduleSchema:
    start: int = MISSING
    end: int = MISSING
    inc: int = MISSING
    interval: int = MISSING


@dataclass
class CurriculumSchema:
    enabled: bool = MISSING
    dims: ScheduleSchema = MISSING
    points: ScheduleSchema = MISSING


@dataclass
class OptimSchema:
    lr: float = MISSING
    betas: list[float] = MISSING
    eps: float = MISSING
    weight_decay: float = MISSING
    batch_size: int = MISSING
    warmup_steps: int = MISSING
    foreach: bool = MISSING
    fused: bool = MISSING


@dataclass
class TrainerSchema:
    max_steps: int = MISSING
    accelerator: str = MISSING
    devices: Any = MISSING  # an int, a list of device indices, or "auto" (checked in validate)
    strategy: str = MISSING
    num_nodes: int = MISSING
    precision: str = MISSING
    ckpt_every_n_steps: int = MISSING
    last_ckpt_every_n_steps: int = MISSING
    log_every_n_steps: int = MISSING
    gradient_clip_val: Optional[float] = MISSING
    progress_bar: bool = MISSING
    num_threads: Optional[int] = MISSING
    compile: bool = MISSING
    deterministic: bool = MISSING


@dataclass
class EvalSchema:
    n_prompts: int = MISSING
    batch_size: int = MISSING
    every_n_steps: int = MISSING
    baselines: list[str] = MISSING
    positions: Optional[Any] = MISSING
    seed_offset: int = MISSING
    chunk_prompts: Optional[int] = MISSING
    shift: Optional[str] = MISSING
    cache_dir: Optional[str] = MISSING


SCHEMA = {"task": TaskSchema, "model": ModelSchema, "curriculum": CurriculumSchema, "optim": OptimSchema,
          "trainer": TrainerSchema, "eval": EvalSchema}
#: sections whose every key is a schema field: another key there is a typo (``+trainer.max_step=10``) that
#: would otherwise be ignored silently. Task and model sections carry class-specific extras.
CLOSED_SECTIONS = ("trainer",)


def _check_known_keys(section: str, node) -> None:
    names = [f.name for f in dataclasses.fields(SCHEMA[section])]
    for k in node:
        _need(k in names, f"{section}.{k}", node[k], f"unknown key (allowed: {', '.join(sorted(names))})")


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
    try:
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:  # a key no YAML of the composed config sets
        key = getattr(e, "full_key", None) or "?"
        raise ConfigError(f"{section}.{key}: missing (no config sets it; add it to your YAML or the command line)") from None


def _need(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {allowed}")


def validate(cfg: DictConfig) -> dict[str, Any]:
    """Return the typed sections; raise ConfigError on the first problem."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{getattr(e, 'full_key', '?')}: {str(e).splitlines()[0]}") from None
    for s in CLOSED_SECTIONS:
        _check_known_keys(s, cfg[s])
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
    _need(opt.warmup_steps >= 0, "optim.warmup_steps", opt.warmup_steps, "must be an integer >= 0")
    _need(len(opt.betas) == 2 and all(0 <= b < 1 for b in opt.betas), "optim.betas", list(opt.betas),
          "must be two numbers in [0, 1), e.g. [0.9,0.999]")
    _need(opt.eps >= 0, "optim.eps", opt.eps, "must be >= 0")
    _need(str(tr.precision) in PRECISIONS, "trainer.precision", tr.precision, f"allowed: {', '.join(PRECISIONS)}")
    _need(tr.num_threads is None or tr.num_threads >= 1, "trainer.num_threads", tr.num_threads,
          "must be an integer >= 1 or null")
    _need(str(tr.accelerator) in ACCELERATORS, "trainer.accelerator", tr.accelerator,
          f"allowed: {', '.join(ACCELERATORS)}")
    _check_devices(tr, opt)
    _need(ev.batch_size >= 1, "eval.batch_size", ev.batch_size, "must be an integer >= 1")
    _check_run_location(cfg)
    n_pairs = cfg.task.get("n_pairs") if "n_pairs" in cfg.task else None
    if n_pairs is not None:
        _need(isinstance(n_pairs, int) and 1 <= n_pairs < task.n_points, "task.n_pairs", n_pairs,
              f"must be an integer between 1 and task.n_points-1={task.n_points - 1} (pairs, then queries)")
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
    from .baselines import baseline_names, baseline_settings

    known = baseline_names()
    for b in [task.baseline, *ev.baselines]:
        _need(b in known or b.startswith("ckpt:"), "task.baseline" if b == task.baseline else "eval.baselines",
              b, f"allowed: {', '.join(known)} or ckpt:<path>")
        if b.startswith("ckpt:"):
            _need(Path(b[5:]).is_file(), "task.baseline", b, "checkpoint file not found")
    for name, settings in ((OmegaConf.to_container(cfg.baseline, resolve=True) if cfg.get("baseline") else {})).items():
        _need(name in known, f"baseline.{name}", settings, f"unknown baseline (allowed: {', '.join(known)})")
        try:
            baseline_settings(name, settings)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    _check_seed_spaces(cfg, tr, ev)
    _check_logger(cfg.get("logger"))
    return t


PRECISIONS = ("32-true", "32", "64-true", "64", "16-mixed", "16", "bf16-mixed", "bf16", "16-true", "bf16-true",
              "transformer-engine", "transformer-engine-float16")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
#: Lightning strategies that train correctly here: one process per device, gradients averaged (DDP; gloo on
#: CPU, NCCL on GPU). Spawn/fork variants would run the job inside copies of the launching process (no
#: rank-0-only writes of our records, no one-line errors), FSDP/DeepSpeed shard what the checkpoint code and
#: the evaluation read whole.
STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_true")


def device_count(devices) -> int | None:
    """Processes per node that ``trainer.devices`` asks for (None: "auto", known once Lightning has looked)."""
    if isinstance(devices, (list, tuple)):
        return len(devices)
    return None if devices == "auto" else int(devices)


def _check_devices(tr, opt) -> None:
    """trainer.devices: an int >= 1, a list of distinct device indices, or "auto"; trainer.num_nodes >= 1; the
    global batch divides into one shard per process (world size = devices x num_nodes)."""
    d = tr.devices
    ok = (d == "auto" or (isinstance(d, int) and not isinstance(d, bool) and d >= 1)
          or (isinstance(d, list) and d and len(set(d)) == len(d)
              and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in d)))
    _need(ok, "trainer.devices", d, 'must be an integer >= 1, a list of distinct device indices ([0,1]) or "auto"')
    _need(str(tr.strategy) in STRATEGIES, "trainer.strategy", tr.strategy, f"allowed: {', '.join(STRATEGIES)}")
    _need(tr.num_nodes >= 1, "trainer.num_nodes", tr.num_nodes, "must be an integer >= 1")
    n = device_count(d)
    world = None if n is None else n * tr.num_nodes
    if world is not None:
        check_world_size(world, opt.batch_size, where=f"trainer.devices={d!r} x trainer.num_nodes={tr.num_nodes}")


def devices_here(tr: dict) -> int:
    """Processes per node that ``trainer.devices`` gives on this machine, by Lightning's own parsing (GPU
    indices must exist; "auto" counts the GPUs, 1 on the CPU); one ConfigError line when it cannot."""
    import torch
    from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator

    acc, d = str(tr["accelerator"]), tr["devices"]
    cuda = acc == "cuda" or (acc in ("gpu", "auto") and torch.cuda.is_available())
    if acc in ("mps", "tpu") or (acc == "gpu" and not cuda):  # MPS: one device
        return 1 if d == "auto" else device_count(d)
    if not cuda and isinstance(d, (list, tuple)):
        raise ConfigError(f"trainer.devices={list(d)!r}: on the CPU give a number of processes (an int), not device indices")
    cls = CUDAAccelerator if cuda else CPUAccelerator
    try:
        parsed = cls.parse_devices(cls.auto_device_count() if d == "auto" else d)
    except Exception as e:  # noqa: BLE001 - Lightning raises MisconfigurationException / TypeError here
        raise ConfigError(f"trainer.devices={d!r}: {' '.join(str(e).split())}") from None
    return len(cls.get_parallel_devices(parsed))


def check_world_size(world: int, batch_size: int, where: str) -> None:
    """optim.batch_size is the global batch: every rank trains on batch_size / world of its prompts
    (lit.ICLModule.draw_batch). Also checked at run time, once "auto" devices are counted."""
    _need(batch_size % world == 0, "optim.batch_size", batch_size,
          f"must be divisible by the world size {world} ({where}): optim.batch_size is the global batch, "
          "each process trains on optim.batch_size / world size of its prompts")


#: metrics.csv is always written (the aggregate reads it); the others are added by ``logger.kind``
LOGGERS = ("csv", "tensorboard", "wandb")


def logger_kinds(logger) -> list[str]:
    """The loggers ``logger.kind`` asks for: one name or a list of them (conf/logger/multi.yaml)."""
    kind = (logger or {}).get("kind", "csv")
    return [str(kind)] if isinstance(kind, str) else [str(k) for k in kind]


def _check_logger(logger) -> None:
    import importlib.util

    kinds = logger_kinds(logger)
    for k in kinds:
        _need(k in LOGGERS, "logger.kind", k, f"allowed: {', '.join(LOGGERS)} or a list of them ([tensorboard,wandb])")
    if "tensorboard" in kinds:
        _need(any(importlib.util.find_spec(m) for m in ("tensorboardX", "tensorboard")), "logger.kind", "tensorboard",
              "needs the tensorboardX (or tensorboard) package: pip install tensorboardX")


def _check_run_location(cfg) -> None:
    """seed: an integer >= 0; out_root: not empty; name: one path component (no '/', not '.' or '..'), so the
    run directory ${out_root}/<task>/<name>/seed<k> stays under out_root."""
    seed = cfg.get("seed")
    _need(isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0, "seed", seed,
          "must be an integer >= 0")
    out_root = cfg.get("out_root")
    _need(out_root is not None and str(out_root).strip() != "", "out_root", out_root,
          "must be a directory (empty would write at the filesystem root)")
    name = str(cfg.get("name"))
    _need(name.strip() not in ("", ".", "..") and "/" not in name and "\\" not in name and "\0" not in name,
          "name", name, "must be one directory name (no '/', not '.' or '..'): runs stay under out_root")


def _check_seed_spaces(cfg: DictConfig, tr, ev) -> None:
    """Training seeds seed * 1_000_003 + step must stay below 2**31 and evaluation seeds seed + eval.seed_offset
    too (they are drawn at 2**31 + that; evaluation.EVAL_SEED_BASE): disjoint streams, distinct per seed."""
    seed = cfg.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        return  # reported by the seed rule
    _need(tr.max_steps <= 1_000_003, "trainer.max_steps", tr.max_steps,
          "must be <= 1000003 (training seeds are seed * 1000003 + step: longer runs would replay the next seed's batches)")
    top = (2**31 - 1 - tr.max_steps) // 1_000_003
    _need(seed <= top, "seed", seed, f"must be <= {top} at trainer.max_steps={tr.max_steps} (seed * 1000003 + step "
          "must stay below 2**31, disjoint from the evaluation seeds)")
    _need(0 <= ev.seed_offset and seed + ev.seed_offset < 2**31, "eval.seed_offset", ev.seed_offset,
          "must be >= 0 with seed + eval.seed_offset < 2**31")


def task_class(name: str) -> type:
    """The Task class behind ``conf/task/<name>.yaml`` (its ``task._target_``), without composing a run."""
    from hydra.utils import get_class

    for d in config_dirs():
        if (d / "task" / f"{name}.yaml").is_file():
            return get_class(OmegaConf.load(d / "task" / f"{name}.yaml").task._target_)
    raise ValueError(f"task={name!r}: unknown task (allowed: {', '.join(group_options('task'))})")


# ---- the config search path: a user's own config directories, then the package's conf/ ----------------
_USER_DIRS: list[Path] = []


def add_config_dirs(dirs) -> None:
    """Register user config directories (``--config-dir``, ``hydra.searchpath``, or those a checkpoint was
    trained with): their groups (task/, model/mixer/, baseline/, ...) join the package's for every lookup."""
    for d in dirs or []:
        d = Path(str(d).removeprefix("file://")).resolve()
        if d != CONF_DIR and d not in _USER_DIRS:
            _USER_DIRS.append(d)


def config_dirs() -> list[Path]:
    """The user's config directories first (they may shadow a package config), then ``conf/``."""
    return [*_USER_DIRS, CONF_DIR]


def user_dirs_from_argv(argv: list[str]) -> list[str]:
    """``--config-dir D`` / ``--config-dir=D`` / ``-cd D`` and ``hydra.searchpath=[file://D,...]`` in ``argv``."""
    out = []
    for i, a in enumerate(argv):
        if a in ("--config-dir", "-cd") and i + 1 < len(argv):
            out.append(argv[i + 1])
        elif a.startswith("--config-dir="):
            out.append(a.split("=", 1)[1])
        elif a.lstrip("+").startswith("hydra.searchpath="):
            items = a.split("=", 1)[1].strip().strip("[]")
            out += [x.strip().strip("'\"") for x in items.split(",") if x.strip().strip("'\"").startswith("file://")]
    return out


def searchpath_override() -> list[str]:
    """The override that puts the registered user directories on a compose call's search path."""
    return [f"hydra.searchpath=[{','.join('file://' + str(d) for d in _USER_DIRS)}]"] if _USER_DIRS else []


def group_options(group: str) -> list[str]:
    return sorted({p.stem for d in config_dirs() if (d / group).is_dir() for p in (d / group).glob("*.yaml")})


def normalize_overrides(overrides: list[str]) -> list[str]:
    """``baseline.<name>.<key>=v`` sets a key that the (empty) ``baseline`` node does not declare; Hydra needs
    ``++`` for that, so it is added here: every entry point accepts the plain form."""
    return [f"++{o}" if o.startswith("baseline.") and "=" in o else o for o in overrides]


def check_group_choices(overrides: list[str]) -> None:
    """Unknown group choices (task=foo, model/ffn=bar, experiment=baz) as one-line errors, before Hydra."""
    for ov in overrides:
        if "=" not in ov or ov.startswith(("+", "~")) or ov.startswith("hydra"):
            continue
        key, value = ov.split("=", 1)
        key = key.lstrip("+")
        group = key.replace(".", "/")
        if not any((d / group).is_dir() for d in config_dirs()):  # a value override such as task.n_dims=5
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

    overrides = normalize_overrides(list(overrides))
    add_config_dirs(user_dirs_from_argv(overrides))
    if not any(o.lstrip("+").startswith("hydra.searchpath=") for o in overrides):
        overrides += searchpath_override()
    check_group_choices(overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.name = str(cfg.name)
        cfg.run_dir = str(cfg.hydra.run.dir)
        del cfg["hydra"]
    return cfg
