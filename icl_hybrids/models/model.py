"""The whole model: read-in -> positional stage -> N blocks -> final norm -> read-out.

Prompts (xs [B, N, d], ys [B, N] or [B, N, d]) become 2N tokens x_1, y_1, x_2, y_2, ... in R^d, a scalar
y embedded as [y, 0, ..., 0] (Garg et al.). The prediction for point i is read at the token of x_i,
so it sees x_1, y_1, ..., x_{i-1}, y_{i-1}, x_i only (causal mixers).

A named architecture is data (conf/model/*.yaml): ``positional``, ``mixer``, ``ffn`` and ``norm`` are
module factories (Hydra partials); no class or branch per model name.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import nn

from .block import Block, build
from .mamba import MambaMixer


def interleave(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """xs [B, N, d], ys [B, N] or [B, N, dy<=d] -> tokens [B, 2N, d]."""
    b, n, d = xs.shape
    if ys.dim() == 2:
        ys = ys.unsqueeze(-1)  # [B, N, 1]
    y_tok = torch.zeros(b, n, d, dtype=xs.dtype, device=xs.device)
    y_tok[..., : ys.shape[-1]] = ys
    return torch.stack([xs, y_tok], dim=2).reshape(b, 2 * n, d)  # [B, 2N, d]


# Architecture-profile switches (conf/model/profile/*.yaml; docs/models.md "Profiles"). These values are the
# cleaned default; model/profile=paper_code sets each to what the paper's code (P) does for the model.
CLEANED = dict(
    swiglu_hidden_mult=None,     # SwiGLU hidden width: None = Llama's 8/3 rule (256 -> 704); k = k * d_model
    attn_bias=None,              # None = as the mixer config says; True/False forces it on every attention mixer
    norm_eps=None,               # None = as the norm config says; a float replaces the eps of every model norm
    mamba_outer_residual=False,  # Mamba stage in the positional / FFN slot: h + M(n(h)); True: 2h + M(n(h))
    mamba_norm_eps=None,         # eps of the norm in front of those Mamba stages (None: the model norm's)
    n_positions=None,            # positional tables have 2 * n_positions rows (None: 2 * max_points)
    vocab_rows=0,                # rows of an unused token-embedding table (HF backbones have one; params only)
    init="gpt2",                 # gpt2 | hf_llama | hf_mamba | torch_default (see reset_parameters)
    io_init="gpt2",              # read-in / read-out: gpt2 (N(0, std), bias 0) | torch_default
)
INITS = ("gpt2", "hf_llama", "hf_mamba", "torch_default")


class ICLModel(nn.Module):
    def __init__(self, n_dims: int, y_dim: int, max_points: int, d_model: int, n_layer: int, n_head: int,
                 positional, mixer, ffn, norm, init_std: float = 0.02, profile: dict | None = None):
        super().__init__()
        unknown = set(profile or {}) - set(CLEANED)
        if unknown:
            raise ValueError(f"model.profile: unknown switch(es) {sorted(unknown)} (allowed: {sorted(CLEANED)})")
        p = self.profile = {**CLEANED, **(profile or {})}
        if p["init"] not in INITS or p["io_init"] not in ("gpt2", "torch_default"):
            raise ValueError(f"model.profile.init={p['init']!r} / io_init={p['io_init']!r}: allowed {INITS}")
        self.n_dims, self.y_dim, self.max_points = n_dims, y_dim, max_points
        self.d_model, self.n_layer, self.n_head = d_model, n_layer, n_head
        if p["norm_eps"] is not None:
            norm = functools.partial(norm, eps=float(p["norm_eps"]))
        stage_norm = norm if p["mamba_norm_eps"] is None else functools.partial(norm, eps=float(p["mamba_norm_eps"]))
        mixers = list(mixer) if isinstance(mixer, Sequence) else [mixer]  # cycled over layers
        ctx = dict(n_head=n_head, max_len=2 * (p["n_positions"] or max_points), norm_cls=norm,
                   swiglu_hidden_mult=p["swiglu_hidden_mult"], attn_bias=p["attn_bias"],
                   stage_norm_cls=stage_norm, outer_residual=p["mamba_outer_residual"])

        self.read_in = nn.Linear(n_dims, d_model)
        if p["vocab_rows"]:  # never read: HF GPT2Model / LlamaModel / MambaModel carry a token table (P's counts)
            self.unused_wte = nn.Embedding(int(p["vocab_rows"]), d_model)
        self.positional = build(positional, d_model, **ctx)
        blocks = []
        for i in range(n_layer):
            mx = build(mixers[i % len(mixers)], d_model, **ctx)  # mixer first: the constructors' random stream
            f = build(ffn, d_model, **ctx) if ffn is not None else None
            mamba_stage = isinstance(f, MambaMixer)  # P: an HF MambaBlock (own norm + residual) in the flat list
            blocks.append(Block(d_model, mx, f, norm,
                                ffn_norm_cls=stage_norm if mamba_stage else None,
                                ffn_outer_residual=mamba_stage and bool(p["mamba_outer_residual"])))
        self.blocks = nn.ModuleList(blocks)
        self.norm_f = norm(d_model)
        self.read_out = nn.Linear(d_model, y_dim)
        self.head_dim = d_model // n_head
        self.reset_parameters(init_std)

    @torch.no_grad()
    def reset_parameters(self, std: float) -> None:
        """Initialise by ``profile.init`` (backbone) and ``profile.io_init`` (read-in / read-out):

        * ``gpt2`` (cleaned, every architecture; = HF GPT2's ``_init_weights``): Linear/Embedding weights
          N(0, std), biases 0, residual output projections (``*out_proj``) N(0, std / sqrt(#residual branches)),
          norms weight 1. Modules flagged ``_keep_init`` (Mamba's dt_proj) and non-Linear Mamba parameters
          keep their init.
        * ``hf_llama`` (HF LlamaModel): as gpt2 without the residual scaling.
        * ``hf_mamba`` (HF MambaModel): Linear weights keep PyTorch's default, Linear biases 0 (dt_proj's
          kept), the Mamba mixer's own dt / A / D init, Embedding N(0, 0.1).
        * ``torch_default`` (P's hybrids, plain nn.Modules): every layer's PyTorch default (learned positions
          N(0, 1), dt_proj U(+-1/sqrt(dt_rank)) for weight and bias), except modules with ``conv1d_layout``
          (GPT-2 attention / MLP, HF Conv1D): weights N(0, 0.02), biases 0; A_log, D as the mixer sets them.
        """
        p = self.profile
        kind = p["init"]
        n_res = sum(1 + (b.ffn is not None) for b in self.blocks) + (hasattr(self.positional, "mixer"))
        scale = math.sqrt(n_res) if kind == "gpt2" else 1.0
        for name, m in self.named_modules():  # one pass in module order (the cleaned init's random stream)
            if m is self.read_in or m is self.read_out:
                if p["io_init"] == "torch_default":
                    m.reset_parameters()
                else:
                    nn.init.normal_(m.weight, 0.0, std)
                    nn.init.zeros_(m.bias)
            elif kind == "torch_default":
                if isinstance(m, (nn.Linear, nn.Conv1d, nn.Embedding, nn.LayerNorm)):
                    m.reset_parameters()
            elif kind == "hf_mamba":
                if isinstance(m, nn.Linear) and m.bias is not None and not getattr(m, "_keep_init", False):
                    nn.init.zeros_(m.bias)
                elif isinstance(m, nn.Embedding):
                    nn.init.normal_(m.weight, 0.0, 0.1)  # MambaConfig.initializer_range
            elif isinstance(m, nn.Linear) and not getattr(m, "_keep_init", False):  # gpt2 / hf_llama
                nn.init.normal_(m.weight, 0.0, std / scale if name.endswith("out_proj") else std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, 0.0, std)
        if kind == "torch_default":  # HF Conv1D's constructor: weight N(0, 0.02), bias 0
            for m in self.modules():
                if getattr(m, "conv1d_layout", False):
                    for lin in m.modules():
                        if isinstance(lin, nn.Linear):
                            nn.init.normal_(lin.weight, 0.0, 0.02)
                            if lin.bias is not None:
                                nn.init.zeros_(lin.bias)

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
                    init_std=cfg.get("init_std", 0.02), profile=cfg.get("profile"))
