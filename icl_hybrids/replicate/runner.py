"""Running the replication: every (group, model) pair is one Hydra multirun over the group's seeds, started
through the sweep runner (``icl_hybrids.sweep.run_parallel``, one process per pair); ``jobs`` pairs run side by
side, longest first, one CPU thread per job. Wall time per pair and per session goes to ``DIR/replicate_run.json``."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from .plan import DEFAULT_ROOT, OPTIONAL, RUN_LOG, load_plan, unit_cost

#: one (group, model) multirun: ``sweep.run_parallel`` over the given overrides, one process
UNIT = "import sys; from icl_hybrids.sweep import run_parallel; sys.exit(run_parallel(sys.argv[1:], 1))"


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} ({os.cpu_count()} cores visible)"


def _append_log(root: Path, entry: dict) -> None:
    path = root / RUN_LOG
    log = json.loads(path.read_text()) if path.exists() else {"sessions": []}
    log["sessions"].append(entry)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(log, indent=1))
    tmp.replace(path)


def run(n_procs: int = 2, root: str | None = None, overrides: list[str] | tuple = (), only: list[str] | None = None) -> int:
    """Every group's (group, model) multiruns, ``n_procs`` side by side, longest first. Returns the worst rc."""
    groups = load_plan(root, overrides, only)
    root_dir = Path(root or DEFAULT_ROOT)
    root_dir.mkdir(parents=True, exist_ok=True)
    (root_dir / "logs").mkdir(exist_ok=True)
    units = []
    for g in groups:
        for m in g.models:
            jobs = [j for j in g.jobs if j.model == m]
            if all(j.status() == "finished" for j in jobs):
                continue
            units.append((unit_cost(jobs), g, m))
    # longest first, the optional groups (OPTIONAL: the paper_code outlier pairs) after all the others
    units.sort(key=lambda u: (u[1].short.startswith(OPTIONAL), -u[0]))
    print(f"replicate: {len(units)} (group, model) multiruns to run, {n_procs} at a time; root {root_dir}", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    lock = threading.Lock()
    queue = list(units)
    done: list[dict] = []
    t0 = time.time()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                _, g, m = queue.pop(0)
            # the plan already expanded a model=a,b override into units: each unit runs its one model
            own = [o for o in overrides if o.partition("=")[0].lstrip("+~") != "model"]
            cmd = [sys.executable, "-c", UNIT, f"experiment={g.name}", *own, f"model={m}"]
            if root is not None:
                cmd.append(f"hydra.sweep.dir={Path(root) / g.short}")
            log = root_dir / "logs" / f"{g.short}__{m}.log"
            t = time.time()
            with open(log, "a") as fh:
                rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
            with lock:
                done.append({"group": g.short, "model": m, "rc": rc, "wall_s": round(time.time() - t, 1)})
                print(f"[{time.time() - t0:7.0f}s] {g.short} {m}: rc={rc} {time.time() - t:.0f}s "
                      f"({len(done)}/{len(units)})", flush=True)

    threads = [threading.Thread(target=worker) for _ in range(max(1, n_procs))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.time() - t0
    _append_log(root_dir, {"started": started, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                           "wall_s": round(wall, 1), "n_procs": n_procs, "machine": machine(),
                           "overrides": list(overrides), "only": list(only or []), "units": done})
    print(f"replicate: done in {wall / 60:.1f} min", flush=True)
    return max((u["rc"] for u in done), key=abs, default=0)

