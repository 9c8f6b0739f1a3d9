"""Feed-forward networks for the second half of a block."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class GeluMLP(nn.Module):
    """GPT-2 MLP: Linear(d, mult*d) -> GELU(tanh) -> Linear(mult*d, d)."""

    conv1d_layout = True  # HF GPT2MLP (Conv1D): profile init torch_default gives N(0, 0.02), bias 0

    def __init__(self, d_model: int, mult: int = 4, bias: bool = True):
        super().__init__()
        self.fc_in = nn.Linear(d_model, mult * d_model, bias=bias)
        self.out_proj = nn.Linear(mult * d_model, d_model, bias=bias)  # residual projection

    def forward(self, x):
        return self.out_proj(F.gelu(self.fc_in(x), approximate="tanh"))


def swiglu_hidden(d_model: int, multiple_of: int = 64) -> int:
    """Llama's rule: 2/3 of 4d, rounded up to a multiple (256 -> 704)."""
    h = int(2 * 4 * d_model / 3)
    return multiple_of * ((h + multiple_of - 1) // multiple_of)


class SwiGLU(nn.Module):
    """Llama FFN: out(silu(gate(x)) * up(x)). Hidden width: ``hidden`` if given, else
    ``swiglu_hidden_mult * d_model`` if that is given (model.profile; the paper's code: 4), else Llama's rule."""

    def __init__(self, d_model: int, hidden: int | None = None, multiple_of: int = 64, bias: bool = False,
                 swiglu_hidden_mult: float | None = None):
        super().__init__()
        if not hidden and swiglu_hidden_mult:
            hidden = int(swiglu_hidden_mult * d_model)
        hidden = hidden or swiglu_hidden(d_model, multiple_of)
        self.gate_proj = nn.Linear(d_model, hidden, bias=bias)
        self.up_proj = nn.Linear(d_model, hidden, bias=bias)
        self.out_proj = nn.Linear(hidden, d_model, bias=bias)  # residual projection

    def forward(self, x):
        return self.out_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
