"""model/profile=paper_code builds the 12 paper models as the paper's own code (P, in-context-learning-2024/
in-context, src/models/{transformer,hybrid}.py + conf/include/models/{base,composed}.yml) builds them.

``PModel`` below is an independent re-implementation of P's construction from `transformers` pieces: the three
base models are HF GPT2Model / LlamaModel / MambaModel behind P's read-in / read-out, the nine hybrids P's flat
module list with residual markers (``h = residual + h; residual = h``) over HF GPT2Attention / LlamaAttention /
GPT2MLP / LlamaMLP / MambaBlock / norms. Checked: (a) parameter counts, (b) outputs with copied weights,
(c) each profile switch changes only its own thing, (d) the initialisation kinds."""
import math

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from icl_hybrids.config import compose_config  # noqa: E402
from icl_hybrids.models.model import CLEANED, build_model, interleave  # noqa: E402

torch.set_num_threads(1)

from .conftest import PAPER_MODELS  # noqa: E402  (icl_hybrids.paper's twelve)

N_POSITIONS = 141  # P: conf/include/models/{base,composed}.yml

# P's conf/include/models/composed.yml blocks (one layer each); our name -> (prefix, block, final norm)
_ATT, _RES = "attention", "residual"
P_HYBRIDS = {
    "gpt2_swiglu": (["abs pos", _RES], ["layer norm", "gpt2 attention", _RES, "layer norm", "llama mlp", _RES], "layer norm"),
    "gpt2_rms": (["abs pos", _RES], ["rms norm", "gpt2 attention", _RES, "rms norm", "gpt2 mlp", _RES], "rms norm"),
    "gpt2_rope": ([_RES], ["layer norm", "llama attention", _RES, "layer norm", "gpt2 mlp", _RES], "layer norm"),
    "gpt2_rms_swiglu": (["abs pos", _RES], ["rms norm", "gpt2 attention", _RES, "rms norm", "llama mlp", _RES], "rms norm"),
    "gpt2_rms_rope": ([_RES], ["rms norm", "llama attention", _RES, "rms norm", "gpt2 mlp", _RES], "rms norm"),
    "gpt2_rope_swiglu": ([_RES], ["layer norm", "llama attention", _RES, "layer norm", "llama mlp", _RES], "layer norm"),
    "llama_mamba_ffn": ([_RES], ["rms norm", "llama attention", _RES, "mamba block", _RES], "rms norm"),
    "llama_mamba_pos": ([_RES, "mamba block", _RES],
                        ["rms norm", "llama attention no rope", _RES, "rms norm", "llama mlp", _RES], "rms norm"),
    "llama_mamba_pos_ffn": ([_RES, "mamba block", _RES],
                            ["rms norm", "llama attention no rope", _RES, "mamba block", _RES], "rms norm"),
}


class Marker(nn.Module):
    """P's ResidualMarker: identity; the loop adds the running residual after it."""

    def forward(self, h):
        return h


class AbsPos(nn.Module):
    def __init__(self, rows, d):
        super().__init__()
        self.embed = nn.Embedding(rows, d)  # nn.Embedding default init, N(0, 1)

    def forward(self, h):
        return h + self.embed.weight[: h.shape[1]]


