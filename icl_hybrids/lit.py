"""LightningModule: samples a fresh batch of prompts on the training device every step (a pure function
of (seed, step), so resumed runs see exactly the batches they would have seen) and regresses on it.
Under DDP every rank trains on its own shard of that global batch (``draw_batch``)."""
from __future__ import annotations

import dataclasses
import hashlib

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from .curriculum import Curriculum
from .models.model import build_model

#: checkpoint key set when the optimizer state was left out (weights-only trajectory checkpoints)
OPTIMIZER_DROPPED = "icl_hybrids_optimizer_state_dropped"


def step_seed(seed: int, step: int) -> int:
    """Generator seed of the global batch of ``step`` (below 2**31: config._check_seed_spaces)."""
    return seed * 1_000_003 + step


def rank_slice(rank: int, world: int, batch_size: int) -> slice:
    """The prompts of the global batch that rank ``rank`` of ``world`` trains on: the ``rank``-th of ``world``
    equal consecutive blocks (config.check_world_size: ``world`` divides the batch)."""
    per = batch_size // world
    return slice(rank * per, (rank + 1) * per)


def batch_fingerprint(batch) -> str:
    """A short hash of a batch's prompts (results.json ``data.first_batch_sha1``: each rank's own shard)."""
    h = hashlib.sha1()
    for f in dataclasses.fields(batch):
        h.update(getattr(batch, f.name).detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class _Steps(torch.utils.data.IterableDataset):
    """An endless stream of placeholders: data is sampled inside training_step, on the device."""

    def __iter__(self):
        while True:
            yield 0


def build_task(task_cfg):
    return instantiate(task_cfg)


class ICLModule(L.LightningModule):
    def __init__(self, cfg: dict):
        super().__init__()
        self.save_hyperparameters({"cfg": cfg})
        cfg = OmegaConf.create(cfg)
        self.cfg = cfg
        self.task = build_task(cfg.task)
        self.model = build_model(cfg.model, n_dims=self.task.n_dims, y_dim=self.task.y_dim,
                                 max_points=self.task.n_points)
        self.curriculum = Curriculum.from_config(cfg.curriculum, self.task.n_dims, self.task.n_points)
        self.seed = int(cfg.seed)
        self._gen = None
        self._bad_step = None  # device tensor: first step whose loss was not finite (-1: none yet)
        self.first_batch = None  # (step, fingerprint) of this process's first batch (results.json "data")

    # ---- data --------------------------------------------------------------------------------
    def train_dataloader(self):
        return torch.utils.data.DataLoader(_Steps(), batch_size=None)

    def generator(self, step: int) -> torch.Generator:
        if self._gen is None or self._gen.device != self.device:
            self._gen = torch.Generator(device=self.device)
        self._gen.manual_seed(step_seed(self.seed, step))
        return self._gen

    def world(self) -> tuple[int, int]:
        """(global rank, world size) of this process; (0, 1) outside a Trainer."""
        trainer = self._trainer  # the property raises when the module is not attached
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def draw_batch(self, step: int, n_dims: int, n_points: int, rank: int = 0, world: int = 1):
        """This rank's shard of the global batch of ``step``: every rank draws the whole batch of
        optim.batch_size prompts from the (seed, step) generator and keeps its ``rank_slice``. So the shards
        are disjoint, their union is exactly the batch one process draws (any world size), and rank 0 of a
        world of 1 draws what training always drew. A rank-dependent seed would not do: the CPU generator
        keeps 32 bits of a seed, all of them taken by the training and evaluation streams."""
        b = int(self.cfg.optim.batch_size)
        batch = self.task.sample(b, generator=self.generator(step), device=self.device, n_dims=n_dims,
                                 n_points=n_points)
        if world == 1:
            return batch
        sl = rank_slice(rank, world, b)
        return type(batch)(**{f.name: getattr(batch, f.name)[sl] for f in dataclasses.fields(batch)})

    def forward(self, xs, ys):
        return self.model(xs, ys)

    def loss_fn(self, preds, ys, n_points):
        mask = self.task.scored_positions(n_points).to(ys.device)
        err = (preds.float() - ys) ** 2
        if err.dim() == 3:
            err = err.mean(-1)  # vector targets: mean over the value dims
        return err[:, mask].mean()

    def training_step(self, _batch, _batch_idx):
        step = self.global_step
        n_dims, n_points = self.curriculum.update(step)
        batch = self.draw_batch(step, n_dims, n_points, *self.world())
        if self.first_batch is None:
            self.first_batch = (step, batch_fingerprint(batch))
        loss = self.loss_fn(self(batch.xs, batch.ys), batch.ys, n_points)
        self._record_nonfinite(loss, step)
        if not self._logs_this_step(step):
            return loss
        self.log_dict({"train/loss": loss, "curriculum/dims": float(n_dims), "curriculum/points": float(n_points)},
                      on_step=True, on_epoch=False)
        # short names for the progress bar only
        self.log_dict({"loss": loss, "dims": float(n_dims), "points": float(n_points)},
                      prog_bar=True, logger=False, on_step=True, on_epoch=False)
        return loss

    def _logs_this_step(self, step: int) -> bool:
        """Whether this step's metrics reach a logger or the progress bar. ``self.log`` costs ~0.5 ms a
        call on CPU (~20% of a small model's step) and Lightning hands on-step values to the loggers only
        every ``log_every_n_steps`` steps (and on a step where the run is stopping), so between those steps
        the values are dropped unless a progress bar shows them. The same rule as Lightning's (private)
        ``_LoggerConnector.should_update_logs``: one step per batch here, so its ``_batches_that_stepped`` is
        the global step."""
        trainer = self._trainer
        if trainer is None or trainer.progress_bar_callback is not None:
            return True
        every = int(trainer.log_every_n_steps or 0)
        if every <= 0:
            return False
        return (step + 1) % every == 0 or trainer.should_stop

    # ---- non-finite guard (callbacks.NonFiniteGuard reads it) -------------------------------------
    def _record_nonfinite(self, loss, step: int) -> None:
        """Remember the first step with a non-finite loss without a host sync (a where on the device)."""
        if self._bad_step is None or self._bad_step.device != loss.device:
            self._bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
        bad = ~torch.isfinite(loss.detach()) & (self._bad_step < 0)
        self._bad_step = torch.where(bad, torch.full_like(self._bad_step, step + 1), self._bad_step)

    def first_nonfinite_step(self) -> int | None:
        """The 1-based training step whose loss was first not finite (None: all finite so far)."""
        if self._bad_step is None:
            return None
        v = int(self._bad_step.item())
        return v if v >= 0 else None

    def configure_optimizers(self):
        o = self.cfg.optim
        # fused (one kernel per step, CUDA and CPU) > foreach (multi-tensor) > per-parameter loop
        kw = {"fused": True} if o.fused else {"foreach": bool(o.foreach)}
        opt = torch.optim.Adam(self.model.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                               weight_decay=o.weight_decay, **kw)
        warmup = int(o.get("warmup_steps", 0) or 0)
        if warmup <= 0:
            return opt
        # linear warmup from lr/warmup to lr over `warmup` steps, then constant; Lightning saves and restores
        # the scheduler's state in checkpoints, so a resumed run continues the same schedule
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    # ---- curriculum state in checkpoints ------------------------------------------------------
    def on_save_checkpoint(self, checkpoint):
        checkpoint["curriculum"] = self.curriculum.state_dict()
        if getattr(self, "_save_weights_only", False):
            # a trajectory checkpoint (callbacks.AtomicCheckpoint): no Adam moments (2x the weights); the loops,
            # callbacks, LR scheduler and curriculum stay, so a resume from it continues at its step with a
            # fresh optimizer state (an empty list: Lightning then loads no optimizer state)
            checkpoint["optimizer_states"] = []
            checkpoint[OPTIMIZER_DROPPED] = True

    def on_load_checkpoint(self, checkpoint):
        if "curriculum" in checkpoint:
            self.curriculum.load_state_dict(checkpoint["curriculum"])


def load_module(path, map_location="cpu") -> ICLModule:
    """Load a checkpoint written by training (config travels inside it)."""
    from .config import add_config_dirs

    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    add_config_dirs(ckpt["hyper_parameters"]["cfg"].get("config_dirs"))  # a user's configs it was trained with
    module = ICLModule(ckpt["hyper_parameters"]["cfg"])
    module.load_state_dict(ckpt["state_dict"])
    module.on_load_checkpoint(ckpt)
    module.global_step_loaded = int(ckpt.get("global_step", 0))
    return module
