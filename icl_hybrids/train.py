"""Training entry: validate (``preflight``) -> protect the run directory -> resume or start (``resume``) -> fit
-> results.json."""
from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .config import ConfigError
from .io import atomic_write_text, read_json
from .preflight import RESUMABLE_KEYS, config_diff, memory_estimate, preflight  # noqa: F401 - re-exported
from .resume import checkpoint_problem, choose_resume, optimizer_state_dropped, resume_candidates  # noqa: F401

log = logging.getLogger("icl_hybrids")


def _is_global_zero() -> bool:
    """Whether this process is global rank 0 as its launcher announced it (torchrun: RANK, SLURM: SLURM_PROCID,
    Lightning-style / ours: NODE_RANK and LOCAL_RANK); a process nobody launched is rank 0. Only rank 0
    takes the run lock and writes config.yaml."""
    for k in ("RANK", "SLURM_PROCID"):
        if os.environ.get(k, "").isdigit():
            return int(os.environ[k]) == 0
    return all(int(os.environ.get(k, "0") or 0) == 0 for k in ("NODE_RANK", "LOCAL_RANK"))


def run(cfg: DictConfig) -> dict:
    """Train (or resume) one run; returns its results dict. Raises ConfigError for bad input, RunFailed
    (cli) when the run cannot go on (diverged, no loadable checkpoint, disk full)."""
    from .cli import RunFailed
    from .io import RunLock

    resolved = preflight(cfg)
    state, prev = resolved.pop("_state"), resolved.pop("_results")
    run_dir = Path(resolved["run_dir"])
    cfg_path, ckpt_dir = run_dir / "config.yaml", run_dir / "checkpoints"
    if state == "finished":
        score = prev.get("icl_score")
        log.info("run already finished: %s (icl_score=%s)", run_dir / "results.json",
                 f"{score:.4f}" if isinstance(score, float) else score)
        return prev
    lock = RunLock(run_dir) if _is_global_zero() else None  # other ranks of the same run share rank 0's lock
    if lock is not None and not lock.acquire():
        raise ConfigError(f"run_dir={str(run_dir)!r} is in use by another live run ({lock.holder()}); wait for it "
                          "or choose another name=/out_root=/seed=")
    try:
        ckpt = resolved.get("resume_from") or (choose_resume(ckpt_dir) if resolved.get("resume", True) else None)
        if ckpt and optimizer_state_dropped(ckpt):
            log.warning("resuming from %s, a weights-only trajectory checkpoint: Adam's state starts fresh at "
                        "that step (not bitwise the uninterrupted run)", ckpt)
        try:
            if _is_global_zero():
                atomic_write_text(cfg_path, OmegaConf.to_yaml(resolved))
            return fit(cfg, resolved, run_dir, ckpt)
        except OSError as e:
            import errno

            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
                raise RunFailed(f"cannot write {e.filename or run_dir}: {e.strerror}; free space / fix "
                                "permissions and rerun the same command (it resumes)") from None
            raise
    finally:
        if lock is not None:
            lock.release()


