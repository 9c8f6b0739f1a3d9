"""Reference checkpoints as our models (icl_hybrids/interop.py): a checkpoint written in Garg et al.'s layout
(``TransformerModel``: ``_read_in`` -> transformers ``GPT2Model`` -> ``_read_out``, saved as their train.py saves
``state.pt``) and in the paper's code's layout (P: the same for GPT-2, plus ``LlamaModel`` / ``MambaModel``
backbones, bare ``checkpoint_<k>`` state dicts) load into our model and predict what their forward predicts;
``python -m icl_hybrids.evaluate`` scores them."""
import json

import pytest
import torch
import yaml
from torch import nn

transformers = pytest.importorskip("transformers")

from icl_hybrids import evaluate, interop  # noqa: E402
from icl_hybrids.config import ConfigError  # noqa: E402

D, N, E, L, H = 5, 11, 32, 2, 4  # n_dims, n_positions (points), n_embd, n_layer, n_head


class GargTransformer(nn.Module):
    """Garg et al.'s TransformerModel (src/models.py), re-implemented from its description; P's GPT2 / Llama /
    Mamba (src/models/transformer.py BackboneModel) are the same around another backbone."""

    def __init__(self, backbone: nn.Module, n_dims: int = D, n_embd: int = E):
        super().__init__()
        self._read_in = nn.Linear(n_dims, n_embd)
        self._backbone = backbone
        self._read_out = nn.Linear(n_embd, 1)

    @staticmethod
    def _combine(xs, ys):
        """[x_1, (y_1, 0, ...), x_2, (y_2, 0, ...), ...]"""
        b, n, d = xs.shape
        ys_wide = torch.cat((ys.view(b, n, 1), torch.zeros(b, n, d - 1, dtype=ys.dtype)), dim=2)
        return torch.stack((xs, ys_wide), dim=2).view(b, 2 * n, d)

    def forward(self, xs, ys):
        out = self._backbone(inputs_embeds=self._read_in(self._combine(xs, ys))).last_hidden_state
        return self._read_out(out)[:, ::2, 0]  # predict at the x positions


def gpt2_backbone(n_positions: int = N):
    cfg = transformers.GPT2Config(n_positions=2 * n_positions, n_embd=E, n_layer=L, n_head=H, resid_pdrop=0.0,
                                  embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False, attn_implementation="eager")
    return transformers.GPT2Model(cfg)


def llama_backbone():
    cfg = transformers.LlamaConfig(vocab_size=1, max_position_embeddings=2 * N, hidden_size=E,
                                   intermediate_size=4 * E, num_hidden_layers=L, num_attention_heads=H,
                                   hidden_act="silu", use_cache=False, attn_implementation="eager")
    return transformers.LlamaModel(cfg)


def mamba_backbone():
    cfg = transformers.MambaConfig(vocab_size=1, hidden_size=E, state_size=16, expand=4, num_hidden_layers=L,
                                   use_cache=False)
    return transformers.MambaModel(cfg)


def theirs(backbone) -> GargTransformer:
    torch.manual_seed(0)
    m = GargTransformer(backbone)
    with torch.no_grad():  # away from the init (unit norms, zero biases): every tensor must be copied right
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.eval()


def save_like_garg(m: nn.Module, path, step: int = 500) -> None:
    """As their train.py writes state.pt."""
    opt = torch.optim.Adam(m.parameters(), lr=1e-4)
    torch.save({"model_state_dict": m.state_dict(), "optimizer_state_dict": opt.state_dict(), "train_step": step}, path)


def prompts(dtype, b: int = 3, n: int = N):
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, n, D, generator=g, dtype=dtype), torch.randn(b, n, generator=g, dtype=dtype)


def max_diff(ours: nn.Module, ref: nn.Module, dtype) -> float:
    ours, ref = ours.to(dtype), ref.to(dtype)
    xs, ys = prompts(dtype)
    with torch.no_grad():
        return (ours(xs, ys) - ref(xs, ys)).abs().max().item()


# ---- Garg's GPT-2 -------------------------------------------------------------------------------------
def test_garg_state_pt_predicts_as_their_forward(tmp_path):
    ref = theirs(gpt2_backbone())
    path = tmp_path / "state.pt"
    save_like_garg(ref, path)
    assert interop.detect(path) == "garg"
    module = interop.load_module(path, "garg", "linear", ["model.n_head=4", f"task.n_points={N}"])
    assert module.global_step_loaded == 500 and module.task.n_dims == D
    assert max_diff(module.model, ref, torch.float32) <= 1e-5
    assert max_diff(module.model, ref, torch.float64) <= 1e-10


