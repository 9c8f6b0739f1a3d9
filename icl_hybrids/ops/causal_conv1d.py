"""Depthwise causal conv1d (+ SiLU), the Mamba mixer's short convolution (``causal_conv1d`` style).

Batch-major layout as the mixer holds it: ``x: [B, T, D]``, ``weight: [D, K]`` (``conv1d.weight``
squeezed), ``bias: [D]``; returns ``[B, T, D]`` with ``out[t] = act(bias + sum_k weight[:, k] *
x[t - K + 1 + k])`` (zero left padding: ``nn.Conv1d(padding=K-1)`` truncated to T).

* :func:`causal_conv1d_fn` -- the fused C++ CPU kernel (:mod:`._cpu_kernel`) for CPU float32/float64
  tensors; reads a channel slice of a wider tensor without copying. Elsewhere: :func:`causal_conv1d_ref`.
* :func:`causal_conv1d_ref` -- ``F.conv1d`` with ``groups=D`` (what ``nn.Conv1d`` computes).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from . import _cpu_kernel

__all__ = ["causal_conv1d_fn", "causal_conv1d_ref"]


def causal_conv1d_ref(x: Tensor, weight: Tensor, bias: Tensor | None = None,
                      activation: str | None = None) -> Tensor:
    K = weight.shape[-1]
    T = x.shape[1]
    y = F.conv1d(x.transpose(1, 2), weight.unsqueeze(1), bias, padding=K - 1, groups=weight.shape[0])[..., :T]
    if activation in ("silu", "swish"):
        y = F.silu(y)
    elif activation is not None:
        raise ValueError(f"unsupported activation {activation!r}")
    return y.transpose(1, 2)


def causal_conv1d_fn(x: Tensor, weight: Tensor, bias: Tensor | None = None,
                     activation: str | None = None) -> Tensor:
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"unsupported activation {activation!r}")
    ts = (x, weight) if bias is None else (x, weight, bias)
    if (all(t.device.type == "cpu" for t in ts) and x.dtype in _cpu_kernel.TILE
            and all(t.dtype == x.dtype for t in ts) and _cpu_kernel.available()):
        return _cpu_kernel.CppCausalConv1dFn.apply(x, weight, bias, activation is not None)
    return causal_conv1d_ref(x, weight, bias, activation)
