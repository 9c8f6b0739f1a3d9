"""A trained checkpoint as a baseline (the paper's choice for decision tree: a trained GPT-2; for sparse parity:
a trained Mamba). Named ``ckpt:<path>`` in ``task.baseline`` / ``eval.baselines``.

The model is loaded once (``icl_hybrids.lit.load_module``) and run in eval mode, without gradients, in
batches of ``batch_size`` prompts on ``device``; predictions come back on the inputs' device and dtype.
Like every baseline, pred i depends on points < i and the query x_i only (the models are causal).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .base import Baseline, check_inputs

__all__ = ["CheckpointBaseline", "PREFIX", "is_checkpoint_name"]

PREFIX = "ckpt:"


def is_checkpoint_name(name: str) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


class CheckpointBaseline(Baseline):
    vector_targets = True

    def __init__(self, path: str, n_dims: int | None = None, batch_size: int = 256, device: str = "cpu", **_ignored):
        path = str(path)
        if path.startswith(PREFIX):
            path = path[len(PREFIX):]
        if not Path(path).is_file():
            raise FileNotFoundError(f"checkpoint baseline: no file {path!r}")
        from ..lit import load_module

        self.path = path
        self.name = PREFIX + path
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        module = load_module(path, map_location=self.device)
        self.model = module.model.to(self.device).eval()
        self.task_name = module.task.name
        self.step = getattr(module, "global_step_loaded", None)
        if n_dims is not None and int(n_dims) != self.model.n_dims:
            raise ValueError(f"checkpoint baseline {path!r} was trained with n_dims={self.model.n_dims}, "
                             f"the task has n_dims={n_dims}")

    @torch.no_grad()
    def __call__(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        check_inputs(xs, ys, vector_targets=True)
        m = self.model
        if xs.shape[-1] != m.n_dims:
            raise ValueError(f"checkpoint baseline {self.path!r}: expects d={m.n_dims}, got xs {tuple(xs.shape)}")
        if (ys.dim() == 3) != (m.y_dim > 1):
            raise ValueError(f"checkpoint baseline {self.path!r}: y_dim={m.y_dim} does not fit ys {tuple(ys.shape)}")
        out = [m(xs[i:i + self.batch_size].to(self.device).float(), ys[i:i + self.batch_size].to(self.device).float())
               for i in range(0, xs.shape[0], self.batch_size)]
        return torch.cat(out).to(device=xs.device, dtype=ys.dtype)
