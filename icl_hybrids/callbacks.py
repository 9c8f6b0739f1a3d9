"""Training callbacks: atomic checkpoints, periodic ICL evaluation into results.json, hardware metrics."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ProgressBar
from omegaconf import OmegaConf

from .evaluation import FixedEvaluation, format_score, score_positions
from .io import atomic_write_json

log = logging.getLogger("icl_hybrids")


class Diverged(Exception):
    """Training produced a non-finite loss or non-finite weights (raised by ``NonFiniteGuard``)."""

    def __init__(self, step: int, what: str):
        super().__init__(f"{what} at step {step}")
        self.step, self.what = int(step), what


def all_finite(module) -> bool:
    ps = [p.detach() for p in module.parameters()]
    return bool(torch.stack([torch.isfinite(p).all() for p in ps]).all()) if ps else True


def world_size(trainer) -> int:
    return int(getattr(trainer, "world_size", 1) or 1)


def first_bad_step(trainer, pl_module) -> int | None:
    """The first step with a non-finite loss on any rank (None: none). A collective under DDP (a MIN
    all-reduce): every rank must call it at the same point."""
    bad = pl_module.first_nonfinite_step() if hasattr(pl_module, "first_nonfinite_step") else None
    if world_size(trainer) <= 1:
        return bad
    none = torch.iinfo(torch.long).max
    t = torch.tensor(none if bad is None else bad, dtype=torch.long, device=pl_module.device)
    t = int(trainer.strategy.reduce(t, reduce_op="min"))
    return None if t == none else t


class NonFiniteGuard(L.Callback):
    """Stops training (raises ``Diverged``) at the first non-finite loss, before anything is saved.

    The LightningModule records the first step whose loss was not finite in a device tensor (no host sync
    per step); the guard reads it every step on the CPU, every ``check_every`` steps on an accelerator, and
    always before a checkpoint or results.json is written (``check``, which also checks the weights).
    It must come first in the callback list so that it runs before the checkpoint callback.

    Under DDP the decision is collective (``first_bad_step``): each rank's loss is its own shard's, so one
    rank alone could see an infinity; every rank calls ``check`` at the same points and all stop together
    (a rank stopping alone would leave the others waiting in the next gradient all-reduce)."""

    def __init__(self, check_every: int = 1):
        self.check_every = max(1, int(check_every))

    def check(self, trainer, pl_module, weights: bool = False) -> None:
        bad = first_bad_step(trainer, pl_module)
        if bad is not None:
            raise Diverged(bad, "loss is not finite")
        if weights and not all_finite(pl_module):
            raise Diverged(trainer.global_step, "weights are not finite")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.device.type == "cpu" or trainer.global_step % self.check_every == 0:
            self.check(trainer, pl_module)


class CollectiveSigterm(L.Callback):
    """Under DDP, SIGTERM as a decision every rank takes after the same step. Lightning's own handler
    broadcasts from inside the signal handler, a collective issued wherever the signal lands, which can pair
    with a different collective on the other ranks (an all-reduce, a barrier) and leave them all waiting.
    During training this handler only notes the signal; at the guard's cadence (every step on the CPU,
    every ``check_every`` on an accelerator) the ranks all-reduce their notes, and if any rank was signalled
    all raise Lightning's SIGTERMException together: AtomicCheckpoint then writes last.ckpt (a collective,
    now on every rank) and the run exits 143. One process: Lightning's handling, untouched."""

    def __init__(self, check_every: int = 1):
        self.check_every = max(1, int(check_every))
        self._installed, self._prev, self._noted = False, None, False

    def _note(self, signum, frame):
        self._noted = True

    def on_train_start(self, trainer, pl_module):
        import signal

        if world_size(trainer) > 1 and not self._installed:
            self._prev, self._installed = signal.signal(signal.SIGTERM, self._note), True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not self._installed or (pl_module.device.type != "cpu" and trainer.global_step % self.check_every):
            return
        flag = torch.tensor(int(self._noted), dtype=torch.long, device=pl_module.device)
        if int(trainer.strategy.reduce(flag, reduce_op="max")):
            from lightning.pytorch.utilities.exceptions import SIGTERMException

            raise SIGTERMException

    def teardown(self, trainer, pl_module, stage):
        import signal

        if self._installed:  # a handler installed outside Python reads back as None: the default then
            signal.signal(signal.SIGTERM, self._prev if self._prev is not None else signal.SIG_DFL)
            self._installed = False