class PHybridBackbone(nn.Module):
    def __init__(self, names, d, n_head, n_positions=N_POSITIONS):
        super().__init__()
        self.names, self.n_head = names, n_head
        L = len(names)
        self.llama_cfg = transformers.LlamaConfig(max_position_embeddings=2 * n_positions, hidden_size=d,
                                                  intermediate_size=4 * d, num_hidden_layers=L,
                                                  num_attention_heads=n_head, use_cache=False,
                                                  attn_implementation="eager")
        self.llama_cfg.layer_norm_epsilon = 1e-5  # P passes layer_norm_epsilon as an extra LlamaConfig kwarg
        gpt2_cfg = transformers.GPT2Config(n_positions=2 * n_positions, n_embd=d, n_layer=L, n_head=n_head,
                                           resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False,
                                           attn_implementation="eager")
        mamba_cfg = transformers.MambaConfig(hidden_size=d, num_hidden_layers=L, state_size=16, expand=4,
                                             conv_kernel=4, use_cache=False)
        mamba_cfg.residual_in_fp32 = False  # P: True, a no-op in float32; off so the float64 test stays float64
        from transformers.models.gpt2.modeling_gpt2 import GPT2MLP, GPT2Attention
        from transformers.models.llama.modeling_llama import (
            LlamaAttention,
            LlamaMLP,
            LlamaRMSNorm,
            LlamaRotaryEmbedding,
        )
        from transformers.models.mamba.modeling_mamba import MambaBlock

        make = {
            _RES: lambda i: Marker(),
            "rms norm": lambda i: LlamaRMSNorm(d, eps=self.llama_cfg.rms_norm_eps),
            "layer norm": lambda i: nn.LayerNorm(d, eps=self.llama_cfg.layer_norm_epsilon),
            "abs pos": lambda i: AbsPos(self.llama_cfg.max_position_embeddings, d),
            "llama attention": lambda i: LlamaAttention(self.llama_cfg, layer_idx=i),
            "llama attention no rope": lambda i: LlamaAttention(self.llama_cfg, layer_idx=i),
            "gpt2 attention": lambda i: GPT2Attention(gpt2_cfg, layer_idx=i),
            "llama mlp": lambda i: LlamaMLP(self.llama_cfg),
            "gpt2 mlp": lambda i: GPT2MLP(4 * d, gpt2_cfg),
            "mamba block": lambda i: MambaBlock(mamba_cfg, layer_idx=i),
        }
        self.layers = nn.ModuleList(make[n](i) for i, n in enumerate(names))
        self.rotary = LlamaRotaryEmbedding(self.llama_cfg)

    def forward(self, inputs_embeds):
        h, residual = inputs_embeds, 0
        b, t, _ = h.shape
        mask = torch.full((t, t), torch.finfo(h.dtype).min, dtype=h.dtype).triu(1)[None, None]
        pos = torch.arange(t)[None]
        cos, sin = self.rotary(h, pos)
        for name, layer in zip(self.names, self.layers):
            if name == "llama attention":
                h = layer(h, position_embeddings=(cos, sin), attention_mask=mask)[0]
            elif name == "llama attention no rope":  # P's RotaryEmbeddingStub(enable=False)
                h = layer(h, position_embeddings=(torch.ones_like(cos), torch.zeros_like(sin)), attention_mask=mask)[0]
            elif name == "gpt2 attention":
                h = layer(h, attention_mask=mask)[0]
            else:
                h = layer(h)
            if name == _RES:
                h = residual + h
                residual = h
        return h


class PModel(nn.Module):
    """P's BackboneModel: read-in (nn.Linear) -> backbone(inputs_embeds) -> read-out (nn.Linear), x tokens."""

    def __init__(self, name, x_dim, y_dim, d, n_layer, n_head):
        super().__init__()
        self.read_in = nn.Linear(x_dim, d)
        if name == "gpt2":
            self.backbone = transformers.GPT2Model(transformers.GPT2Config(
                n_positions=2 * N_POSITIONS, n_embd=d, n_layer=n_layer, n_head=n_head, resid_pdrop=0.0,
                embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False, attn_implementation="eager"))
        elif name == "llama":
            self.backbone = transformers.LlamaModel(transformers.LlamaConfig(
                vocab_size=1, max_position_embeddings=2 * N_POSITIONS, hidden_size=d, intermediate_size=4 * d,
                num_hidden_layers=n_layer, num_attention_heads=n_head, use_cache=False, attn_implementation="eager"))
        elif name == "mamba":
            self.backbone = transformers.MambaModel(transformers.MambaConfig(
                vocab_size=1, hidden_size=d, state_size=16, expand=4, num_hidden_layers=n_layer, use_cache=False,
                residual_in_fp32=False))  # P: True, a no-op in float32 (this test runs float64)
        else:
            prefix, block, final = P_HYBRIDS[name]
            self.backbone = PHybridBackbone(prefix + block * n_layer + [final], d, n_head)
        self.read_out = nn.Linear(d, y_dim)
        self.hybrid = isinstance(self.backbone, PHybridBackbone)

    def forward(self, xs, ys):
        h = self.read_in(interleave(xs, ys))
        h = self.backbone(inputs_embeds=h) if self.hybrid else self.backbone(inputs_embeds=h).last_hidden_state
        return self.read_out(h)[:, ::2, 0]