def fit(cfg: DictConfig, resolved: dict, run_dir: Path, ckpt: str | None) -> dict:
    import lightning as L
    import torch
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from . import perf, slurm
    from .callbacks import AtomicCheckpoint, CollectiveSigterm, Diverged, ICLEvalCallback, NonFiniteGuard, progress_bar
    from .config import check_world_size
    from .lit import ICLModule

    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*IterableDataset.*has `__len__`.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*srun.*command is available.*")
    _route_lightning_logs()
    tr = cfg.trainer
    if tr.num_threads:
        torch.set_num_threads(int(tr.num_threads))
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    module = ICLModule(resolved)

    loggers, wb = _loggers(resolved, run_dir)
    extra = {"task": module.task.name,
             "model": resolved["name"], "seed": int(cfg.seed), "run_dir": str(run_dir),
             "task_config": module.task.describe()}
    guard = NonFiniteGuard(check_every=int(tr.log_every_n_steps))
    ckcb = AtomicCheckpoint(run_dir / "checkpoints", tr.ckpt_every_n_steps, tr.last_ckpt_every_n_steps, guard=guard)
    evalcb = ICLEvalCallback(run_dir, cfg, cfg.eval.every_n_steps, extra, guard=guard)
    # the guard first: it stops a diverged step before anything is saved; a DDP SIGTERM stops before the save
    callbacks = [guard, CollectiveSigterm(check_every=int(tr.log_every_n_steps)), ckcb, evalcb]
    callbacks += slurm.requeue_callbacks(ckcb)  # SLURM USR2: save last.ckpt, then submitit requeues
    if tr.progress_bar:
        callbacks.append(progress_bar())
    if perf.on_cpu(tr.accelerator):
        perf.tune_cpu_allocator()  # glibc keeps freed activations (docs/performance.md "Allocator")
    precision, precision_plugins = perf.trainer_precision(tr.precision, tr.accelerator)  # bf16-mixed on CPU: plugin
    trainer = _trainer(
        L, max_steps=int(tr.max_steps), accelerator=tr.accelerator, devices=_devices(tr.devices), strategy=tr.strategy,
        num_nodes=int(tr.num_nodes), precision=precision, logger=loggers, callbacks=callbacks,
        enable_checkpointing=False, enable_progress_bar=bool(tr.progress_bar), enable_model_summary=False,
        log_every_n_steps=int(tr.log_every_n_steps), limit_val_batches=0,
        num_sanity_val_steps=0, gradient_clip_val=tr.gradient_clip_val, deterministic=bool(tr.deterministic),
        default_root_dir=str(run_dir), plugins=slurm.cluster_plugins() + precision_plugins,  # no Lightning auto-requeue
    )
    # the world is known now ("auto" devices counted): a batch that does not split fails before any rank starts
    world = trainer.num_devices * trainer.num_nodes
    check_world_size(world, int(cfg.optim.batch_size),
                     where=f"{trainer.num_devices} device(s) x trainer.num_nodes={trainer.num_nodes}")
    if tr.compile:
        module.model = torch.compile(module.model)
    try:
        with local_ranks(trainer, resolved, ckpt):
            trainer.fit(module, ckpt_path=ckpt)
    except Diverged as e:
        raise _diverged(e, trainer, resolved, run_dir, extra) from None
    except SIGTERMException:
        log.warning("SIGTERM: saved %s at step %d; rerun the same command to resume",
                    run_dir / "checkpoints" / "last.ckpt", trainer.global_step)
        raise SystemExit(143) from None  # 128 + SIGTERM: schedulers see an unfinished job
    finally:
        if wb:
            import wandb

            wandb.finish()
    # the record the callback wrote last (a resumed run that had nothing left to do evaluated nothing: its file)
    return evalcb.results if evalcb.results is not None else read_json(run_dir / "results.json")


