"""Checkpoints a run can resume from: which exist, which load, which to take (``choose_resume``); used by
``train.run`` and checked by ``preflight`` for ``resume_from=``."""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("icl_hybrids")


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