def test_old_transformers_buffers_and_bare_state_dicts(tmp_path):
    """model_<k>.pt is a bare state dict; transformers < 4.2x also saved each layer's causal mask."""
    ref = theirs(gpt2_backbone())
    sd = ref.state_dict()
    for i in range(L):
        sd[f"_backbone.h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 2 * N, 2 * N))
        sd[f"_backbone.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(sd, tmp_path / "model_1000.pt")
    module = interop.load_module(tmp_path / "model_1000.pt", "garg", "linear", ["model.n_head=4", f"task.n_points={N}"])
    assert module.global_step_loaded == 1000
    assert max_diff(module.model, ref, torch.float64) <= 1e-10


def test_garg_config_yaml_gives_task_heads_and_length(tmp_path):
    ref = theirs(gpt2_backbone())
    save_like_garg(ref, tmp_path / "state.pt")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({
        "model": {"family": "gpt2", "n_dims": D, "n_embd": E, "n_head": H, "n_layer": L, "n_positions": N},
        "training": {"task": "sparse_linear_regression", "task_kwargs": {"sparsity": 2},
                     "curriculum": {"points": {"end": 9}, "dims": {"end": D}}}}))
    module = interop.load_module(tmp_path / "state.pt", "garg", None, [])
    assert module.task.name == "sparse_linear" and module.task.n_points == 9 and module.task.sparsity == 2
    assert max_diff(module.model, ref, torch.float64) <= 1e-10


def test_evaluate_scores_a_garg_checkpoint(tmp_path, capsys):
    save_like_garg(theirs(gpt2_backbone()), tmp_path / "state.pt")
    out = tmp_path / "eval"
    rc = evaluate.main([f"ckpt={tmp_path / 'state.pt'}", "task=linear", "model.n_head=4", f"task.n_points={N}",
                        "eval.n_prompts=16", f"out={out}", "plot=false"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "results_eval.json").read_text())
    assert res["ckpt_format"] == "garg" and res["model"] == "garg-gpt2" and res["step"] == 500
    assert len(res["model_errors"]) == N and all(e == e for e in res["model_errors"])


def test_one_line_errors(tmp_path, capsys):
    save_like_garg(theirs(gpt2_backbone()), tmp_path / "state.pt")
    ck = f"ckpt={tmp_path / 'state.pt'}"
    cases = [([ck, "task=linear"], "model.n_head=null: a garg gpt2 checkpoint needs model.n_head=<k>"),
             ([ck, "model.n_head=4"], "task=null: a garg checkpoint needs task=<task>"),
             ([ck, "task=linear", "model.n_head=4", "task.n_dims=7"], "task.n_dims=7: the checkpoint reads inputs of width 5"),
             ([ck, "task=linear", "model.n_head=4", f"task.n_points={N}", "eval.n_points=30"],
              f"eval.n_points=30: model garg-gpt2 has learned absolute positions for at most {N} points"),
             ([ck, "task=linear", "model.n_head=4"],  # linear's 41 points do not fit a table of 2 x 11 rows
              f"task.n_points=41: model garg-gpt2 has learned absolute positions for at most {N} points"),
             ([ck, "ckpt_format=nope"], "ckpt_format='nope': allowed: auto, icl_hybrids, garg, paper_code")]
    for argv, msg in cases:
        assert evaluate.main([*argv, "eval.n_prompts=8", f"out={tmp_path / 'o'}", "plot=false"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {msg}") and "\n" not in err, err


def test_model_keys_only_for_reference_checkpoints(tiny_run, capsys):
    assert evaluate.main([f"ckpt={tiny_run / 'checkpoints' / 'last.ckpt'}", "model.n_head=4"]) == 2
    assert "model.n_head=4: model.<key> only describes a reference checkpoint" in capsys.readouterr().err


# ---- the paper's code: GPT-2 (as Garg's), Llama, Mamba -------------------------------------------------
# float64: HF's LlamaRMSNorm and rotary tables compute in float32 (1e-6 then); HF's MambaModel keeps its residual
# in float32 (residual_in_fp32): float32 only
@pytest.mark.parametrize("kind,backbone,tol64", [("gpt2", gpt2_backbone, 1e-10), ("llama", llama_backbone, 1e-6),
                                                 ("mamba", mamba_backbone, None)])
def test_paper_code_checkpoints(tmp_path, kind, backbone, tol64):
    ref = theirs(backbone())
    path = tmp_path / "checkpoint_2000"
    torch.save(ref.state_dict(), path)  # P's ContextTrainer: torch.save(model.state_dict(), checkpoint_<step>)
    assert interop.detect(path) == "paper_code"
    module = interop.load_module(path, "paper_code", "linear", [f"task.n_points={N}"] +
                                 (["model.n_head=4"] if kind != "mamba" else []))
    assert module.global_step_loaded == 2000 and module.cfg.name == f"paper_code-{kind}"
    assert max_diff(module.model, ref, torch.float32) <= 1e-5
    if tol64 is not None:
        assert max_diff(module.model, ref, torch.float64) <= tol64


def test_unknown_backbone_is_one_line(tmp_path):
    sd = {"_read_in.weight": torch.zeros(E, D), "_read_in.bias": torch.zeros(E), "_read_out.weight": torch.zeros(1, E),
          "_read_out.bias": torch.zeros(1), "_backbone.layers.0.0.weight": torch.zeros(E)}  # P's hybrid module list
    torch.save(sd, tmp_path / "checkpoint_5")
    with pytest.raises(ConfigError, match="neither a GPT2Model, a LlamaModel nor a MambaModel"):
        interop.load_module(tmp_path / "checkpoint_5", "paper_code", "linear", [])


def test_our_checkpoints_are_ours(tiny_run):
    assert interop.detect(tiny_run / "checkpoints" / "last.ckpt") == "icl_hybrids"