def ours(name, profile="paper_code", *over, d=256, n_layer=12, n_head=8, n_dims=20, n_points=41, seed=0):
    cfg = compose_config([f"model={name}", f"model/profile={profile}", f"model.d_model={d}",
                          f"model.n_layer={n_layer}", f"model.n_head={n_head}", *over])
    torch.manual_seed(seed)
    return build_model(cfg.model, n_dims=n_dims, y_dim=1, max_points=n_points)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


# ---- (a) parameter counts at paper size ---------------------------------------------------------------
@pytest.mark.parametrize("name", PAPER_MODELS)
def test_paper_size_parameter_counts_equal_p(name):
    torch.manual_seed(0)
    ref = n_params(PModel(name, 20, 1, 256, 12, 8))
    assert ours(name).n_params() == ref


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_mqar_size_parameter_counts_equal_p(name):  # P's *_retrieval configs: n_embd 128, 2 layers, y_dim 20
    cfg = compose_config([f"model={name}", "task=mqar", "model/profile=paper_code"])
    m = build_model(cfg.model, n_dims=cfg.task.n_dims, y_dim=20, max_points=cfg.task.n_points)
    torch.manual_seed(0)
    assert m.n_params() == n_params(PModel(name, 20, 20, 128, 2, cfg.model.n_head))


# ---- (b) same weights, same outputs ------------------------------------------------------------------
def _ref_stages(p: PModel):
    """P's parameterised modules in order (markers dropped), base models flattened the same way."""
    bb = p.backbone
    if p.hybrid:
        return [m for m in bb.layers if not isinstance(m, Marker)]
    if isinstance(bb, transformers.GPT2Model):
        return [bb.wpe] + [m for h in bb.h for m in (h.ln_1, h.attn, h.ln_2, h.mlp)] + [bb.ln_f]
    if isinstance(bb, transformers.LlamaModel):
        return [m for h in bb.layers for m in (h.input_layernorm, h.self_attn, h.post_attention_layernorm, h.mlp)] + [bb.norm]
    return list(bb.layers) + [bb.norm_f]


def _our_stages(m):
    """Ours in the same order; a Mamba stage (norm, mixer) pairs with one HF MambaBlock."""
    out = []
    pos = m.positional
    if hasattr(pos, "wpe"):
        out.append(pos.wpe)
    elif hasattr(pos, "mixer"):
        out.append((pos.norm, pos.mixer))
    for b in m.blocks:
        if b.ffn is None:
            out.append((b.norm1, b.mixer))  # Mamba base: the block is one MambaBlock
            continue
        out += [b.norm1, b.mixer]
        out += [(b.norm2, b.ffn)] if type(b.ffn).__name__ == "MambaMixer" else [b.norm2, b.ffn]
    return out + [m.norm_f]


