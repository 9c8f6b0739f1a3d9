"""Training entry: validate -> protect the run directory -> resume or start -> fit -> results.json."""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .config import ConfigError, validate
from .io import atomic_write_text, read_json
from .results import is_finished

log = logging.getLogger("icl_hybrids")

# Keys that may change when a run is resumed (they do not change what is being trained).
RESUMABLE_KEYS = {"trainer.max_steps", "trainer.progress_bar", "trainer.num_threads", "trainer.accelerator",
                  "trainer.ckpt_every_n_steps", "trainer.last_ckpt_every_n_steps", "trainer.log_every_n_steps",
                  "logger", "eval", "resume", "resume_from", "out_root", "run_dir", "sweep_name", "trainer.compile", "seeds",
                  "optim.fused", "optim.foreach", "config_dirs"}


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


# ---- preflight: everything that can be checked before anything is written ------------------------------
# Up-front memory estimate (docs/reliability.md). Deliberately simple and on the low side, so that a refused
# configuration certainly does not fit (an accepted one may still run out of memory at the margin):
#   parameters (counted exactly on the meta device) x 4 fp32 tensors (weights, grads, Adam's two moments)
#   + activations  batch x tokens x d_model x n_layer x ACT_FACTOR x bytes per element  (tokens = 2 n_points)
#   + prompts      batch x n_points x (n_dims + y_dim) x 4 bytes
# against the device's total memory (GPU: its memory; CPU: physical RAM).
ACT_FACTOR = 16


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1024 or unit == "PB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"


def _n_params(model_cfg: dict, task) -> int:
    import torch

    from .models.model import build_model

    try:
        with torch.device("meta"):
            model = build_model(model_cfg, n_dims=task.n_dims, y_dim=task.y_dim, max_points=task.n_points)
        return sum(p.numel() for p in model.parameters())
    except Exception:  # noqa: BLE001 - a model that cannot be built on meta: transformer-sized guess
        d, n = int(model_cfg["d_model"]), int(model_cfg["n_layer"])
        return 12 * n * d * d


def memory_estimate(resolved: dict, task) -> dict:
    """Bytes the training step needs at least (see ACT_FACTOR above): {"state", "activations", "total", ...}."""
    m, b = resolved["model"], int(resolved["optim"]["batch_size"])
    n_params = _n_params(m, task)
    prec = str(resolved["trainer"]["precision"])
    elem = 8 if prec.startswith("64") else 2 if ("16" in prec) else 4
    state = n_params * 4 * (8 if prec.startswith("64") else 4)
    act = b * 2 * task.n_points * int(m["d_model"]) * int(m["n_layer"]) * ACT_FACTOR * elem
    data = b * task.n_points * (task.n_dims + task.y_dim) * 4
    return {"n_params": n_params, "state": state, "activations": act, "data": data, "total": state + act + data}


def _device_memory(accelerator: str) -> tuple[str, int | None]:
    import torch

    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        if torch.cuda.is_available():
            return f"GPU ({torch.cuda.get_device_name(0)})", torch.cuda.get_device_properties(0).total_memory
        return "GPU", None
    try:
        return "CPU RAM", os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return "CPU RAM", None


def _check_accelerator(tr: dict) -> None:
    import torch

    acc = str(tr["accelerator"])
    if acc in ("gpu", "cuda"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        mps = acc == "gpu" and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
        if n == 0 and not mps:
            raise ConfigError(f"trainer.accelerator={acc!r}: no GPU is available on this machine "
                              "(use trainer.accelerator=cpu or auto)")
        if n and int(tr["devices"]) > n:
            raise ConfigError(f"trainer.devices={tr['devices']}: only {n} GPU(s) available")
    elif acc == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise ConfigError("trainer.accelerator='mps': MPS is not available on this machine")
    elif acc == "tpu":
        raise ConfigError("trainer.accelerator='tpu': not supported here (use cpu, gpu or auto)")


def _check_positions(task, positions) -> None:
    if positions is None:
        return
    from .evaluation import score_positions

    try:
        pos = score_positions(task, task.n_points, positions)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"eval.positions={positions!r}: a list of ints or {{start: a, stop: b}} ({e})") from None
    scored = set(torch_nonzero(task.scored_positions(task.n_points)))
    bad = [p for p in pos if p not in scored]
    if not pos or bad:
        lo, hi = min(scored), max(scored)
        raise ConfigError(f"eval.positions={positions!r}: position(s) {bad[:5] or '(none)'} are not scored by task "
                          f"{task.name} (scored: {lo}..{hi} of task.n_points={task.n_points})")