def _trainer(L, **kw):
    """``L.Trainer(**kw)``; what Lightning refuses about the devices here (a SLURM allocation whose tasks per
    node differ from trainer.devices, GPU indices that do not exist) as one line."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return L.Trainer(**kw)
    except (ValueError, MisconfigurationException) as e:
        raise ConfigError(f"trainer.devices={kw.get('devices')!r}: {' '.join(str(e).split())}") from None


def _devices(devices):
    """trainer.devices as Lightning takes it (a plain list, not an OmegaConf ListConfig)."""
    return list(devices) if not isinstance(devices, (int, str)) else devices


# ---- DDP on one node: our own launcher ----------------------------------------------------------------------
# Lightning would start ranks 1..n-1 by re-running this process's command line (sys.argv), which re-runs a
# whole multirun, a pytest session or a submitit job instead of this one run. ``local_ranks`` starts them
# itself, each running ``fit`` on the already resolved config (``python -m icl_hybrids.train``, the config on
# stdin); with LOCAL_RANK set, Lightning's launcher then sees processes "created externally" and starts none.
# A torchrun or SLURM launch (one task per device) is left alone: every rank runs the ordinary entry point.
_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
#: after a rank died, how long rank 0 may take to notice (its next collective fails) before it is stopped
RANK_FAILURE_GRACE_S = 30.0
#: how long the other ranks may take to finish once rank 0 has
RANK_EXIT_TIMEOUT_S = 120.0


@contextlib.contextmanager
def local_ranks(trainer, resolved: dict, ckpt: str | None):
    """Run the body as local rank 0 of a DDP run whose other local ranks this process starts (only when the
    run has several devices here and no launcher created the processes); a no-op otherwise. A rank that dies
    makes the run fail with one line (exit status 1) instead of leaving rank 0 in a collective."""
    from .cli import RunFailed

    env = getattr(trainer.strategy, "cluster_environment", None)
    n = trainer.num_devices
    if n <= 1 or env is None or env.creates_processes_externally:
        yield
        return
    saved = {k: os.environ.get(k) for k in _DDP_ENV}
    os.environ.update(MASTER_ADDR=env.main_address, MASTER_PORT=str(env.main_port), NODE_RANK=str(env.node_rank()),
                      WORLD_SIZE=str(n * trainer.num_nodes), LOCAL_RANK="0")
    procs = [_start_rank(i, resolved, ckpt) for i in range(1, n)]
    watch = _RankWatch(procs)
    ok = False
    try:
        watch.start()
        yield
        ok = True
    except RuntimeError:  # torch.distributed's errors: a collective broke, e.g. because a rank died
        failure = watch.wait_failure(5.0)  # the dead rank may take a moment to be reaped
        if failure:
            raise RunFailed(failure) from None
        raise
    finally:
        watch.stop()
        _stop_ranks(procs, wait_s=RANK_EXIT_TIMEOUT_S if ok else 5.0)
        for k, v in saved.items():  # an in-process caller (tests, a multirun's next job) starts clean
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()  # else the next run in this process would reuse it


def _start_rank(local_rank: int, resolved: dict, ckpt: str | None):
    import json
    import subprocess
    import sys

    env = {**os.environ, "LOCAL_RANK": str(local_rank)}
    proc = subprocess.Popen([sys.executable, "-m", "icl_hybrids.train"], stdin=subprocess.PIPE, env=env)
    proc.stdin.write(json.dumps({"resolved": resolved, "ckpt": ckpt}).encode())
    proc.stdin.close()
    return proc


def _stop_ranks(procs, wait_s: float) -> None:
    import subprocess
    import time

    deadline = time.monotonic() + wait_s
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("DDP: local rank process %d still running %.0f s after rank 0; killing it", p.pid, wait_s)
            p.kill()
            p.wait()


class _RankWatch:
    """Watches the local rank processes from a thread. When one exits non-zero, the others are killed and
    ``failure`` says which; rank 0 normally notices in its next collective (gloo: the peer closed the
    connection) and fails with that line; if it has not within RANK_FAILURE_GRACE_S (a collective that waits
    for its timeout), the process exits with status 1 after printing it."""

    def __init__(self, procs):
        import threading

        self.procs, self.failure = procs, None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="ddp-rank-watch")

    def start(self):
        self._thread.start()

    def stop(self):
        self._done.set()
        self._thread.join(timeout=5)

    def _check(self) -> str | None:
        bad = next(((i, p.poll()) for i, p in enumerate(self.procs, 1) if p.poll() not in (None, 0)), None)
        if bad is not None and self.failure is None:
            self.failure = (f"DDP local rank {bad[0]} exited with status {bad[1]} (its error is above); rerun the "
                            "same command to resume from the last checkpoint")
        return self.failure

    def wait_failure(self, timeout_s: float) -> str | None:
        """``failure``, waiting up to ``timeout_s`` for a rank to exit non-zero."""
        import time

        deadline = time.monotonic() + timeout_s
        while self._check() is None and time.monotonic() < deadline and any(p.poll() is None for p in self.procs):
            time.sleep(0.1)
        return self._check()

    def _run(self):
        import sys

        while not self._done.wait(0.5):
            if self._check() is None:
                continue
            for p in self.procs:
                if p.poll() is None:
                    p.kill()
            if not self._done.wait(RANK_FAILURE_GRACE_S):
                print(f"error: {self.failure}", file=sys.stderr, flush=True)
                os._exit(1)
            return


def _rank_main() -> int:
    """Entry of a local rank started by ``local_ranks``: the resolved config on stdin, then ``fit``. Errors
    every rank meets (a diverged run, a bad config) are reported by rank 0 alone; anything else raises here
    (its traceback on stderr, then rank 0 fails with one line)."""
    import json
    import sys

    from .cli import RunFailed
    from .config import add_config_dirs

    payload = json.loads(sys.stdin.read())
    resolved = payload["resolved"]
    rank = os.environ.get("LOCAL_RANK", "?")
    # warnings and errors only: rank 0 prints the run's progress and scores
    logging.basicConfig(level=logging.WARNING, format=f"[rank {rank}] %(levelname)s %(name)s: %(message)s")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):  # they set INFO on themselves
        logging.getLogger(name).setLevel(logging.WARNING)
    add_config_dirs(resolved.get("config_dirs"))
    try:
        fit(OmegaConf.create(resolved), resolved, Path(resolved["run_dir"]), payload["ckpt"])
    except ConfigError:
        return 2
    except RunFailed:
        return RunFailed.exit_code
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


class _DropTips(logging.Filter):
    """Lightning's advertisement for its cloud logger ("💡 Tip: ... litlogger")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.getMessage())


