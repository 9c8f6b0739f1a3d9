"""CUDA fast paths against the reference paths (skipped cleanly without a GPU / the optional kernels)."""
import pytest
import torch

from icl_hybrids.models.attention import CausalSelfAttention, flash_attn_func

pytestmark = pytest.mark.cuda  # skipped without a CUDA device (tests/conftest.py)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.skipif(flash_attn_func() is None, reason="flash-attn not installed")
def test_flash_attn_matches_sdpa():
    torch.manual_seed(0)
    att = CausalSelfAttention(64, 4).cuda().to(torch.bfloat16)
    x = torch.randn(3, 50, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    y_flash = att(x)
    att.use_flash_attn = False
    y_sdpa = att(x)
    assert (y_flash.float() - y_sdpa.float()).abs().max() < 2e-2


@cuda
def test_sdpa_cuda_matches_cpu_float64_reference():
    torch.manual_seed(0)
    att = CausalSelfAttention(32, 4).double()
    x = torch.randn(2, 20, 32, dtype=torch.float64)
    ref = att(x)
    att_c = att.cuda()
    assert (att_c(x.cuda()).cpu() - ref).abs().max() < 1e-10