class AtomicCheckpoint(L.Callback):
    """``last.ckpt`` every ``last_every`` steps and at the end (written to a temp file, then renamed, so a
    kill never leaves a broken checkpoint), and ``step<k>.ckpt`` every ``every`` steps (kept: trajectories).

    last.ckpt holds everything (bitwise resume); the step checkpoints leave the optimizer state out unless
    ``step_optimizer_state`` (a third of the bytes: docs/sweeps.md "Checkpoint sizes"). A resume that falls
    back to one (train.choose_resume: last.ckpt damaged) continues at its step with fresh Adam moments.

    The temp name is unique per writer (pid and rank) and removed if the write fails (full disk). Under DDP
    every rank calls ``save`` at the same step (Lightning's save_checkpoint ends in a barrier); only global
    rank 0 writes the file (Lightning's DDP strategy) and renames it. With a ``guard``, nothing is written
    once the loss or the weights are not finite: the last finite checkpoint stays untouched. On SIGTERM
    (Lightning stops at the end of the step) last.ckpt is written so a rerun resumes from there."""

    def __init__(self, dirpath, every: int, last_every: int, guard: NonFiniteGuard | None = None,
                 step_optimizer_state: bool = False):
        self.dir, self.every, self.last_every = Path(dirpath), int(every), int(last_every)
        self.guard = guard
        self.step_optimizer_state = bool(step_optimizer_state)

    def save(self, trainer, name: str, weights_only: bool = False) -> None:
        if self.guard is not None:
            self.guard.check(trainer, trainer.lightning_module, weights=True)
        if trainer.is_global_zero:
            self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{name}.{os.getpid()}.rank{trainer.global_rank}.tmp"
        module = trainer.lightning_module
        if module is not None:
            module._save_weights_only = weights_only  # read by ICLModule.on_save_checkpoint
        try:
            trainer.save_checkpoint(tmp, weights_only=False)  # collective: every rank calls it
            if trainer.is_global_zero:
                os.replace(tmp, self.dir / name)
        except BaseException:
            if trainer.is_global_zero:  # the other ranks never had a temp file
                tmp.unlink(missing_ok=True)
            raise
        finally:
            if module is not None:
                module._save_weights_only = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every == 0:
            self.save(trainer, f"step{step}.ckpt", weights_only=not self.step_optimizer_state)
        if step % self.last_every == 0 or step >= trainer.max_steps:
            self.save(trainer, "last.ckpt")

    def on_train_end(self, trainer, pl_module):
        self.save(trainer, "last.ckpt")

    def on_exception(self, trainer, pl_module, exception):
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(exception, SIGTERMException):
            self.save(trainer, "last.ckpt")


def progress_bar(tty: bool | None = None):
    """On a terminal: a rich progress bar over training steps (loss, curriculum stage, latest ICL score).
    Elsewhere (SLURM logs, ``make demo > log.txt``): ``PlainProgress``, one plain line now and then."""
    if tty is None:
        import sys

        tty = sys.stdout.isatty()
    if not tty:
        return PlainProgress()
    from lightning.pytorch.callbacks import RichProgressBar

    class StepProgressBar(RichProgressBar):
        def _get_train_description(self, current_epoch: int) -> str:
            return "training"

        def get_metrics(self, trainer, pl_module):
            m = super().get_metrics(trainer, pl_module)
            m.pop("v_num", None)
            return {k: (str(int(v)) if k in ("dims", "points") else v) for k, v in m.items()}  # no ".3f" on ints

    return StepProgressBar()


def _fmt_duration(s: float) -> str:
    s = int(round(s))
    h, m, sec = s // 3600, s % 3600 // 60, s % 60
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"