def _route_lightning_logs() -> None:
    """One copy of each Lightning log line. ``import lightning`` gives the ``lightning`` logger a stderr
    handler ("INFO: ..."), and ``lightning.pytorch`` one of its own when the root logger had none at import;
    where the root logger has handlers (Hydra's job logging: conf/config.yaml, stdout) the records also
    propagate there, so a multirun printed every line twice (stdout and stderr). With root handlers, the
    console handlers of Lightning's loggers are removed and the records go through the root logger only.
    The litlogger tip is dropped either way."""
    root = logging.getLogger()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning"):
        lg = logging.getLogger(name)
        if root.handlers:
            for h in list(lg.handlers):
                if type(h) is logging.StreamHandler:  # console handlers only (not files, not pytest's capture)
                    lg.removeHandler(h)
            lg.propagate = True
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning_utilities.core.rank_zero", "lightning.pytorch.trainer.connectors.logger_connector"
                 ".logger_connector"):
        lg = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in lg.filters):
            lg.addFilter(_DropTips())


def _diverged(e, trainer, resolved: dict, run_dir: Path, extra: dict):
    """Record a diverged run in results.json (status: diverged) and return the one-line RunFailed."""
    from .cli import RunFailed
    from .io import atomic_write_json

    res_path = run_dir / "results.json"
    try:
        prev = read_json(res_path)
        prev = prev if isinstance(prev, dict) else {}
    except (OSError, ValueError):
        prev = {}
    good = next((str(p) for p in resume_candidates(run_dir / "checkpoints") if checkpoint_problem(p) is None), None)
    hist = [h for h in prev.get("score_history", []) if isinstance(h, dict) and h.get("icl_score") is not None]
    res = {**prev, **extra, "status": "diverged", "step": e.step, "max_steps": int(resolved["trainer"]["max_steps"]),
           "diverged_at_step": e.step, "diverged_reason": e.what, "icl_score": None, "icl_score_ci95": None,
           "last_finite_checkpoint": good, "last_finite_eval": hist[-1] if hist else None}
    if trainer.is_global_zero:
        atomic_write_json(res_path, res)
    kept = f"kept the last finite checkpoint {good}" if good else "no checkpoint was written before"
    return RunFailed(f"training diverged at step {e.step} ({e.what}); {kept}; results.json status: diverged. "
                     "Lower optim.lr or set trainer.gradient_clip_val, in a new run (name=/seed=)")