@torch.no_grad()
def copy_into_p(m, p: PModel):
    from transformers.models.gpt2.modeling_gpt2 import GPT2MLP, GPT2Attention
    from transformers.models.llama.modeling_llama import LlamaAttention, LlamaMLP, LlamaRMSNorm
    from transformers.models.mamba.modeling_mamba import MambaBlock

    p.read_in.load_state_dict(m.read_in.state_dict())
    p.read_out.load_state_dict(m.read_out.state_dict())
    refs, mine = _ref_stages(p), _our_stages(m)
    assert len(refs) == len(mine)
    for r, o in zip(refs, mine):
        if isinstance(r, MambaBlock):
            norm, mixer = o
            assert abs(r.norm.variance_epsilon - norm.eps) < 1e-12
            r.norm.weight.copy_(norm.weight)
            r.mixer.load_state_dict(mixer.state_dict())
        elif isinstance(r, (nn.Embedding, AbsPos)):
            (r.embed if isinstance(r, AbsPos) else r).weight.copy_(o.weight)
        elif isinstance(r, nn.LayerNorm):
            assert r.eps == o.eps
            r.load_state_dict(o.state_dict())
        elif isinstance(r, LlamaRMSNorm) or type(r).__name__.endswith("RMSNorm"):
            assert abs(r.variance_epsilon - o.eps) < 1e-12, (r.variance_epsilon, o.eps)
            r.weight.copy_(o.weight)
        elif isinstance(r, GPT2Attention):  # Conv1D stores [in, out]
            r.c_attn.weight.copy_(o.qkv.weight.T), r.c_attn.bias.copy_(o.qkv.bias)
            r.c_proj.weight.copy_(o.out_proj.weight.T), r.c_proj.bias.copy_(o.out_proj.bias)
        elif isinstance(r, LlamaAttention):
            assert o.qkv.bias is None and o.out_proj.bias is None
            q, k, v = o.qkv.weight.chunk(3, dim=0)
            for dst, src in ((r.q_proj, q), (r.k_proj, k), (r.v_proj, v), (r.o_proj, o.out_proj.weight)):
                dst.weight.copy_(src)
        elif isinstance(r, GPT2MLP):
            r.c_fc.weight.copy_(o.fc_in.weight.T), r.c_fc.bias.copy_(o.fc_in.bias)
            r.c_proj.weight.copy_(o.out_proj.weight.T), r.c_proj.bias.copy_(o.out_proj.bias)
        elif isinstance(r, LlamaMLP):
            for dst, src in ((r.gate_proj, o.gate_proj), (r.up_proj, o.up_proj), (r.down_proj, o.out_proj)):
                dst.weight.copy_(src.weight)
        else:
            raise AssertionError(type(r))


TINY = dict(d=32, n_layer=2, n_head=4, n_dims=5, n_points=7)


@pytest.mark.parametrize("name", ["llama_mamba_pos_ffn", "llama_mamba_ffn", "gpt2_rope", "gpt2_rms_swiglu",
                                  "gpt2", "llama", "mamba"])
def test_forward_equals_p_with_same_weights(name):
    m = ours(name, **TINY).double().eval()
    with torch.no_grad():  # move norms / biases off their init so every copied tensor matters
        for prm in m.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
    p = PModel(name, TINY["n_dims"], 1, TINY["d"], TINY["n_layer"], TINY["n_head"]).double().eval()
    copy_into_p(m, p)
    g = torch.Generator().manual_seed(1)
    xs = torch.randn(3, TINY["n_points"], TINY["n_dims"], generator=g, dtype=torch.float64)
    ys = torch.randn(3, TINY["n_points"], generator=g, dtype=torch.float64)
    with torch.no_grad():
        a, b = m(xs, ys), p(xs, ys)
    # transformers computes RoPE tables and its PyTorch Mamba fallback partly in float32 (about 1e-8 here); the
    # norms' eps are checked exactly in copy_into_p, and structural differences are far larger (outer residual > 1e-3)
    assert (a - b).abs().max().item() < 1e-6 * max(1.0, b.abs().max().item())
    if name.startswith("llama_mamba"):  # the outer residual matters: without it the outputs differ
        m2 = ours(name, "paper_code", "model.profile.mamba_outer_residual=false", **TINY).double().eval()
        m2.load_state_dict(m.state_dict())
        with torch.no_grad():
            assert (m2(xs, ys) - b).abs().max().item() > 1e-3


# ---- (c) each switch changes only its own thing ---------------------------------------------------------
def _shapes(m):
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


def _out(m, seed=2):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(2, TINY["n_points"], TINY["n_dims"], generator=g)
    ys = torch.randn(2, TINY["n_points"], generator=g)
    with torch.no_grad():
        return m.eval()(xs, ys)


def _flip(name, switch, value, **kw):
    size = {**TINY, **kw}
    base = ours(name, "cleaned", **size)
    flipped = ours(name, "cleaned", f"model.profile.{switch}={value}", **size)
    return base, flipped


