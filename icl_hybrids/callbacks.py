"""Training callbacks: atomic checkpoints, periodic ICL evaluation into results.json, hardware metrics."""
from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L
import torch

from .evaluation import baseline_predictions, eval_prompts, model_predictions, score_positions, summarize
from .io import atomic_write_json
from .tasks import Batch


class AtomicCheckpoint(L.Callback):
    """``last.ckpt`` every ``last_every`` steps and at the end (written to a temp file, then renamed, so a
    kill never leaves a broken checkpoint), and ``step<k>.ckpt`` every ``every`` steps (kept: trajectories)."""

    def __init__(self, dirpath, every: int, last_every: int):
        self.dir, self.every, self.last_every = Path(dirpath), int(every), int(last_every)

    def save(self, trainer, name: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{name}.tmp"
        trainer.save_checkpoint(tmp, weights_only=False)
        os.replace(tmp, self.dir / name)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every == 0:
            self.save(trainer, f"step{step}.ckpt")
        if step % self.last_every == 0 or step >= trainer.max_steps:
            self.save(trainer, "last.ckpt")

    def on_train_end(self, trainer, pl_module):
        self.save(trainer, "last.ckpt")


def progress_bar():
    """Rich progress bar over training steps showing the loss, curriculum stage and latest ICL score."""
    from lightning.pytorch.callbacks import RichProgressBar

    class StepProgressBar(RichProgressBar):
        def _get_train_description(self, current_epoch: int) -> str:
            return "training"

        def get_metrics(self, trainer, pl_module):
            m = super().get_metrics(trainer, pl_module)
            m.pop("v_num", None)
            return {k: (str(int(v)) if k in ("dims", "points") else v) for k, v in m.items()}  # no ".3f" on ints

    return StepProgressBar()


class ICLEvalCallback(L.Callback):
    """Scores the model every ``every`` steps and at the end on fixed prompts against the baselines
    (computed once per run and cached), logs the score, and rewrites results.json atomically."""

    def __init__(self, run_dir, cfg, every: int, extra: dict):
        self.run_dir, self.cfg, self.every, self.extra = Path(run_dir), cfg, int(every), extra
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
    def _prepare(self, pl_module):
        if self._cache is None:
            task, ev = pl_module.task, self.cfg.eval
            batch = eval_prompts(task, ev.n_prompts, self.cfg.seed + ev.seed_offset, device="cpu")
            names = [task.baseline, "averaging", *ev.baselines] if task.y_dim == 1 else [task.baseline, *ev.baselines]
            base = baseline_predictions(task, names, batch, cache_dir=ev.get("cache_dir"))
            self._cache = (batch, base, score_positions(task, task.n_points, ev.positions))
        return self._cache

    def evaluate(self, trainer, pl_module, final: bool = False) -> dict:
        batch, base, positions = self._prepare(pl_module)
        dev = pl_module.device
        preds = model_predictions(pl_module.model, Batch(batch.xs.to(dev), batch.ys.to(dev)),
                                  self.cfg.eval.batch_size).cpu()
        summary = summarize(preds, base, batch.ys, pl_module.task.baseline, positions)
        step = trainer.global_step
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
            "wall_s": wall, "gpu_hours": wall / 3600 if dev.type == "cuda" else 0.0,
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
            **self.hardware(trainer, pl_module), "score_history": self.history,
        }
        atomic_write_json(self.run_dir / "results.json", res)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.every == 0 and trainer.global_step < trainer.max_steps:
            s = self.evaluate(trainer, pl_module)
            pl_module.log_dict({"eval/icl_score": s["icl_score"], "eval/mse_last": s["model_errors"][-1]},
                               on_step=True, on_epoch=False)
            pl_module.log("icl", s["icl_score"], prog_bar=True, logger=False, on_step=True, on_epoch=False)

    def on_train_end(self, trainer, pl_module):
        self.evaluate(trainer, pl_module, final=True)