def _loggers(resolved: dict, run_dir: Path) -> tuple[list, dict | None]:
    """CSV always (``logs/version_<k>/metrics.csv``: the aggregate reads it), plus what ``logger.kind`` names:
    TensorBoard (``tensorboard/version_<k>/``) and W&B. Lightning's loggers write on global rank 0 only.
    Returns the loggers and the W&B settings (None without W&B)."""
    from lightning.pytorch.loggers import CSVLogger

    from .config import logger_kinds

    lg = resolved.get("logger") or {}
    kinds = logger_kinds(lg)
    loggers = [CSVLogger(save_dir=str(run_dir), name="logs")]
    if "tensorboard" in kinds:
        from lightning.pytorch.loggers import TensorBoardLogger

        # default_hp_metric off: it would log a placeholder hp_metric=-1 at the start of every run
        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", default_hp_metric=False))
    wb = lg if "wandb" in kinds else None
    if wb:
        loggers.append(_wandb_logger(wb, run_dir, resolved))
        if not wb.get("offline", True) and _is_global_zero():
            _start_wandb(loggers[-1])
    return loggers, wb


def wandb_names(resolved: dict, run_dir: Path) -> tuple[str, str | None]:
    """The W&B run name and group: ``<task>/<model>/seed<k>`` (the run directory's last levels, with a swept
    key's level when there is one: ``linear/gpt2/optim.lr=0.001/seed0``) and, in a multirun, the sweep name.
    ``logger.name`` / ``logger.group`` override them."""
    parts = Path(run_dir).parts
    levels = 4 if len(parts) >= 4 and parts[-2] != str(resolved.get("name")) else 3
    name = resolved.get("logger", {}).get("name") or "/".join(parts[-levels:])
    group = resolved.get("logger", {}).get("group")
    if group is None and _in_multirun():
        group = resolved.get("sweep_name")
    return name, group


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # noqa: BLE001 - a partial Hydra config (in-process compose): not a multirun
        return False


def _wandb_logger(wb: dict, run_dir: Path, resolved: dict):
    from lightning.pytorch.loggers import WandbLogger

    id_file = run_dir / "wandb_id.txt"
    if _is_global_zero() and not id_file.exists():  # a stable id lets a resumed run continue the same W&B run
        import uuid

        atomic_write_text(id_file, uuid.uuid4().hex[:12])
    # explicit either way: an inherited WANDB_MODE must not contradict logger.offline
    os.environ["WANDB_MODE"] = "offline" if wb.get("offline", True) else "online"
    import wandb

    name, group = wandb_names(resolved, run_dir)
    # other ranks never start a W&B run (Lightning: rank-zero experiment), so they need no id
    run_id = id_file.read_text().strip() if id_file.exists() else None
    logger = WandbLogger(project=wb.get("project", "icl_hybrids"), entity=wb.get("entity"), name=name, group=group,
                         save_dir=str(run_dir), offline=bool(wb.get("offline", True)), id=run_id,
                         resume="allow", tags=list(wb.get("tags", [])), config=resolved,
                         settings=wandb.Settings(init_timeout=WANDB_INIT_TIMEOUT_S))
    return logger


def _start_wandb(logger) -> None:
    """Start an online W&B run now (bounded by init_timeout): a failure is one line, not a traceback mid-fit."""
    try:
        logger.experiment  # noqa: B018
    except Exception as e:  # noqa: BLE001 - wandb raises its own error types (CommError, UsageError, ...)
        msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ConfigError(f"logger.offline=false: W&B did not start within {WANDB_INIT_TIMEOUT_S:.0f} s "
                          f"({msg}); log offline with logger.offline=true (and `wandb sync` later)") from None


WANDB_INIT_TIMEOUT_S = 30.0


if __name__ == "__main__":  # a DDP rank started by local_ranks
    import sys

    sys.exit(_rank_main())
