"""A residual block composed from three callables, as mamba_ssm's ``Block``:

    h = h + mixer(norm1(h))            mixer: attention or Mamba (or anything taking [B, T, D])
    h = h + ffn(norm2(h))              skipped entirely (norm and residual too) when ffn is None
                                       (h + (h + ffn(norm2(h))) with ffn_outer_residual)
"""
from __future__ import annotations

import inspect

from torch import nn


def accepts(fn, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def build(factory, d_model: int, **context):
    """Call a module factory (usually a Hydra partial) with d_model and the context keys it accepts
    (e.g. n_head for attention, norm_cls for a positional stage), so one call site builds any kind."""
    target = getattr(factory, "func", factory)
    kw = {k: v for k, v in context.items() if accepts(target, k)}
    return factory(d_model, **kw)


class Block(nn.Module):
    """``ffn_norm_cls`` replaces ``norm_cls`` for norm2; ``ffn_outer_residual`` makes the second half
    ``h = h + (h + ffn(norm2(h)))`` (the paper's code: an HF MambaBlock, which has its own residual, between
    two residual markers of its flat module list; model.profile.mamba_outer_residual)."""

    def __init__(self, d_model: int, mixer: nn.Module, ffn: nn.Module | None, norm_cls, ffn_norm_cls=None,
                 ffn_outer_residual: bool = False):
        super().__init__()
        self.norm1 = norm_cls(d_model)
        self.mixer = mixer
        self.norm2 = (ffn_norm_cls or norm_cls)(d_model) if ffn is not None else None
        self.ffn = ffn
        self.ffn_outer_residual = bool(ffn_outer_residual)
        self._mixer_takes_rope = accepts(mixer.forward, "rope")

    def forward(self, h, rope=None):  # h [B, T, D]
        x = self.norm1(h)
        h = h + (self.mixer(x, rope=rope) if self._mixer_takes_rope else self.mixer(x))
        if self.ffn is not None:
            y = self.ffn(self.norm2(h))
            h = h + (h + y if self.ffn_outer_residual else y)
        return h
