"""A run's record, ``<run_dir>/results.json``, and the one rule for what state a run is in.

The training callback writes it (atomically, strict JSON); training returns it; the resume/skip check,
``sweep status=true`` and aggregation all read a run's state through ``run_state`` here, so "finished" means
the same thing everywhere: ``status: finished`` at (at least) the number of steps asked for.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

FILE = "results.json"
_WARNED: set = set()


def is_finished(res: dict | None, max_steps: int | None = None) -> bool:
    """Finished at ``max_steps`` (the run's own recorded ``max_steps`` when not given)."""
    if not isinstance(res, dict) or res.get("status") != "finished":
        return False
    target = res.get("max_steps") if max_steps is None else max_steps
    return target is not None and int(res.get("step") or 0) >= int(target)


def read_results(run_dir) -> dict | None:
    """results.json as a dict; None when absent, unreadable or not a JSON object (warned once)."""
    p = Path(run_dir) / FILE
    if not p.is_file():
        return None
    try:
        res = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(res, dict):
        if p not in _WARNED:
            _WARNED.add(p)
            print(f"warning: {p}: not a results object ({type(res).__name__}); counted as failed", file=sys.stderr)
        return None
    return res


def run_state(run_dir, max_steps: int | None = None) -> tuple[str, dict | None]:
    """``(state, results)`` with state one of: finished | diverged | unfinished (results.json says so),
    failed (no readable results.json: it never evaluated, or the file is damaged)."""
    res = read_results(run_dir)
    if res is None:
        return "failed", None
    if res.get("status") == "diverged":  # non-finite loss: stopped, never a score
        return "diverged", res
    return ("finished" if is_finished(res, max_steps) else "unfinished"), res
