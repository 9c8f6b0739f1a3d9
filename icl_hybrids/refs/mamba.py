"""mambapy's selective scan, the reference of the benchmark's ``mamba_scan`` entry."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def mambapy_scan(u, delta, A, Bm, Cm, D, z):
    """mambapy.mamba.MambaBlock.selective_scan (pscan path) + the z gate; [B, L, D] layout."""
    from mambapy.pscan import pscan

    dA = torch.exp(delta.unsqueeze(-1) * A)  # [B, L, D, N]
    BX = (delta * u).unsqueeze(-1) * Bm.unsqueeze(2)  # [B, L, D, N]
    hs = pscan(dA, BX)
    y = (hs @ Cm.unsqueeze(-1)).squeeze(3)
    return (y + D * u) * F.silu(z)