def _same_after_copy(base, flipped) -> bool:
    flipped.load_state_dict(base.state_dict())
    return torch.allclose(_out(base), _out(flipped), atol=0, rtol=0)


def test_cleaned_is_the_default_profile():
    cfg = compose_config(["model=llama"])
    assert dict(cfg.model.profile) == CLEANED
    assert ours("gpt2", "cleaned").n_params() == 9_504_257  # docs/models.md, unchanged
    assert ours("llama", "cleaned").blocks[0].ffn.gate_proj.out_features == 704


def test_switch_swiglu_hidden_mult():
    base, fl = _flip("llama", "swiglu_hidden_mult", 4, d=48)  # Llama's rule: 128; 4d: 192
    a, b = _shapes(base), _shapes(fl)
    assert a.keys() == b.keys()
    assert {k for k in a if a[k] != b[k]} == {f"blocks.{i}.ffn.{n}.weight" for i in range(2)
                                              for n in ("gate_proj", "up_proj", "out_proj")}
    assert fl.blocks[0].ffn.gate_proj.out_features == 4 * 48 and base.blocks[0].ffn.gate_proj.out_features == 128
    b2, f2 = _flip("gpt2", "swiglu_hidden_mult", 4)  # no SwiGLU: nothing changes
    assert _shapes(b2) == _shapes(f2) and torch.equal(_out(b2), _out(f2))


def test_switch_attn_bias():
    base, fl = _flip("gpt2_rope", "attn_bias", "false")
    a, b = _shapes(base), _shapes(fl)
    assert a.keys() - b.keys() == {f"blocks.{i}.mixer.{n}.bias" for i in range(2) for n in ("qkv", "out_proj")}
    assert b.keys() <= a.keys() and all(a[k] == b[k] for k in b)
    assert not fl.blocks[0].mixer.conv1d_layout and base.blocks[0].mixer.conv1d_layout


def test_switch_norm_eps():
    base, fl = _flip("gpt2_rms", "norm_eps", 1e-6)
    assert _shapes(base) == _shapes(fl)
    assert {m.eps for m in fl.modules() if hasattr(m, "eps")} == {1e-6}
    assert {m.eps for m in base.modules() if hasattr(m, "eps")} == {1e-5}
    assert all(torch.equal(x, y) for x, y in zip(base.state_dict().values(), fl.state_dict().values()))


def test_switch_mamba_outer_residual():
    base, fl = _flip("llama_mamba_pos_ffn", "mamba_outer_residual", "true")
    assert _shapes(base) == _shapes(fl)
    assert all(torch.equal(x, y) for x, y in zip(base.state_dict().values(), fl.state_dict().values()))
    assert not torch.allclose(_out(base), _out(fl), atol=1e-3)
    assert fl.positional.outer_residual and all(b.ffn_outer_residual for b in fl.blocks)
    for name in ("llama", "mamba", "llama_mamba_pos"):  # attention / SwiGLU / mixer-slot Mamba: untouched
        base, fl = _flip(name, "mamba_outer_residual", "true")
        assert not any(b.ffn_outer_residual for b in fl.blocks)
        if name != "llama_mamba_pos":
            assert torch.equal(_out(base), _out(fl))


def test_switch_mamba_norm_eps():
    base, fl = _flip("llama_mamba_pos_ffn", "mamba_norm_eps", 1e-3)
    assert _shapes(base) == _shapes(fl)
    assert fl.positional.norm.eps == 1e-3 and all(b.norm2.eps == 1e-3 and b.norm1.eps == 1e-5 for b in fl.blocks)
    assert fl.norm_f.eps == 1e-5
    base, fl = _flip("llama_mamba_pos", "mamba_norm_eps", 1e-3)  # SwiGLU's norm is not a Mamba stage's
    assert all(b.norm2.eps == 1e-5 for b in fl.blocks) and fl.positional.norm.eps == 1e-3


