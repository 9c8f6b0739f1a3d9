"""Numbers, not shapes: our GPT-2 and Llama compositions equal transformers' GPT2Model / LlamaModel
with the same weights (transformers is a test-only dependency)."""
import pytest
import torch

from icl_hybrids.config import compose_config
from icl_hybrids.models.model import build_model, interleave

transformers = pytest.importorskip("transformers")

D, N, DM, L, H = 5, 7, 32, 2, 4


def ours(name, **over):
    cfg = compose_config([f"model={name}", f"model.d_model={DM}", f"model.n_layer={L}", f"model.n_head={H}",
                          *[f"{k}={v}" for k, v in over.items()]])
    torch.manual_seed(0)
    return build_model(cfg.model, n_dims=D, y_dim=1, max_points=N).double().eval()


def run_hf(model, backbone, xs, ys):
    h = model.read_in(interleave(xs, ys))
    return model.read_out(backbone(inputs_embeds=h).last_hidden_state)[:, ::2, 0]


def test_gpt2_equals_transformers_gpt2model():
    m = ours("gpt2")
    cfg = transformers.GPT2Config(n_positions=2 * N, n_embd=DM, n_layer=L, n_head=H, resid_pdrop=0.0,
                                  embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False, activation_function="gelu_new",
                                  layer_norm_epsilon=1e-5)
    hf = transformers.GPT2Model(cfg).double().eval()
    with torch.no_grad():
        hf.wpe.weight.copy_(m.positional.wpe.weight)
        for blk, hb in zip(m.blocks, hf.h):
            hb.ln_1.load_state_dict(blk.norm1.state_dict())
            hb.ln_2.load_state_dict(blk.norm2.state_dict())
            hb.attn.c_attn.weight.copy_(blk.mixer.qkv.weight.T)  # HF Conv1D stores [in, out]
            hb.attn.c_attn.bias.copy_(blk.mixer.qkv.bias)
            hb.attn.c_proj.weight.copy_(blk.mixer.out_proj.weight.T)
            hb.attn.c_proj.bias.copy_(blk.mixer.out_proj.bias)
            hb.mlp.c_fc.weight.copy_(blk.ffn.fc_in.weight.T)
            hb.mlp.c_fc.bias.copy_(blk.ffn.fc_in.bias)
            hb.mlp.c_proj.weight.copy_(blk.ffn.out_proj.weight.T)
            hb.mlp.c_proj.bias.copy_(blk.ffn.out_proj.bias)
        hf.ln_f.load_state_dict(m.norm_f.state_dict())
    g = torch.Generator().manual_seed(1)
    xs = torch.randn(3, N, D, generator=g, dtype=torch.float64)
    ys = torch.randn(3, N, generator=g, dtype=torch.float64)
    with torch.no_grad():
        diff = (m(xs, ys) - run_hf(m, hf, xs, ys)).abs().max().item()
    assert diff <= 1e-5, diff


def test_llama_equals_transformers_llamamodel():
    m = ours("llama")
    hidden = m.blocks[0].ffn.gate_proj.out_features
    cfg = transformers.LlamaConfig(vocab_size=8, hidden_size=DM, intermediate_size=hidden, num_hidden_layers=L,
                                   num_attention_heads=H, num_key_value_heads=H, max_position_embeddings=2 * N,
                                   rms_norm_eps=1e-5, attention_bias=False, mlp_bias=False, use_cache=False)
    hf = transformers.LlamaModel(cfg).double().eval()
    with torch.no_grad():
        for blk, hb in zip(m.blocks, hf.layers):
            hb.input_layernorm.weight.copy_(blk.norm1.weight)
            hb.post_attention_layernorm.weight.copy_(blk.norm2.weight)
            q, k, v = blk.mixer.qkv.weight.chunk(3, dim=0)
            hb.self_attn.q_proj.weight.copy_(q)
            hb.self_attn.k_proj.weight.copy_(k)
            hb.self_attn.v_proj.weight.copy_(v)
            hb.self_attn.o_proj.weight.copy_(blk.mixer.out_proj.weight)
            hb.mlp.gate_proj.weight.copy_(blk.ffn.gate_proj.weight)
            hb.mlp.up_proj.weight.copy_(blk.ffn.up_proj.weight)
            hb.mlp.down_proj.weight.copy_(blk.ffn.out_proj.weight)
        hf.norm.weight.copy_(m.norm_f.weight)
    g = torch.Generator().manual_seed(2)
    xs = torch.randn(3, N, D, generator=g, dtype=torch.float64)
    ys = torch.randn(3, N, generator=g, dtype=torch.float64)
    with torch.no_grad():
        diff = (m(xs, ys) - run_hf(m, hf, xs, ys)).abs().max().item()
    assert diff <= 1e-5, diff


def test_sdpa_equals_explicit_attention():
    m = ours("llama")
    xs, ys = torch.randn(2, N, D, dtype=torch.float64), torch.randn(2, N, dtype=torch.float64)
    with torch.no_grad():
        a = m(xs, ys)
        for b in m.blocks:
            b.mixer.use_sdpa = False
        assert (a - m(xs, ys)).abs().max() < 1e-12