class PlainProgress(ProgressBar):
    """A progress line for logs that are not a terminal, printed to stdout (flushed) at the first step, then
    at most every ``every_s`` seconds (env ICL_HYBRIDS_PROGRESS_S, default 30) and at the last step:

        step 1500/5000 (30%)  loss 0.4123  24.1 steps/s  ETA 2m25s  icl 0.412

    steps/s counts the steps of this process (a resumed run does not count the restored ones)."""

    def __init__(self, every_s: float | None = None, stream=None):
        super().__init__()
        if every_s is None:
            every_s = float(os.environ.get("ICL_HYBRIDS_PROGRESS_S", "30"))
        self.every_s, self.stream = float(every_s), stream
        self._enabled = True
        self._t0 = self._last = None
        self._step0 = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer, pl_module):
        self._t0, self._last, self._step0 = time.perf_counter(), None, trainer.global_step

    def line(self, trainer) -> str:
        step, total = trainer.global_step, trainer.max_steps
        now = time.perf_counter()
        done = step - self._step0
        sps = done / (now - self._t0) if self._t0 is not None and now > self._t0 and done > 0 else None
        m = trainer.progress_bar_metrics
        parts = [f"step {step}/{total} ({100 * step / total:.0f}%)" if total and total > 0 else f"step {step}"]
        if "loss" in m:
            parts.append(f"loss {float(m['loss']):.4g}")
        if sps:
            parts.append(f"{sps:.1f} steps/s")
            if total and total > step:
                parts.append(f"ETA {_fmt_duration((total - step) / sps)}")
        if "icl" in m:
            parts.append(f"icl {float(m['icl']):.3f}")
        return "  ".join(parts)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not self._enabled or not trainer.is_global_zero:
            return
        now = time.perf_counter()
        last = trainer.global_step >= trainer.max_steps > 0
        if self._last is None or last or now - self._last >= self.every_s:
            import sys

            print(self.line(trainer), file=self.stream or sys.stdout, flush=True)
            self._last = now


def fast_paths(trainer, pl_module, cfg) -> dict:
    """The kernels this run actually used (recorded by the mixers on their last forward; None where the
    model has no such mixer): mamba_scan cuda|cpp|torch, attention flash|sdpa|explicit, adam
    fused|foreach|for-loop, compile, precision (docs/performance.md, "Fast paths")."""
    from .models.attention import CausalSelfAttention
    from .models.mamba import MambaMixer

    def used(cls):
        paths = sorted({m.last_path for m in pl_module.model.modules() if isinstance(m, cls) and m.last_path})
        return "+".join(paths) if paths else None

    adam = None
    for opt in getattr(trainer, "optimizers", None) or []:
        d = opt.defaults
        adam = "fused" if d.get("fused") else "foreach" if d.get("foreach") else "for-loop"
    return {"mamba_scan": used(MambaMixer), "attention": used(CausalSelfAttention), "adam": adam,
            "compile": bool(cfg.trainer.get("compile", False)), "precision": str(trainer.precision)}


def weights_fingerprint(module) -> str:
    """A short hash of a module's parameters (bitwise: equal hashes = identical weights)."""
    import hashlib

    h = hashlib.sha1()
    for p in module.parameters():
        h.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def data_record(trainer, pl_module, cfg) -> dict:
    """How the training batches were drawn (docs/sweeps.md, "Multi-device training (DDP)"): the world size,
    the prompts per rank, a fingerprint of each rank's first batch in this process
    (distinct fingerprints = distinct prompts) and, under DDP, of each rank's weights now (equal = the
    ranks are in sync). Gathered from every rank: a collective under DDP."""
    world = world_size(trainer)
    first = getattr(pl_module, "first_batch", None)
    out = {"world_size": world, "rank_batch_size": int(cfg.optim.batch_size) // world,
           "first_batch_step": first[0] if first else None, "first_batch_sha1": [first[1] if first else None]}
    if world > 1:
        import torch.distributed as dist

        mine = (out["first_batch_sha1"][0], weights_fingerprint(pl_module.model))
        gathered = [None] * world
        dist.all_gather_object(gathered, mine)
        out["first_batch_sha1"] = [g[0] for g in gathered]
        out["weights_sha1"] = [g[1] for g in gathered]
    return out


def log_error_curves(trainer, summary: dict, step: int) -> None:
    """The per-position squared errors of this evaluation (model and baselines) as a W&B table and line plot
    ``eval/error_curve`` (the other loggers get the scalar scores only)."""
    from lightning.pytorch.loggers import WandbLogger

    wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
    if not wandb_loggers:
        return
    import wandb

    names = ["model", *summary["baseline_errors"]]
    curves = [summary["model_errors"], *summary["baseline_errors"].values()]
    xs = summary["context_lengths"]
    table = wandb.Table(columns=["context_length", *names], data=[[x, *(c[i] for c in curves)] for i, x in enumerate(xs)])
    plot = wandb.plot.line_series(xs=xs, ys=curves, keys=names, title=f"squared error vs context length (step {step})",
                                  xname="context length")
    for lg in wandb_loggers:
        lg.log_metrics({"eval/error_table": table, "eval/error_curve": plot}, step=step)