def test_switch_n_positions():
    base, fl = _flip("gpt2", "n_positions", 141)
    a, b = _shapes(base), _shapes(fl)
    assert {k for k in a if a[k] != b[k]} == {"positional.wpe.weight"} and b["positional.wpe.weight"][0] == 282
    base, fl = _flip("llama", "n_positions", 141)  # RoPE: no table
    assert _shapes(base) == _shapes(fl) and torch.equal(_out(base), _out(fl))


def test_switch_vocab_rows():
    base, fl = _flip("llama", "vocab_rows", 3)
    a, b = _shapes(base), _shapes(fl)
    assert b.keys() - a.keys() == {"unused_wte.weight"} and b["unused_wte.weight"] == (3, 32)
    fl.load_state_dict(base.state_dict(), strict=False)
    assert torch.equal(_out(base), _out(fl))  # never read


@pytest.mark.parametrize("switch,value", [("init", "torch_default"), ("init", "hf_llama"), ("init", "hf_mamba"),
                                          ("io_init", "torch_default")])
def test_switch_init_changes_values_only(switch, value):
    for name in ("gpt2_rms", "llama_mamba_ffn"):
        base, fl = _flip(name, switch, value)
        assert _shapes(base) == _shapes(fl)
        assert _same_after_copy(base, fl)


# ---- (d) the initialisation kinds ------------------------------------------------------------------
def test_torch_default_init_is_p_hybrid_init():
    m = ours("gpt2_rms", "paper_code")  # P: plain nn.Modules, GPT-2 attention / MLP via HF Conv1D
    assert abs(m.positional.wpe.weight.std().item() - 1.0) < 0.02  # nn.Embedding default N(0, 1)
    at = m.blocks[0].mixer
    assert abs(at.qkv.weight.std().item() - 0.02) < 1e-3 and at.qkv.bias.abs().max() == 0
    assert abs(at.out_proj.weight.std().item() - 0.02) < 1e-3  # no residual scaling
    bound = 1 / math.sqrt(20)  # read-in: nn.Linear default U(+-1/sqrt(fan_in))
    assert m.read_in.weight.abs().max() <= bound and m.read_in.weight.abs().max() > 0.9 * bound
    r = ours("gpt2_rope", "paper_code")  # "llama attention": nn.Linear default
    w = r.blocks[0].mixer.qkv.weight
    assert w.abs().max() <= 1 / 16 and abs(w.std().item() - 1 / 16 / math.sqrt(3)) < 2e-3
    mm = ours("llama_mamba_ffn", "paper_code").blocks[0].ffn  # HF MambaMixer constructor: no dt init
    dt = mm.dt_proj
    assert dt.bias.abs().max() <= 0.25 and dt.bias.max() > 0.2  # U(+-1/sqrt(dt_rank=16)), not softplus^-1(dt)
    assert torch.equal(mm.A_log, torch.log(torch.arange(1, 17.0)).repeat(1024, 1)) and torch.all(mm.D == 1)


def test_hf_inits():
    m = ours("llama", "paper_code")
    o = m.blocks[0].mixer.out_proj.weight
    assert abs(o.std().item() - 0.02) < 1e-3  # HF Llama: N(0, 0.02), no residual scaling
    assert abs(m.unused_wte.weight.std().item() - 0.02) < 0.02
    g = ours("gpt2", "paper_code")
    assert abs(g.blocks[0].mixer.out_proj.weight.std().item() - 0.02 / math.sqrt(24)) < 3e-4  # c_proj rule
    assert abs(g.positional.wpe.weight.std().item() - 0.02) < 1e-3 and g.unused_wte.num_embeddings == 50257
    mb = ours("mamba", "paper_code")
    mx = mb.blocks[0].mixer
    assert mx.dt_proj.bias.max() < math.log(math.expm1(0.1)) + 1e-4  # softplus^-1 of dt in [1e-3, 0.1]
    fan = mx.in_proj.in_features
    assert mx.in_proj.weight.abs().max() <= 1 / math.sqrt(fan)  # kept PyTorch default
    assert abs(mb.unused_wte.weight.std().item() - 0.1) < 0.1
