"""Positional stages. Each takes h [B, T, D] after the read-in and returns h; ``rotary(T)`` gives the
(cos, sin) tables that attention mixers apply to q and k (RoPE), or None."""
from __future__ import annotations

import torch
from torch import nn


class NoPositional(nn.Module):
    def __init__(self, d_model: int, max_len: int, norm_cls=None):
        super().__init__()

    def forward(self, h):
        return h

    def rotary(self, t: int, head_dim: int, device, dtype):
        return None


class LearnedPositional(NoPositional):
    """GPT-2 absolute learned embeddings (wpe)."""

    def __init__(self, d_model: int, max_len: int, norm_cls=None):
        super().__init__(d_model, max_len)
        self.wpe = nn.Embedding(max_len, d_model)

    def forward(self, h):  # [B, T, D]
        t = h.shape[1]
        return h + self.wpe(torch.arange(t, device=h.device))  # broadcast [T, D]


class RotaryPositional(NoPositional):
    """RoPE (Su et al.) in the Llama / HF "rotate_half" layout: dims (i, i + head_dim/2) rotate together
    with frequency base^(-2i/head_dim). Nothing is added to h."""

    def __init__(self, d_model: int, max_len: int, norm_cls=None, base: float = 10000.0):
        super().__init__(d_model, max_len)
        self.base = float(base)
        self._cache: dict = {}

    def rotary(self, t: int, head_dim: int, device, dtype):
        key = (t, head_dim, str(device), dtype)
        if key not in self._cache:
            inv_freq = 1.0 / (self.base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
            pos = torch.arange(t, device=device, dtype=torch.float32)
            freqs = torch.outer(pos, inv_freq)  # [T, hd/2]
            emb = torch.cat([freqs, freqs], dim=-1)  # [T, hd]
            self._cache = {key: (emb.cos().to(dtype), emb.sin().to(dtype))}
        return self._cache[key]


class MambaPositional(NoPositional):
    """A Mamba mixer stage before the first block: h + mamba(norm(h)) (pre-norm residual, one residual,
    not two as in the paper's code; docs/conventions.md). Profile switches (model.profile):
    ``outer_residual`` gives the paper's code's 2h + mamba(norm(h)); ``stage_norm_cls`` (passed by the model,
    the model norm with ``mamba_norm_eps``) replaces ``norm_cls`` for this stage's norm."""

    def __init__(self, d_model: int, max_len: int, norm_cls=None, stage_norm_cls=None, outer_residual: bool = False,
                 **mamba_kw):
        super().__init__(d_model, max_len)
        from .mamba import MambaMixer

        norm_cls = stage_norm_cls or norm_cls
        self.norm = norm_cls(d_model) if norm_cls is not None else nn.Identity()
        self.mixer = MambaMixer(d_model, **mamba_kw)
        self.outer_residual = bool(outer_residual)

    def forward(self, h):
        y = h + self.mixer(self.norm(h))
        return h + y if self.outer_residual else y


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, T, hd]; cos/sin [T, hd]."""
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rot * sin
