"""Training entry: validate -> protect the run directory -> resume or start -> fit -> results.json."""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .config import ConfigError, validate
from .io import atomic_write_text, read_json

log = logging.getLogger("icl_hybrids")

# Keys that may change when a run is resumed (they do not change what is being trained).
RESUMABLE_KEYS = {"trainer.max_steps", "trainer.progress_bar", "trainer.num_threads", "trainer.accelerator",
                  "trainer.ckpt_every_n_steps", "trainer.last_ckpt_every_n_steps", "trainer.log_every_n_steps",
                  "logger", "eval", "resume", "resume_from", "out_root", "run_dir", "sweep_name", "trainer.compile", "seeds",
                  "optim.fused", "optim.foreach"}


def _flatten(d, prefix=""):
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            yield from _flatten(v, key + ".")
        else:
            yield key, v


def config_diff(old: dict, new: dict) -> list[str]:
    a, b = dict(_flatten(old)), dict(_flatten(new))
    out = []
    for k in sorted(set(a) | set(b)):
        if any(k == r or k.startswith(r + ".") for r in RESUMABLE_KEYS):
            continue
        if a.get(k, "<absent>") != b.get(k, "<absent>"):
            out.append(f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}")
    return out


def run(cfg: DictConfig) -> dict:
    """Train (or resume) one run; returns its results dict. Raises ConfigError for bad input."""
    validate(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    run_dir = Path(resolved["run_dir"])
    cfg_path, res_path, ckpt_dir = run_dir / "config.yaml", run_dir / "results.json", run_dir / "checkpoints"

    explicit = resolved.get("resume_from")
    if explicit and not Path(explicit).is_file():
        raise ConfigError(f"resume_from={explicit!r}: checkpoint file not found")
    if cfg_path.exists():
        old = OmegaConf.to_container(OmegaConf.load(cfg_path), resolve=True)
        diff = config_diff(old, resolved)
        if diff:
            raise ConfigError(f"run_dir={str(run_dir)!r} holds a different run ({'; '.join(diff[:3])}); "
                              "choose another name=/out_root=/seed= or delete that directory")
        if res_path.exists():
            prev = read_json(res_path)
            if prev.get("status") == "finished" and prev.get("step", 0) >= cfg.trainer.max_steps:
                log.info("run already finished: %s (icl_score=%.4f)", res_path, prev["icl_score"])
                return prev

    ckpt = explicit or (str(ckpt_dir / "last.ckpt") if resolved.get("resume", True) and (ckpt_dir / "last.ckpt").exists() else None)
    atomic_write_text(cfg_path, OmegaConf.to_yaml(resolved))
    return fit(cfg, resolved, run_dir, ckpt)


def fit(cfg: DictConfig, resolved: dict, run_dir: Path, ckpt: str | None) -> dict:
    import lightning as L
    import torch
    from lightning.pytorch.loggers import CSVLogger

    from . import slurm
    from .callbacks import AtomicCheckpoint, ICLEvalCallback, progress_bar
    from .lit import ICLModule

    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*IterableDataset.*has `__len__`.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*srun.*command is available.*")
    tr = cfg.trainer
    if tr.num_threads:
        torch.set_num_threads(int(tr.num_threads))
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    module = ICLModule(resolved)

    loggers = [CSVLogger(save_dir=str(run_dir), name="logs")]
    wb = resolved["logger"] if resolved.get("logger", {}).get("kind") == "wandb" else None
    if wb:
        loggers.append(_wandb_logger(wb, run_dir, resolved))
    extra = {"task": module.task.name,
             "model": resolved["name"], "seed": int(cfg.seed), "run_dir": str(run_dir),
             "task_config": module.task.describe()}
    evalcb = ICLEvalCallback(run_dir, cfg, cfg.eval.every_n_steps, extra)
    callbacks = [AtomicCheckpoint(run_dir / "checkpoints", tr.ckpt_every_n_steps, tr.last_ckpt_every_n_steps), evalcb]
    callbacks += slurm.requeue_callbacks(callbacks[0])  # SLURM USR2: save last.ckpt, then submitit requeues
    if tr.progress_bar:
        callbacks.append(progress_bar())
    trainer = L.Trainer(
        max_steps=int(tr.max_steps), accelerator=tr.accelerator, devices=tr.devices, precision=tr.precision,
        logger=loggers, callbacks=callbacks, enable_checkpointing=False, enable_progress_bar=bool(tr.progress_bar),
        enable_model_summary=False, log_every_n_steps=int(tr.log_every_n_steps), limit_val_batches=0,
        num_sanity_val_steps=0, gradient_clip_val=tr.gradient_clip_val, deterministic=bool(tr.deterministic),
        default_root_dir=str(run_dir), plugins=slurm.cluster_plugins(),  # no Lightning auto-requeue
    )
    if tr.compile:
        module.model = torch.compile(module.model)
    try:
        trainer.fit(module, ckpt_path=ckpt)
    finally:
        if wb:
            import wandb

            wandb.finish()
    return read_json(run_dir / "results.json")


def _wandb_logger(wb: dict, run_dir: Path, resolved: dict):
    from lightning.pytorch.loggers import WandbLogger

    id_file = run_dir / "wandb_id.txt"
    if not id_file.exists():  # a stable id lets a resumed run continue the same W&B run
        import uuid

        atomic_write_text(id_file, uuid.uuid4().hex[:12])
    # explicit either way: an inherited WANDB_MODE must not contradict logger.offline
    os.environ["WANDB_MODE"] = "offline" if wb.get("offline", True) else "online"
    return WandbLogger(project=wb.get("project", "icl_hybrids"), entity=wb.get("entity"),
                       save_dir=str(run_dir), offline=bool(wb.get("offline", True)), id=id_file.read_text().strip(),
                       resume="allow", tags=list(wb.get("tags", [])), config=resolved)
