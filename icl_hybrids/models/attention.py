"""Causal multi-head self-attention through torch SDPA (flash / memory-efficient kernels on GPU).

Optional fast path: the ``flash-attn`` package (``pip install -e .[cuda]``) on CUDA with fp16/bf16
inputs (``use_flash_attn=True``); it computes the same function (checked in tests/test_models_cuda.py when a
GPU and the package are present). RoPE is applied before either kernel."""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .positional import apply_rotary


@functools.cache
def flash_attn_func():
    """flash_attn.flash_attn_func when the package imports (CUDA builds only), else None."""
    try:
        from flash_attn import flash_attn_func as f
    except Exception:  # not installed, or no CUDA build
        return None
    return f


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int, bias: bool = True, use_sdpa: bool = True,
                 use_flash_attn: bool = True, attn_bias: bool | None = None):
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"model.d_model={d_model} must be divisible by model.n_head={n_head}")
        if attn_bias is not None:  # model.profile.attn_bias overrides the mixer config's bias
            bias = bool(attn_bias)
        # with biases this is HF GPT2Attention (Conv1D): profile init torch_default gives N(0, 0.02), bias 0;
        # without, it is LlamaAttention (nn.Linear, PyTorch default init)
        self.conv1d_layout = bias
        self.n_head, self.head_dim = n_head, d_model // n_head
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)  # fused q, k, v projections
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)  # residual projection
        self.use_sdpa = use_sdpa
        self.use_flash_attn = use_flash_attn
        self.last_path: str | None = None  # "flash" | "sdpa" | "explicit": the kernel the last forward used

    def forward(self, x: torch.Tensor, rope=None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)  # 3 x [B, T, D]
        q, k, v = (z.view(b, t, self.n_head, self.head_dim).transpose(1, 2) for z in (q, k, v))  # [B, H, T, hd]
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        half = q.dtype in (torch.float16, torch.bfloat16)  # under autocast q is half
        flash = flash_attn_func() if (self.use_flash_attn and q.is_cuda and half) else None
        if flash is not None:  # flash-attn wants [B, T, H, hd]
            y = flash(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=True).transpose(1, 2)
            path = "flash"
        elif self.use_sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, H, T, hd]
            path = "sdpa"
        else:  # explicit reference path
            path = "explicit"
            att = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5
            causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
            y = att.masked_fill(~causal, float("-inf")).softmax(-1) @ v
        if self.last_path != path:  # recorded for results.json fast_paths (a str compare per call)
            self.last_path = path
        y = y.transpose(1, 2).reshape(b, t, d)  # [B, T, D]
        return self.out_proj(y)
