"""The whole model: read-in -> positional stage -> N blocks -> final norm -> read-out.

Prompts (xs [B, N, d], ys [B, N] or [B, N, d]) become 2N tokens x_1, y_1, x_2, y_2, ... in R^d, a scalar
y embedded as [y, 0, ..., 0] (Garg et al.). The prediction for point i is read at the token of x_i,
so it sees x_1, y_1, ..., x_{i-1}, y_{i-1}, x_i only (causal mixers).

A named architecture is data (conf/model/*.yaml): ``positional``, ``mixer``, ``ffn`` and ``norm`` are
module factories (Hydra partials); no class or branch per model name.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .block import Block, build


def interleave(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """xs [B, N, d], ys [B, N] or [B, N, dy<=d] -> tokens [B, 2N, d]."""
    b, n, d = xs.shape
    if ys.dim() == 2:
        ys = ys.unsqueeze(-1)  # [B, N, 1]
    y_tok = torch.zeros(b, n, d, dtype=xs.dtype, device=xs.device)
    y_tok[..., : ys.shape[-1]] = ys
    return torch.stack([xs, y_tok], dim=2).reshape(b, 2 * n, d)  # [B, 2N, d]


class ICLModel(nn.Module):
    def __init__(self, n_dims: int, y_dim: int, max_points: int, d_model: int, n_layer: int, n_head: int,
                 positional, mixer, ffn, norm, init_std: float = 0.02):
        super().__init__()
        self.n_dims, self.y_dim, self.max_points = n_dims, y_dim, max_points
        self.d_model, self.n_layer, self.n_head = d_model, n_layer, n_head
        mixers = list(mixer) if isinstance(mixer, Sequence) else [mixer]  # cycled over layers
        ctx = dict(n_head=n_head, max_len=2 * max_points, norm_cls=norm)

        self.read_in = nn.Linear(n_dims, d_model)
        self.positional = build(positional, d_model, **ctx)
        self.blocks = nn.ModuleList(
            Block(d_model, build(mixers[i % len(mixers)], d_model, **ctx),
                  build(ffn, d_model, **ctx) if ffn is not None else None, norm)
            for i in range(n_layer)
        )
        self.norm_f = norm(d_model)
        self.read_out = nn.Linear(d_model, y_dim)
        self.head_dim = d_model // n_head
        self.reset_parameters(init_std)

    def reset_parameters(self, std: float) -> None:
        """GPT-2 init for every architecture (docs/models.md): Linear/Embedding weights N(0, std), biases 0,
        residual output projections (``*out_proj``) N(0, std / sqrt(#residual branches)); norms weight 1.
        Modules flagged ``_keep_init`` (Mamba's dt_proj) and non-Linear Mamba parameters keep their init."""
        n_res = sum(1 + (b.ffn is not None) for b in self.blocks) + (hasattr(self.positional, "mixer"))
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear) and not getattr(m, "_keep_init", False):
                s = std / math.sqrt(n_res) if name.endswith("out_proj") else std
                nn.init.normal_(m.weight, 0.0, s)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, 0.0, std)

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        b, n, _ = xs.shape
        h = self.read_in(interleave(xs, ys))  # [B, 2N, D]
        h = self.positional(h)
        rope = self.positional.rotary(h.shape[1], self.head_dim, h.device, h.dtype)
        for block in self.blocks:
            h = block(h, rope=rope)
        out = self.read_out(self.norm_f(h))[:, ::2]  # [B, N, y_dim] at the x tokens
        return out.squeeze(-1) if self.y_dim == 1 else out

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_model(model_cfg, *, n_dims: int, y_dim: int, max_points: int) -> ICLModel:
    """Instantiate an ICLModel from a composed ``model`` config (DictConfig or dict)."""
    from hydra.utils import instantiate
    from omegaconf import DictConfig, OmegaConf

    cfg = OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else dict(model_cfg)
    part = lambda c: instantiate(c) if c else None  # noqa: E731  (empty / null -> absent)
    mixer = cfg["mixer"]
    mixer = [part(c) for c in mixer["cycle"]] if "cycle" in mixer else part(mixer)
    return ICLModel(n_dims=n_dims, y_dim=y_dim, max_points=max_points, d_model=cfg["d_model"],
                    n_layer=cfg["n_layer"], n_head=cfg["n_head"], positional=part(cfg["positional"]),
                    mixer=mixer, ffn=part(cfg["ffn"]), norm=part(cfg["norm"]),
                    init_std=cfg.get("init_std", 0.02))
