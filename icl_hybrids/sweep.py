"""Sweep tooling: the job list of a Hydra multirun without running it, and the Optuna objective.

    python -m icl_hybrids.sweep                                  # the paper sweep's 72 jobs (make sweep-plan)
    python -m icl_hybrids.sweep experiment=paper_sweep seeds=3   # 216 jobs
    python -m icl_hybrids.sweep plan experiment=cpu_sweep status=true   # with each run's state on disk
    python -m icl_hybrids.sweep experiment=paper_sweep model=gpt2,llama task=linear count=true
    python -m icl_hybrids.sweep run jobs=2 experiment=cpu_sweep  # 2 jobs side by side (make sweep-cpu)
    python -m icl_hybrids.sweep run experiment=paper_sweep jobs_per_gpu=2  # a local GPU pool, 2 jobs per GPU

The jobs are expanded exactly as Hydra's basic sweeper expands them (``hydra.sweeper.params`` from the
experiment, then the command line, key by key) and every job's config is composed in-process
(``compose_config``'s machinery), so the hyperparameters printed are the ones the job will train with.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .config import CONF_DIR, ConfigError, check_group_choices

DEFAULT_EXPERIMENT = "paper_sweep"
log = logging.getLogger("icl_hybrids.sweep")


@dataclass
class Job:
    task: str
    model: str
    seed: int
    max_steps: int
    lr: float
    curriculum: bool
    d_model: int
    n_layer: int
    batch_size: int
    run_dir: str
    overrides: list[str]

    def status(self) -> str:
        """finished / running@<step> / missing, from <run_dir>/results.json (what a rerun would do)."""
        from .results import run_state

        if not (Path(self.run_dir) / "results.json").exists():
            return "resume" if (Path(self.run_dir) / "checkpoints" / "last.ckpt").exists() else "missing"
        state, r = run_state(self.run_dir, self.max_steps)
        if r is None:
            return "unreadable"
        return state if state in ("finished", "diverged") else f"resume@{r.get('step', '?')}"


def _parse(overrides: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(list(overrides))


def expand(overrides: list[str] | tuple = ()) -> list[list[str]]:
    """The per-job override lists Hydra's basic sweeper would launch for ``python -m icl_hybrids -m <overrides>``
    (``experiment=paper_sweep`` is added when no experiment is given)."""
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return _expand(overrides)


def grid(args: list[str]) -> list[list[str]]:
    """The basic sweeper's job grid for ``args`` (the sweeper's params, then the command line), from Hydra's
    public override parser: per key the last occurrence wins (the command line over the params), a sweep
    ``a,b`` / ``range(0,3)`` / ``choice(..)`` lists its values, and the jobs are the product in key order."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    lists: dict[str, list[str]] = {}
    for o in OverridesParser.create().parse_overrides(list(args)):
        key = o.get_key_element()
        if o.is_sweep_override():
            if not o.is_discrete_sweep():
                raise ConfigError(f"{o.input_line}: interval sweeps need an optimising sweeper, not the basic grid")
            lists[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            lists[key] = [f"{key}={o.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*lists.values())]


def _expand(overrides) -> list[list[str]]:
    return grid(_grid_args(overrides)[0])


def _grid_args(overrides) -> tuple[list[str], set]:
    """What the basic sweeper expands (its params, then the command line) and the config group names."""
    from hydra import compose
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides)
    if not any(o.split("=", 1)[0].lstrip("+") == "experiment" for o in overrides):
        overrides.insert(0, f"experiment={DEFAULT_EXPERIMENT}")
    check_group_choices(overrides)
    parsed = _parse(overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    try:
        base = compose("config", overrides=fixed, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(str(e).strip().splitlines()[0]) from None
    sweeper = base.hydra.sweeper
    if "BasicSweeper" not in str(sweeper.get("_target_", "")):
        raise ConfigError(f"hydra.sweeper={sweeper._target_}: only the basic sweeper's grid can be listed")
    params = OmegaConf.to_container(sweeper.params, resolve=True) if sweeper.get("params") else {}
    return [f"{k}={v}" for k, v in params.items()] + overrides, set(base.hydra.runtime.choices.keys())


def plan(overrides: list[str] | tuple = ()) -> list[Job]:
    """Every job of the sweep with its composed hyperparameters and output directory (nothing is run)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import HydraException
    from omegaconf import open_dict
    from omegaconf.errors import OmegaConfBaseException

    jobs: list[Job] = []
    cache: dict[tuple, Any] = {}
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        args, groups = _grid_args(overrides)
        vkeys = variant_keys(args, groups)
        for ov in grid(args):
            # Seeds change nothing but `seed` (and the paths built from it): compose once per seed-free job.
            seed = next((o.split("=", 1)[1] for o in ov if o.split("=", 1)[0] == "seed"), None)
            rest = tuple(o for o in ov if o.split("=", 1)[0] != "seed")
            if rest not in cache:
                try:
                    cache[rest] = compose("config", overrides=list(rest), return_hydra_config=True)
                except (HydraException, OmegaConfBaseException) as e:
                    raise ConfigError(f"{' '.join(ov)}: {str(e).strip().splitlines()[0]}") from None
            cfg = cache[rest].copy()
            if seed is not None:
                with open_dict(cfg):
                    cfg.seed = int(seed)
            HydraConfig.instance().set_config(cfg)
            sweep_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
            if vkeys:  # SweptDirname's layout: <task>/<name>/<variant>/seed<k>
                sweep_dir = (Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.runtime.choices.task) / str(cfg.name)
                             / variant_of(ov, vkeys) / f"seed{cfg.seed}")
            jobs.append(Job(task=str(cfg.hydra.runtime.choices.task), model=str(cfg.name), seed=int(cfg.seed),
                            max_steps=int(cfg.trainer.max_steps), lr=float(cfg.optim.lr),
                            curriculum=bool(cfg.curriculum.enabled), d_model=int(cfg.model.d_model),
                            n_layer=int(cfg.model.n_layer), batch_size=int(cfg.optim.batch_size),
                            run_dir=str(sweep_dir), overrides=list(ov)))
    return jobs


def format_plan(jobs: list[Job], status: bool = False) -> str:
    head = ["task", "model", "seed", "max_steps", "lr", "curriculum", "d_model", "n_layer", "batch", "output_dir"]
    rows = [[j.task, j.model, str(j.seed), str(j.max_steps), f"{j.lr:g}", "on" if j.curriculum else "off",
             str(j.d_model), str(j.n_layer), str(j.batch_size), j.run_dir] for j in jobs]
    if status:
        head.append("status")
        for r, j in zip(rows, jobs):
            r.append(j.status())
    w = [max(len(x) for x in col) for col in zip(head, *rows)]
    fmt = lambda r: "  ".join(x.ljust(n) for x, n in zip(r, w)).rstrip()  # noqa: E731
    return "\n".join([fmt(head)] + [fmt(r) for r in rows])


# ---- Optuna: the task function returns the results dict; the sweeper needs a float ---------------------
try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object


class ReturnObjective(_HydraCallback):
    """Hydra callback (``hydra.callbacks``) that turns a job's results dict into the float an optimising sweeper
    (Optuna) reads: ``results[key]``. Runs in the job's process right after the task function, so it works
    with every launcher. A missing/NaN value becomes ``nan_value`` (a failed objective, not a crash)."""

    def __init__(self, key: str = "icl_score", nan_value: float | None = None) -> None:
        self.key, self.nan_value = key, nan_value

    def on_job_end(self, config, job_return, **kwargs) -> None:
        from hydra.core.utils import JobStatus

        if job_return.status != JobStatus.COMPLETED or not isinstance(job_return._return_value, dict):
            return
        v = job_return._return_value.get(self.key)
        try:
            v = float(v)
        except (TypeError, ValueError):
            v = float("nan")
        if v != v and self.nan_value is not None:
            v = float(self.nan_value)
        job_return.return_value = v


# ---- run directories that never collide: swept keys in the path ---------------------------------------
#: the subdir used when a sweep varies a key that is neither a config group, ``seed`` nor ``name``
#: (``optim.lr=1e-3,1e-4`` -> <task>/<name>/optim.lr=1e-3/seed0): hydra.job.override_dirname, restricted to
#: those keys (hydra.job.config.override_dirname.exclude_keys lists every other key of the command line)
VARIANT_SUBDIR = "${hydra:runtime.choices.task}/${name}/${hydra:job.override_dirname}/seed${seed}"
NOT_A_VARIANT = {"seed", "name", "seeds", "sweep_name"}


def _is_group(key: str, groups) -> bool:
    k = key.lstrip("+~").split("@")[0]
    return k in groups or k.replace(".", "/") in groups or k.startswith("hydra")


def variant_keys(args: list[str], groups) -> list[str]:
    """The keys of ``args`` (the sweeper's params, then the command line) that sweep and get their own level in
    the run directory: not a config group (``groups``: hydra.runtime.choices' names), not seed/name."""
    out = []
    for o in _parse(args):
        k = o.key_or_group
        if o.is_sweep_override() and not _is_group(k, groups) and k not in NOT_A_VARIANT and k not in out:
            out.append(k)
    return out


def variant_of(job: list[str], keys: list[str]) -> str:
    """A job's directory level for ``keys``, exactly as Hydra's override_dirname writes it ("" for none)."""
    lines = sorted(o for o in job if o.split("=", 1)[0].lstrip("+~") in keys)
    return ",".join(lines)


def variant_overrides(args: list[str], groups) -> list[str]:
    """The hydra overrides that give every swept non-group key a level in the run directory ([] when the
    sweep varies only groups, seeds or names: the plain <task>/<name>/seed<k> layout)."""
    keys = variant_keys(args, groups)
    if not keys:
        return []
    others = sorted({o.key_or_group for o in _parse(args)} - set(keys))
    quoted = ",".join("'" + k.replace("'", "") + "'" for k in others)
    return [f"hydra.job.config.override_dirname.exclude_keys=[{quoted}]", f"hydra.sweep.subdir={VARIANT_SUBDIR}"]


def _sweep_args(cfg) -> list[str]:
    """The basic sweeper's params then the command line's overrides (what the sweeper expands)."""
    from omegaconf import OmegaConf

    params = cfg.hydra.sweeper.get("params") or {}
    params = OmegaConf.to_container(params, resolve=False) if params else {}
    return [f"{k}={v}" for k, v in params.items()] + list(cfg.hydra.overrides.task)


class SweptDirname(_HydraCallback):
    """Hydra callback (conf/config.yaml hydra.callbacks) that gives each value of a swept non-group key its own
    run directory: ``optim.lr=1e-3,1e-4`` -> <task>/<name>/optim.lr=1e-3/seed0 and .../optim.lr=1e-4/seed0
    (without it both jobs map to <task>/<name>/seed0 and the second is refused as a different run). Runs in the
    launching process before any job; adds its overrides to hydra.overrides.hydra, from which every launcher
    (basic, submitit) composes each job's config. The basic sweeper only (an optimising sweeper names its
    trials itself)."""

    def on_multirun_start(self, config, **kwargs) -> None:
        from omegaconf import OmegaConf, flag_override

        if "BasicSweeper" not in str(config.hydra.sweeper.get("_target_", "")):
            return
        try:
            extra = variant_overrides(_sweep_args(config), set(config.hydra.runtime.choices.keys()))
        except Exception:  # noqa: BLE001 - never stop a sweep over its directory names
            return
        if not extra:
            return
        with flag_override(config, ["readonly", "struct"], [False, False]):
            have = list(OmegaConf.to_container(config.hydra.overrides.hydra, resolve=False))
            config.hydra.overrides.hydra = have + [e for e in extra if e not in have]


# ---- local parallel sweeps: Hydra's joblib launcher, one GPU (or one CPU thread) per worker ----------
#: where hydra/launcher=local keeps the worker slots' lock files, under the sweep directory
POOL_DIR = ".device_pool"


def visible_gpus(env: dict, count: int) -> list[str]:
    """The GPUs a local pool may hand out: the entries of the launching shell's ``CUDA_VISIBLE_DEVICES`` when it
    is set (the user's restriction; "" = none), else ``0 .. count-1``."""
    v = env.get("CUDA_VISIBLE_DEVICES")
    if v is not None:
        return [g.strip() for g in v.split(",") if g.strip() and g.strip() != "-1"]
    return [str(i) for i in range(count)]


def pool_size(n_gpus: int, jobs_per_gpu: int, n_cpus: int) -> int:
    """Workers of a pool whose size is not given: ``jobs_per_gpu`` per GPU, else one per CPU core."""
    return n_gpus * jobs_per_gpu if n_gpus else max(1, n_cpus)


def pool_device(slot: int, gpus: list[str], jobs_per_gpu: int = 1) -> str | None:
    """``CUDA_VISIBLE_DEVICES`` of worker ``slot`` (0-based): workers 0..k-1 share the first GPU, k..2k-1 the
    second, ... (k = ``jobs_per_gpu``), wrapping round when there are more workers than GPUs x k; None
    without GPUs (a CPU pool)."""
    if jobs_per_gpu < 1:
        raise ConfigError(f"hydra.callbacks.device_pool.jobs_per_gpu={jobs_per_gpu}: expected an integer >= 1")
    if not gpus:
        return None
    return str(gpus[(slot // jobs_per_gpu) % len(gpus)])


def _acquire_slot(pool_dir: Path, n_slots: int, wait_s: float = 30.0) -> tuple[int, Any]:
    """This process's worker slot: the first of ``n_slots`` lock files it can lock. The lock is held until the
    process ends (the OS releases it when a worker dies), so a reused worker keeps its GPU and a replacement
    worker takes the freed slot. Returns (slot, open file)."""
    import fcntl
    import time

    pool_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        for i in range(n_slots):
            fh = open(pool_dir / f"slot{i}.lock", "a+")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.close()
                continue
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()}\n")
            fh.flush()
            return i, fh
        if time.monotonic() > deadline:  # a worker that is being replaced still holds its lock: share a slot
            return n_slots, None
        time.sleep(0.2)


#: (slot, lock file, CUDA_VISIBLE_DEVICES) of this worker process, taken at its first job
_WORKER_SLOT: tuple | None = None


class DevicePool(_HydraCallback):
    """Hydra callback of ``hydra/launcher=local`` (conf/hydra/launcher/local.yaml: Hydra's joblib launcher, loky
    worker processes). In the launching process (``on_multirun_start``) it finds the GPUs (``gpus``: null = every
    visible one, a list = those ids, [] = CPU only), sizes the pool when ``hydra.launcher.n_jobs`` is -1
    (``jobs_per_gpu`` per GPU, else one per core) and, on a CPU pool, gives every worker one thread
    (``OMP_NUM_THREADS=1`` unless set). In each worker (``on_job_start``, before training touches CUDA) it
    takes a free slot once per process and sets ``CUDA_VISIBLE_DEVICES`` from it (``pool_device``)."""

    def __init__(self, jobs_per_gpu: int = 1, gpus: list | None = None) -> None:
        self.jobs_per_gpu, self.gpus = int(jobs_per_gpu), None if gpus is None else [str(g) for g in gpus]
        self.n_slots, self.pool_dir = 1, None

    def on_multirun_start(self, config, **kwargs) -> None:
        from omegaconf import flag_override

        if self.jobs_per_gpu < 1:
            raise ConfigError(f"hydra.callbacks.device_pool.jobs_per_gpu={self.jobs_per_gpu}: expected an integer >= 1")
        if self.gpus is None:
            import torch  # the launching process only: workers are fresh interpreters (loky), not forks

            self.gpus = visible_gpus(dict(os.environ), torch.cuda.device_count())
        n = config.hydra.launcher.get("n_jobs")
        if n is None or int(n) < 1:  # joblib's -1 ("every core") included: size it ourselves
            n = pool_size(len(self.gpus), self.jobs_per_gpu, os.cpu_count() or 1)
            with flag_override(config, ["readonly", "struct"], [False, False]):
                config.hydra.launcher.n_jobs = n
        self.n_slots = int(n)
        self.pool_dir = str(Path(str(config.hydra.sweep.dir)).resolve() / POOL_DIR)
        if not self.gpus:  # N CPU jobs side by side, one thread each (loky workers inherit the environment)
            os.environ.setdefault("OMP_NUM_THREADS", "1")
        log.info("local pool: %d workers, %s", self.n_slots,
                 f"GPUs {','.join(self.gpus)} ({self.jobs_per_gpu} per GPU)" if self.gpus
                 else f"CPU, {os.environ.get('OMP_NUM_THREADS')} thread(s) each")

    def on_job_start(self, config, **kwargs) -> None:
        global _WORKER_SLOT
        if self.pool_dir is None:  # not started through a multirun (a single run): nothing to place
            return
        if _WORKER_SLOT is None:
            slot, fh = _acquire_slot(Path(self.pool_dir), self.n_slots)
            _WORKER_SLOT = (slot, fh, pool_device(slot, self.gpus or [], self.jobs_per_gpu))
            if _WORKER_SLOT[2] is not None:
                os.environ["CUDA_VISIBLE_DEVICES"] = _WORKER_SLOT[2]
            elif os.environ.get("OMP_NUM_THREADS"):
                import torch

                torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        slot, _, dev = _WORKER_SLOT
        log.info("local pool: job in process %d, slot %d, %s", os.getpid(), slot,
                 f"CUDA_VISIBLE_DEVICES={dev}" if dev is not None else "CPU")



def run_parallel(overrides: list[str], n: int) -> int:
    """Run the sweep as one Hydra multirun, ``python -m icl_hybrids -m <overrides>``: with ``n`` >= 2 through
    Hydra's joblib launcher (``hydra/launcher=local``: ``n`` worker processes, one GPU each when there are GPUs,
    else one CPU thread each), with ``n`` = 1 through the basic launcher (one job after another, one thread).
    Hydra writes multirun.yaml and every run directory itself. Returns the multirun's exit status."""
    import subprocess

    ov = list(overrides)
    if not any(o.split("=", 1)[0].lstrip("+") == "experiment" for o in ov):
        ov.insert(0, f"experiment={DEFAULT_EXPERIMENT}")
    if n > 1 and not any(o.split("=", 1)[0].lstrip("+") == "hydra/launcher" for o in ov):
        ov += ["hydra/launcher=local", f"hydra.launcher.n_jobs={n}"]
    env = dict(os.environ)
    if n == 1:
        env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, "-m", "icl_hybrids", "-m", *ov]
    print(f"sweep: {' '.join(cmd[1:])}", flush=True)
    return subprocess.call(cmd, env=env)


#: each sub-command's own keys and their defaults; every other ``key=value`` is a Hydra override of the sweep
KEYS = {"plan": {"status": False, "count": False, "json": False}, "run": {"jobs": 2, "jobs_per_gpu": 1}}
HELP = {"status": "each job's state on disk (missing / unfinished / finished / failed)",
        "count": "print only the number of jobs", "json": "the jobs as JSON",
        "jobs": "jobs side by side (CPU: one thread each; with GPUs the default is jobs_per_gpu x the GPU count)",
        "jobs_per_gpu": "with GPUs: workers sharing one GPU (CUDA_VISIBLE_DEVICES per worker)"}
WHAT = {"plan": "the job list of a sweep, nothing run (the default sub-command)",
        "run": "run the sweep locally through Hydra's joblib launcher (hydra/launcher=local), `jobs` at a time"}
PROG = "python -m icl_hybrids.sweep"


def parse(argv: list[str]) -> tuple[str, dict, list[str]] | None:
    """(sub-command, its typed keys, the Hydra overrides), or None after --help; bad input raises ConfigError."""
    from .cli import parse_subcommand

    return parse_subcommand(argv, KEYS, prog=PROG, doc=__doc__, what=WHAT, help=HELP, default="plan")


def _pool_jobs(argv: list[str], a: dict) -> int:
    """``jobs`` when given; else one worker per GPU x ``jobs_per_gpu`` when there are GPUs, else the default 2."""
    if a["jobs_per_gpu"] < 1:
        raise ConfigError(f"jobs_per_gpu={a['jobs_per_gpu']}: expected an integer >= 1")
    if any(x.partition("=")[0] == "jobs" for x in argv):
        return a["jobs"]
    import torch

    n_gpus = len(visible_gpus(dict(os.environ), torch.cuda.device_count()))
    return pool_size(n_gpus, a["jobs_per_gpu"], 1) if n_gpus else a["jobs"]


def _pool_overrides(overrides: list[str], jobs_per_gpu: int, n: int) -> list[str]:
    """The sweep's overrides plus the pool's ``jobs_per_gpu`` (a key of hydra/launcher=local, used when n > 1)."""
    if n > 1 and jobs_per_gpu != 1:
        return [*overrides, f"hydra.callbacks.device_pool.jobs_per_gpu={jobs_per_gpu}"]
    return list(overrides)


def _main(argv: list[str]) -> int:
    parsed = parse(argv)
    if parsed is None:
        return 0
    cmd, a, overrides = parsed
    if cmd == "run":
        n = _pool_jobs(argv, a)
        return run_parallel(_pool_overrides(overrides, a["jobs_per_gpu"], n), n)
    jobs = plan(overrides)
    if a["count"]:
        print(len(jobs))
    elif a["json"]:
        print(json.dumps([asdict(j) | ({"status": j.status()} if a["status"] else {}) for j in jobs], indent=1))
    else:  # header and count on stderr: stdout has exactly one line per job (`| wc -l`, `| grep`)
        head, *lines = format_plan(jobs, status=a["status"]).splitlines()
        print(head, file=sys.stderr, flush=True)
        print("\n".join(lines), flush=True)
        print(f"# {len(jobs)} jobs", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    from .cli import run_tool

    return run_tool(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
