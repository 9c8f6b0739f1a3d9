"""The paper's trained baselines (Table 3, marked *): decision-tree runs are scored against a trained GPT-2
and sparse-parity runs against a trained Mamba of the same sweep (``paper.REFERENCE_MODELS``).

Training scores every run against its configured baseline (a greedy tree, the Bayes-optimal parity
estimator), so runs never wait for each other. Once the sweep's reference runs are trained, ``rescore``
scores every finished run of those tasks against the reference checkpoint of the same seed, on the run's
own evaluation prompts, and writes ``<run>/paper_baseline.json`` (atomically); aggregation uses it for
the like-for-like Table 3. It runs by itself at the end of a sweep (``PaperBaselines``, a Hydra callback,
so after every launcher: local, joblib, SLURM), and again from ``make table3`` (idempotent).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import OmegaConf

from .io import atomic_write_json, read_json
from .paper import REFERENCE_MODELS, reference_baseline_path

log = logging.getLogger("icl_hybrids.reference")
FILE = "paper_baseline.json"


def _reference_for(sweep_dir: Path, task: str, seed: int) -> Path | None:
    for s in (seed, 0):  # the same seed's reference, else seed 0's (the paper trained one per cell)
        p = reference_baseline_path(sweep_dir, task, s)
        if p is not None and p.is_file():
            return p
    return None


def rescore_run(run_dir: Path, ref: Path) -> dict:
    """Score the run's final checkpoint against the reference checkpoint ``ref`` on the run's evaluation set."""
    from .evaluation import FixedEvaluation, score_positions
    from .lit import load_module

    run_dir = Path(run_dir)
    cfg = OmegaConf.load(run_dir / "config.yaml")
    module = load_module(run_dir / "checkpoints" / "last.ckpt")
    task, ev = module.task, cfg.eval
    name = f"ckpt:{ref}"
    task.baseline = name
    fe = FixedEvaluation(task, int(ev.n_prompts), int(cfg.seed) + int(ev.seed_offset), [name],
                         score_positions(task, task.n_points, ev.get("positions")), chunk=ev.get("chunk_prompts"))
    s = fe.score(module.model, int(ev.batch_size))
    ref_step = int(__import__("torch").load(ref, map_location="cpu", weights_only=False).get("global_step", 0))
    out = {"baseline": name, "reference_run": str(ref.parent.parent), "reference_step": ref_step,
           "step": getattr(module, "global_step_loaded", None),
           **{k: s[k] for k in ("icl_score", "icl_score_ci95", "icl_score_ci_method", "n_prompts", "score_positions",
                                "model_errors", "baseline_errors")}}
    atomic_write_json(run_dir / FILE, out)
    return out


def rescore(sweep_dir, force: bool = False) -> list[Path]:
    """Rescore every finished run of the reference tasks in ``sweep_dir`` whose paper_baseline.json is missing
    or older than its checkpoint or the reference. Returns the files written."""
    from .aggregate import find_runs

    sweep_dir = Path(sweep_dir)
    written = []
    for run in find_runs(sweep_dir):
        if run.task not in REFERENCE_MODELS or not run.finished or run.run_dir is None:
            continue
        ref = _reference_for(sweep_dir, run.task, run.seed)
        ckpt = run.run_dir / "checkpoints" / "last.ckpt"
        if ref is None or not ckpt.is_file():
            if ref is None:
                print(f"note: {run.run_dir}: no trained {REFERENCE_MODELS[run.task]} for {run.task} in {sweep_dir} "
                      "yet; scored against its configured baseline only", file=sys.stderr)
            continue
        out = run.run_dir / FILE
        if not force and out.is_file():
            try:
                prev = read_json(out)
                fresh = out.stat().st_mtime >= max(ckpt.stat().st_mtime, ref.stat().st_mtime)
                if fresh and prev.get("baseline") == f"ckpt:{ref}":
                    continue
            except (OSError, ValueError):
                pass
        rescore_run(run.run_dir, ref)
        log.info("rescored %s against %s", run.run_dir, ref)
        written.append(out)
    return written


try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object


class PaperBaselines(_HydraCallback):
    """Hydra callback (``hydra.callbacks``): when the multirun ends (all jobs done, whatever the launcher),
    rescore the sweep's decision-tree and sparse-parity runs against its trained reference models."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            n = len(rescore(sweep_dir))
            print(f"paper baselines: {n} run(s) rescored against the sweep's trained references", file=sys.stderr)
        except Exception as e:  # noqa: BLE001 - never turn a finished sweep into a failure
            print(f"warning: rescoring against the paper's reference models failed: {e}", file=sys.stderr)
