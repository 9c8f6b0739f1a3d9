"""Training entry: validate (``preflight``) -> protect the run directory -> resume or start (``resume``) -> fit
-> results.json."""
from __future__ import annotations

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


def _rank() -> int:
    for k in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(k, "").isdigit():
            return int(os.environ[k])
    return 0


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
    lock = RunLock(run_dir) if _rank() == 0 else None  # other ranks of the same run share rank 0's lock
    if lock is not None and not lock.acquire():
        raise ConfigError(f"run_dir={str(run_dir)!r} is in use by another live run ({lock.holder()}); wait for it "
                          "or choose another name=/out_root=/seed=")
    try:
        ckpt = resolved.get("resume_from") or (choose_resume(ckpt_dir) if resolved.get("resume", True) else None)
        if ckpt and optimizer_state_dropped(ckpt):
            log.warning("resuming from %s, a weights-only trajectory checkpoint: Adam's state starts fresh at "
                        "that step (not bitwise the uninterrupted run)", ckpt)
        try:
            if _rank() == 0:
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
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from . import perf, slurm
    from .callbacks import AtomicCheckpoint, Diverged, ICLEvalCallback, NonFiniteGuard, progress_bar
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

    loggers = [CSVLogger(save_dir=str(run_dir), name="logs")]
    wb = resolved["logger"] if resolved.get("logger", {}).get("kind") == "wandb" else None
    if wb:
        loggers.append(_wandb_logger(wb, run_dir, resolved))
        if not wb.get("offline", True):
            _start_wandb(loggers[-1])
    extra = {"task": module.task.name,
             "model": resolved["name"], "seed": int(cfg.seed), "run_dir": str(run_dir),
             "task_config": module.task.describe()}
    guard = NonFiniteGuard(check_every=int(tr.log_every_n_steps))
    ckcb = AtomicCheckpoint(run_dir / "checkpoints", tr.ckpt_every_n_steps, tr.last_ckpt_every_n_steps, guard=guard)
    evalcb = ICLEvalCallback(run_dir, cfg, cfg.eval.every_n_steps, extra, guard=guard)
    callbacks = [guard, ckcb, evalcb]  # the guard first: it stops a diverged step before anything is saved
    callbacks += slurm.requeue_callbacks(ckcb)  # SLURM USR2: save last.ckpt, then submitit requeues
    if tr.progress_bar:
        callbacks.append(progress_bar())
    if perf.on_cpu(tr.accelerator):
        perf.tune_cpu_allocator()  # glibc keeps freed activations (docs/performance.md "Allocator")
    precision, precision_plugins = perf.trainer_precision(tr.precision, tr.accelerator)  # bf16-mixed on CPU: plugin
    trainer = L.Trainer(
        max_steps=int(tr.max_steps), accelerator=tr.accelerator, devices=tr.devices, precision=precision,
        logger=loggers, callbacks=callbacks, enable_checkpointing=False, enable_progress_bar=bool(tr.progress_bar),
        enable_model_summary=False, log_every_n_steps=int(tr.log_every_n_steps), limit_val_batches=0,
        num_sanity_val_steps=0, gradient_clip_val=tr.gradient_clip_val, deterministic=bool(tr.deterministic),
        default_root_dir=str(run_dir), plugins=slurm.cluster_plugins() + precision_plugins,  # no Lightning auto-requeue
    )
    if tr.compile:
        module.model = torch.compile(module.model)
    try:
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


def _wandb_logger(wb: dict, run_dir: Path, resolved: dict):
    from lightning.pytorch.loggers import WandbLogger

    id_file = run_dir / "wandb_id.txt"
    if not id_file.exists():  # a stable id lets a resumed run continue the same W&B run
        import uuid

        atomic_write_text(id_file, uuid.uuid4().hex[:12])
    # explicit either way: an inherited WANDB_MODE must not contradict logger.offline
    os.environ["WANDB_MODE"] = "offline" if wb.get("offline", True) else "online"
    import wandb

    logger = WandbLogger(project=wb.get("project", "icl_hybrids"), entity=wb.get("entity"),
                         save_dir=str(run_dir), offline=bool(wb.get("offline", True)), id=id_file.read_text().strip(),
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
