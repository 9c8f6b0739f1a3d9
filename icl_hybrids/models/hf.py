"""Our compositions as `transformers` models with the same weights (for parity tests and benchmarks).
transformers is a test/bench-only dependency, imported inside the functions."""
from __future__ import annotations

import copy

import torch
from torch import nn

from .model import ICLModel, interleave


class HFWrapped(nn.Module):
    """read-in -> transformers backbone (inputs_embeds) -> read-out, as Garg et al. build their models."""

    def __init__(self, ours: ICLModel, backbone: nn.Module):
        super().__init__()
        self.read_in = copy.deepcopy(ours.read_in)
        self.backbone = backbone
        self.read_out = copy.deepcopy(ours.read_out)

    def forward(self, xs, ys):
        h = self.backbone(inputs_embeds=self.read_in(interleave(xs, ys))).last_hidden_state
        return self.read_out(h)[:, ::2, 0]


@torch.no_grad()
def to_hf_gpt2(m: ICLModel, attn_implementation: str = "sdpa") -> HFWrapped:
    """transformers.GPT2Model with our GPT-2 composition's weights (HF Conv1D stores [in, out])."""
    import transformers

    cfg = transformers.GPT2Config(n_positions=2 * m.max_points, n_embd=m.d_model, n_layer=m.n_layer,
                                  n_head=m.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  use_cache=False, activation_function="gelu_new", layer_norm_epsilon=1e-5,
                                  attn_implementation=attn_implementation)
    hf = transformers.GPT2Model(cfg).to(dtype=m.read_in.weight.dtype)
    hf.wpe.weight.copy_(m.positional.wpe.weight)
    for blk, hb in zip(m.blocks, hf.h):
        hb.ln_1.load_state_dict(blk.norm1.state_dict())
        hb.ln_2.load_state_dict(blk.norm2.state_dict())
        for hf_lin, ours in ((hb.attn.c_attn, blk.mixer.qkv), (hb.attn.c_proj, blk.mixer.out_proj),
                             (hb.mlp.c_fc, blk.ffn.fc_in), (hb.mlp.c_proj, blk.ffn.out_proj)):
            hf_lin.weight.copy_(ours.weight.T)
            hf_lin.bias.copy_(ours.bias)
    hf.ln_f.load_state_dict(m.norm_f.state_dict())
    return HFWrapped(m, hf)


@torch.no_grad()
def to_hf_llama(m: ICLModel, attn_implementation: str = "sdpa") -> HFWrapped:
    """transformers.LlamaModel with our Llama composition's weights (q, k, v split from our fused qkv)."""
    import transformers

    cfg = transformers.LlamaConfig(vocab_size=8, hidden_size=m.d_model,
                                   intermediate_size=m.blocks[0].ffn.gate_proj.out_features,
                                   num_hidden_layers=m.n_layer, num_attention_heads=m.n_head,
                                   num_key_value_heads=m.n_head, max_position_embeddings=2 * m.max_points,
                                   rms_norm_eps=m.norm_f.eps, attention_bias=False, mlp_bias=False, use_cache=False,
                                   attn_implementation=attn_implementation)
    hf = transformers.LlamaModel(cfg).to(dtype=m.read_in.weight.dtype)
    for blk, hb in zip(m.blocks, hf.layers):
        hb.input_layernorm.weight.copy_(blk.norm1.weight)
        hb.post_attention_layernorm.weight.copy_(blk.norm2.weight)
        q, k, v = blk.mixer.qkv.weight.chunk(3, dim=0)
        for dst, src in ((hb.self_attn.q_proj, q), (hb.self_attn.k_proj, k), (hb.self_attn.v_proj, v),
                         (hb.self_attn.o_proj, blk.mixer.out_proj.weight), (hb.mlp.gate_proj, blk.ffn.gate_proj.weight),
                         (hb.mlp.up_proj, blk.ffn.up_proj.weight), (hb.mlp.down_proj, blk.ffn.out_proj.weight)):
            dst.weight.copy_(src)
    hf.norm.weight.copy_(m.norm_f.weight)
    return HFWrapped(m, hf)


@torch.no_grad()
def to_hf_mamba(m: ICLModel, use_mambapy: bool = False) -> HFWrapped:
    """transformers.MambaModel with our Mamba composition's weights (mixer names and shapes are identical)."""
    import transformers

    mx = m.blocks[0].mixer
    cfg = transformers.MambaConfig(vocab_size=8, hidden_size=m.d_model, state_size=mx.d_state,
                                   num_hidden_layers=m.n_layer, expand=mx.expand, conv_kernel=mx.d_conv,
                                   time_step_rank=mx.dt_rank, use_bias=False, use_conv_bias=True,
                                   layer_norm_epsilon=m.norm_f.eps, residual_in_fp32=True, use_cache=False,
                                   use_mambapy=use_mambapy)
    hf = transformers.MambaModel(cfg).to(dtype=m.read_in.weight.dtype)
    for blk, hb in zip(m.blocks, hf.layers):
        hb.norm.weight.copy_(blk.norm1.weight)
        hb.mixer.load_state_dict(blk.mixer.state_dict())  # strict
    hf.norm_f.weight.copy_(m.norm_f.weight)
    return HFWrapped(m, hf)
