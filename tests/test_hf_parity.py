"""Numbers, not shapes: our GPT-2 and Llama compositions equal transformers' GPT2Model / LlamaModel
with the same weights (transformers is a test-only dependency)."""
import pytest
import torch

from icl_hybrids.config import compose_config
from icl_hybrids.models.model import build_model

transformers = pytest.importorskip("transformers")
from icl_hybrids.models.hf import to_hf_gpt2, to_hf_llama  # noqa: E402

D, N, DM, L, H = 5, 7, 32, 2, 4


def ours(name, **over):
    cfg = compose_config([f"model={name}", f"model.d_model={DM}", f"model.n_layer={L}", f"model.n_head={H}",
                          *[f"{k}={v}" for k, v in over.items()]])
    torch.manual_seed(0)
    return build_model(cfg.model, n_dims=D, y_dim=1, max_points=N).double().eval()


def max_diff(m, hf, seed: int, dtype=torch.float64) -> float:
    """Largest output difference of our model and the transformers one on random prompts."""
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(3, N, D, generator=g, dtype=torch.float64)
    ys = torch.randn(3, N, generator=g, dtype=torch.float64)
    m, hf, xs, ys = (t.to(dtype) for t in (m, hf, xs, ys))
    with torch.no_grad():
        return (m(xs, ys) - hf(xs, ys)).abs().max().item()


@pytest.mark.parametrize("name,convert", [("gpt2", to_hf_gpt2), ("llama", to_hf_llama)])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_equals_transformers(name, convert, attn):
    m = ours(name)
    # perturb the norms and biases away from their init so that every copied tensor matters
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hf = convert(m, attn_implementation=attn).eval()
    diff = max_diff(m, hf, seed=1)
    assert diff <= 1e-5, diff
    diff32 = max_diff(m, hf, seed=1, dtype=torch.float32)  # float32 as well (tolerance 1e-4)
    assert diff32 <= 1e-4, diff32


def test_sdpa_equals_explicit_attention():
    m = ours("llama")
    xs, ys = torch.randn(2, N, D, dtype=torch.float64), torch.randn(2, N, dtype=torch.float64)
    with torch.no_grad():
        a = m(xs, ys)
        for b in m.blocks:
            b.mixer.use_sdpa = False
        assert (a - m(xs, ys)).abs().max() < 1e-12


def test_mamba_equals_transformers_mambamodel():
    from icl_hybrids.models.hf import to_hf_mamba

    m = ours("mamba")
    diff = max_diff(m, to_hf_mamba(m).eval(), seed=3)
    # transformers' slow path computes A (and B, u) in float32 internally (docs/mamba.md)
    assert diff <= 1e-5, diff