class ICLEvalCallback(L.Callback):
    """Scores the model every ``every`` steps and at the end on fixed prompts against the baselines
    (computed once per run and cached), logs the score, and rewrites results.json atomically.

    Under DDP every rank evaluates (the weights and the evaluation prompts are the same on every rank, so
    are the scores) and only global rank 0 writes and logs: no rank waits in a collective for another's
    evaluation, and every rank returns the same results."""

    def __init__(self, run_dir, cfg, every: int, extra: dict, guard: NonFiniteGuard | None = None):
        self.run_dir, self.cfg, self.every, self.extra = Path(run_dir), cfg, int(every), extra
        self.guard = guard
        self.results: dict | None = None  # the last results.json written
        self._cache = None
        self.wall_s = 0.0  # training wall time, accumulated across resumes (saved in checkpoints)
        self._t0 = None
        self._step0 = 0
        self.history: list[dict] = []

    # timing -------------------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module):
        self._t0, self._step0 = time.perf_counter(), trainer.global_step
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def _elapsed(self) -> float:
        return self.wall_s + (time.perf_counter() - self._t0 if self._t0 else 0.0)

    def state_dict(self):
        return {"wall_s": self._elapsed(), "history": self.history}

    def load_state_dict(self, state):
        self.wall_s = float(state.get("wall_s", 0.0))
        self.history = list(state.get("history", []))

    # evaluation ---------------------------------------------------------------------------------
    def _prepare(self, pl_module) -> FixedEvaluation:
        if self._cache is None:
            task, ev = pl_module.task, self.cfg.eval
            names = [task.baseline, "averaging", *ev.baselines] if task.y_dim == 1 else [task.baseline, *ev.baselines]
            overrides = OmegaConf.to_container(self.cfg.baseline, resolve=True) if self.cfg.get("baseline") else {}
            self._cache = FixedEvaluation(task, ev.n_prompts, self.cfg.seed + ev.seed_offset, names,
                                          score_positions(task, task.n_points, ev.positions),
                                          chunk=ev.get("chunk_prompts"), cache_dir=ev.get("cache_dir"),
                                          overrides=overrides)
        return self._cache

    def evaluate(self, trainer, pl_module, final: bool = False) -> dict:
        if self.guard is not None:
            self.guard.check(trainer, pl_module, weights=True)
        summary = self._prepare(pl_module).score(pl_module.model, self.cfg.eval.batch_size, pl_module.device)
        step = trainer.global_step
        if trainer.is_global_zero:
            log.info("step %d: ICL score vs %s %s", step, pl_module.task.baseline, format_score(summary))
            log_error_curves(trainer, summary, step)
        self.history = [h for h in self.history if h["step"] != step] + [{"step": step, "icl_score": summary["icl_score"]}]
        self.write_results(trainer, pl_module, summary, final)
        return summary

    def hardware(self, trainer, pl_module) -> dict:
        wall = self._elapsed()
        steps = trainer.global_step
        dev = pl_module.device
        steps_this = steps - self._step0
        run_wall = time.perf_counter() - self._t0 if self._t0 else 0.0
        sps = steps_this / run_wall if run_wall > 0 and steps_this > 0 else None
        b, n = int(self.cfg.optim.batch_size), pl_module.task.n_points
        out = {
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
            "steps_per_sec": sps, "tokens_per_sec": sps * b * 2 * n if sps else None,
            # every device of a DDP run is busy for the whole wall time
            "wall_s": wall, "gpu_hours": wall / 3600 * world_size(trainer) if dev.type == "cuda" else 0.0,
        }
        if dev.type == "cuda":
            out["peak_memory_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
        else:
            import resource

            out["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return out

    def write_results(self, trainer, pl_module, summary: dict, final: bool) -> None:
        res = {
            **self.extra, "status": "finished" if final else "running",
            "step": trainer.global_step, "max_steps": trainer.max_steps,
            "n_params": pl_module.model.n_params(), **summary,
            **self.hardware(trainer, pl_module), "fast_paths": fast_paths(trainer, pl_module, self.cfg),
            "data": data_record(trainer, pl_module, self.cfg), "score_history": self.history,
        }
        self.results = res  # what training returns (no read-back of the file)
        if trainer.is_global_zero:  # strict JSON: a non-finite score is written as null
            atomic_write_json(self.run_dir / "results.json", res)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.every == 0 and trainer.global_step < trainer.max_steps:
            s = self.evaluate(trainer, pl_module)
            pl_module.log_dict({"eval/icl_score": s["icl_score"], "eval/mse_last": s["model_errors"][-1]},
                               on_step=True, on_epoch=False)
            pl_module.log("icl", s["icl_score"], prog_bar=True, logger=False, on_step=True, on_epoch=False)

    def on_train_end(self, trainer, pl_module):
        self.evaluate(trainer, pl_module, final=True)
