"""Everything checked before a run writes anything (``preflight``): the config, the machine (accelerator,
memory estimate, W&B reachability), ``resume_from`` and the run directory's state (a different run, a
diverged run, unreadable records). ``train.run`` calls it; so does the Hydra entry before it creates a
run directory."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .config import ConfigError, logger_kinds, validate
from .io import read_json
from .results import is_finished
from .resume import checkpoint_problem

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


# Keys added after runs existed, with the value that trains exactly as before: a run directory whose
# config.yaml lacks one holds the same run as a config that has it at this value.
ADDED_KEYS = {"trainer.strategy": "auto", "trainer.num_nodes": 1}


def config_diff(old: dict, new: dict) -> list[str]:
    a, b = dict(_flatten(old)), dict(_flatten(new))
    out = []
    for k in sorted(set(a) | set(b)):
        if any(k == r or k.startswith(r + ".") for r in RESUMABLE_KEYS):
            continue
        va, vb = (d.get(k, ADDED_KEYS.get(k, "<absent>")) for d in (a, b))
        if va != vb:
            out.append(f"{k}: {va!r} -> {vb!r}")
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
    elif acc == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise ConfigError("trainer.accelerator='mps': MPS is not available on this machine")
    elif acc == "tpu":
        raise ConfigError("trainer.accelerator='tpu': not supported here (use cpu, gpu or auto)")


def _check_world(resolved: dict) -> None:
    """The devices exist here and the global batch splits over the world (devices here x trainer.num_nodes):
    "auto" devices are only counted now (config.validate checks the explicit counts)."""
    from .config import check_world_size, devices_here

    tr = resolved["trainer"]
    n = devices_here(tr)
    check_world_size(n * int(tr["num_nodes"]), int(resolved["optim"]["batch_size"]),
                     where=f"trainer.devices={tr['devices']!r} ({n} here) x trainer.num_nodes={tr['num_nodes']}")


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


def _read_run_file(path: Path, kind: str):
    what = ("delete it to start the run over (or fix it)" if kind == "config" else
            "delete it; training resumes from the checkpoints and rewrites it")
    try:
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=False) if kind == "config" else read_json(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file
        first = str(e).strip().splitlines()[0][:80] if str(e).strip() else ""
        raise ConfigError(f"{path}: unreadable ({type(e).__name__}: {first}); "
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
    _check_world(resolved)
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
    if "wandb" in logger_kinds(resolved.get("logger")):
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