def torch_nonzero(mask) -> list[int]:
    import torch

    return torch.nonzero(mask).flatten().tolist()


def _wandb_key(base_url: str) -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc
    from urllib.parse import urlparse

    try:
        auth = netrc.netrc(os.environ.get("NETRC")).authenticators(urlparse(base_url).hostname or "")
        return bool(auth and auth[2])
    except (OSError, netrc.NetrcParseError):
        return False


WANDB_CONNECT_TIMEOUT_S = 10.0


def _check_wandb(wb: dict) -> None:
    """logger.offline=false: a key must be set and the server reachable within WANDB_CONNECT_TIMEOUT_S
    (one line otherwise, never wandb's ~90 s stall and traceback)."""
    if wb is None or wb.get("offline", True):
        return
    import socket
    import threading
    from urllib.parse import urlparse

    url = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    hint = "or log offline: logger.offline=true (and `wandb sync <run_dir>/wandb` later)"
    if not _wandb_key(url):
        raise ConfigError(f"logger.offline=false: no W&B API key (set WANDB_API_KEY or run `wandb login`), {hint}")
    u = urlparse(url)
    host, port = u.hostname or "api.wandb.ai", u.port or (80 if u.scheme == "http" else 443)
    err: list = ["timed out"]

    def probe():
        try:
            socket.create_connection((host, port), timeout=WANDB_CONNECT_TIMEOUT_S).close()
            err[0] = None
        except OSError as e:
            err[0] = e.strerror or type(e).__name__

    t = threading.Thread(target=probe, daemon=True)  # name resolution is not bounded by the socket timeout
    t.start()
    t.join(WANDB_CONNECT_TIMEOUT_S + 1)
    if err[0] is not None:
        raise ConfigError(f"logger.offline=false: cannot reach {url} within {WANDB_CONNECT_TIMEOUT_S:.0f} s "
                          f"({err[0]}); {hint}")


def checkpoint_problem(path) -> str | None:
    """None when ``path`` loads as a training checkpoint with finite weights, else why not (one line)."""
    import torch

    try:
        ck = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - anything unreadable
        msg = str(e).strip().splitlines()[0][:100] if str(e).strip() else ""
        return f"does not load ({type(e).__name__}{': ' + msg if msg else ''})"
    if not isinstance(ck, dict) or "state_dict" not in ck or "global_step" not in ck:
        return "not a checkpoint written by icl_hybrids training"
    bad = [k for k, v in ck["state_dict"].items() if torch.is_tensor(v) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad:
        return f"holds non-finite weights ({bad[0]})"
    return None


def optimizer_state_dropped(path) -> bool:
    """True for a weights-only trajectory checkpoint (step<k>.ckpt: no optimizer state, see lit.ICLModule)."""
    import torch

    from .lit import OPTIMIZER_DROPPED

    try:
        ck = torch.load(str(path), map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # noqa: BLE001 - unreadable: checkpoint_problem says why
        return False
    return isinstance(ck, dict) and bool(ck.get(OPTIMIZER_DROPPED))


def _step_of(path: Path) -> int:
    import re

    m = re.fullmatch(r"step(\d+)\.ckpt", path.name)
    return int(m.group(1)) if m else -1


def resume_candidates(ckpt_dir: Path) -> list[Path]:
    """last.ckpt, then step<k>.ckpt from the newest step down."""
    steps = sorted((p for p in ckpt_dir.glob("step*.ckpt") if _step_of(p) >= 0), key=_step_of, reverse=True)
    last = ckpt_dir / "last.ckpt"
    return ([last] if last.is_file() else []) + steps


def choose_resume(ckpt_dir: Path) -> str | None:
    """The newest checkpoint that loads (skipped ones are reported); None when there is none at all.
    Checkpoints that exist but none loads is an error: never silently restart from step 0."""
    cands = resume_candidates(ckpt_dir)
    skipped = []
    for p in cands:
        why = checkpoint_problem(p)
        if why is None:
            if skipped:
                log.warning("resuming from %s (skipped: %s)", p, "; ".join(skipped))
            return str(p)
        skipped.append(f"{p.name} {why}")
        log.warning("skipping checkpoint %s: %s", p, why)
    if cands:
        from .cli import RunFailed

        raise RunFailed(f"{ckpt_dir}: no checkpoint loads ({'; '.join(skipped[:3])}); delete that directory to "
                        "restart from step 0, or give resume_from=<file>")
    return None


def _read_run_file(path: Path, kind: str):
    what = ("delete it to start the run over (or fix it)" if kind == "config" else
            "delete it; training resumes from the checkpoints and rewrites it")
    try:
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=False) if kind == "config" else read_json(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file
        raise ConfigError(f"{path}: unreadable ({type(e).__name__}: {str(e).strip().splitlines()[0][:80] if str(e).strip() else ''}); "
                          f"{what}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping, found {type(data).__name__}; {what}")
    return data


def preflight(cfg: DictConfig) -> dict:
    """Validate everything before anything is written: the config (config.validate), the machine
    (accelerator, memory estimate, W&B reachability), resume_from, and the run directory's state
    (a different run, a diverged run, unreadable records). Returns the resolved config plus
    ``_state``: "new", "finished" (with ``_results``) or "resume"."""
    from .cli import RunFailed

    validate(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    from .baselines import config_dirs
    from .config import CONF_DIR

    # a user's own config directories (their tasks, mixers, baselines): recorded so that evaluating the
    # checkpoint later finds the same configs
    resolved["config_dirs"] = [str(d) for d in config_dirs() if d != CONF_DIR]
    tr = resolved["trainer"]
    _check_accelerator(tr)
    from .lit import build_task

    try:
        task = build_task(OmegaConf.create(resolved["task"]))
    except Exception as e:  # noqa: BLE001 - a task constructor's argument check (e.g. MQAR's n_queries)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(msg if msg.startswith("task.") else f"task: {msg}") from None
    _check_positions(task, resolved["eval"].get("positions"))
    est = memory_estimate(resolved, task)
    where, have = _device_memory(str(tr["accelerator"]))
    if have and est["total"] > have:
        raise ConfigError(
            f"model.d_model={resolved['model']['d_model']} model.n_layer={resolved['model']['n_layer']} "
            f"optim.batch_size={resolved['optim']['batch_size']}: needs an estimated {_fmt_bytes(est['total'])} "
            f"({est['n_params']:,} params: {_fmt_bytes(est['state'])} weights+grads+Adam; activations "
            f"{_fmt_bytes(est['activations'])}) but the {where} has {_fmt_bytes(have)}; make the model or batch smaller")
    if resolved.get("logger", {}).get("kind") == "wandb":
        _check_wandb(resolved["logger"])
    explicit = resolved.get("resume_from")
    if explicit:
        if not Path(explicit).is_file():
            raise ConfigError(f"resume_from={explicit!r}: checkpoint file not found")
        why = checkpoint_problem(explicit)
        if why:
            raise ConfigError(f"resume_from={explicit!r}: {why}")

    run_dir = Path(resolved["run_dir"])
    cfg_path, res_path = run_dir / "config.yaml", run_dir / "results.json"
    prev = _read_run_file(res_path, "results") if res_path.exists() else None
    if prev is not None and prev.get("status") == "diverged":
        raise RunFailed(f"run_dir={str(run_dir)!r} diverged at step {prev.get('diverged_at_step', '?')} "
                        f"({prev.get('diverged_reason', 'non-finite loss')}; {res_path}); resuming would diverge "
                        "again: start a new run (other name=/seed=, lower optim.lr or trainer.gradient_clip_val) "
                        "or delete that directory")
    state = "new"
    if cfg_path.exists():
        old = _read_run_file(cfg_path, "config")
        try:
            old = OmegaConf.to_container(OmegaConf.create(old), resolve=True)
        except Exception:  # noqa: BLE001 - interpolations that no longer resolve: compare unresolved
            pass
        diff = config_diff(old, resolved)
        if diff:
            raise ConfigError(f"run_dir={str(run_dir)!r} holds a different run ({'; '.join(diff[:3])}); "
                              "choose another name=/out_root=/seed= or delete that directory")
        state = "resume"
        if is_finished(prev, int(tr["max_steps"])):
            state = "finished"
    resolved["_state"], resolved["_results"] = state, prev
    return resolved


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
