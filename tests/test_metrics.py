import pytest
import torch

from icl_hybrids.metrics import ContextErrors, ICLRegressionScore, icl_score_ci, squared_errors


def _ys(B=16, N=6, seed=0, *extra):
    return torch.randn(B, N, *extra, generator=torch.Generator().manual_seed(seed))


def test_squared_errors_shapes():
    ys = _ys()
    assert squared_errors(ys + 1, ys).shape == ys.shape
    assert torch.allclose(squared_errors(ys + 2, ys), torch.full_like(ys, 4.0))
    yv = torch.randn(4, 5, 3)
    pv = yv.clone()
    pv[..., 0] += 3.0
    torch.testing.assert_close(squared_errors(pv, yv), torch.full((4, 5), 3.0))
    with pytest.raises(ValueError):
        squared_errors(ys[:, :3], ys)


def test_score_identities():
    ys = _ys()
    base = 0.3 * ys + 0.1 * _ys(seed=1)
    m = ICLRegressionScore()
    m.update(base, base, ys)
    assert m.compute().item() == pytest.approx(1.0)
    m = ICLRegressionScore()
    m.update(torch.zeros_like(ys), base, ys)
    assert m.compute().item() == pytest.approx(0.0, abs=1e-7)


def test_score_hand_computed():
    ys = torch.tensor([[1.0, 2.0], [1.0, 0.0]])
    model = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # errs [[1,1],[0,0]] -> e_m = [0.5, 0.5]
    base = torch.tensor([[1.0, 2.0], [0.0, 0.0]])  # errs [[0,0],[1,0]] -> e_b = [0.5, 0.0]
    # e_0 = [(1+1)/2, (4+0)/2] = [1, 2]
    m = ICLRegressionScore()
    m.update(model, base, ys)
    # S = ((0.5-1) + (0.5-2)) / ((0.5-1) + (0-2)) = -2 / -2.5 = 0.8
    assert m.compute().item() == pytest.approx(0.8)
    m_pos = ICLRegressionScore(positions=[1])
    m_pos.update(model, base, ys)
    assert m_pos.compute().item() == pytest.approx(1.5 / 2.0)
    m_sl = ICLRegressionScore(positions=slice(0, 1))
    m_sl.update(model, base, ys)
    assert m_sl.compute().item() == pytest.approx(0.5 / 0.5)
    per = m.per_position()
    torch.testing.assert_close(per["zero"], torch.tensor([1.0, 2.0], dtype=torch.float64))
    # vector targets
    mv = ICLRegressionScore()
    mv.update(model[..., None].expand(2, 2, 3), base[..., None].expand(2, 2, 3), ys[..., None].expand(2, 2, 3))
    assert mv.compute().item() == pytest.approx(0.8)


def test_score_merge_and_halves_equal_one_pass():
    ys = _ys(B=20)
    model, base = 0.5 * ys, 0.8 * ys + 0.2 * _ys(B=20, seed=3)
    full = ICLRegressionScore()
    full.update(model, base, ys)
    a, b = ICLRegressionScore(), ICLRegressionScore()
    a.update(model[:7], base[:7], ys[:7])
    b.update(model[7:], base[7:], ys[7:])
    a.merge_state(b)
    assert a.compute().item() == pytest.approx(full.compute().item(), rel=1e-6)
    halves = ICLRegressionScore(n_positions=ys.shape[1])
    halves.update(model[:11], base[:11], ys[:11])
    halves.update(model[11:], base[11:], ys[11:])
    assert halves.compute().item() == pytest.approx(full.compute().item(), rel=1e-6)
    full.reset()
    assert full.model_sum.shape == ()


def test_score_ci_bootstrap():
    g = torch.Generator().manual_seed(0)
    B, N = 200, 8
    zero = 1.0 + torch.rand(B, N, generator=g)
    base = 0.1 * torch.rand(B, N, generator=g)
    model = 0.3 + 0.2 * torch.rand(B, N, generator=g)
    s, lo, hi = icl_score_ci(model, base, zero, n_boot=500, generator=torch.Generator().manual_seed(1))
    expected = ((model - zero).mean(0).sum() / (base - zero).mean(0).sum()).item()
    assert s == pytest.approx(expected)
    assert lo < s < hi and hi - lo < 0.1
    s2, lo2, hi2 = icl_score_ci(model, base, zero, positions=[0, 1], n_boot=200)
    assert lo2 <= s2 <= hi2


def test_context_errors_ci_covers_true_mean():
    g = torch.Generator().manual_seed(0)
    B, N = 400, 5
    ys = torch.randn(B, N, generator=g)
    preds = ys + torch.randn(B, N, generator=g)  # squared error ~ chi2_1, true mean 1
    m = ContextErrors()
    m.update(preds, ys)
    out = m.compute()
    assert out["mean"].shape == (N,)
    assert torch.all(out["lo"] < 1.0) and torch.all(out["hi"] > 1.0)
    assert m.z == pytest.approx(2.576, abs=1e-3)
    # merging two halves == one pass; precomputed errors path
    a, b = ContextErrors(), ContextErrors()
    a.update(preds[:150], ys[:150])
    b.update_errors(squared_errors(preds[150:], ys[150:]))
    a.merge_state(b)
    for key in ("mean", "lo", "hi"):
        torch.testing.assert_close(a.compute()[key], out[key])
    # normal approximation formula
    err = squared_errors(preds, ys).double()
    half = 2.5758293 * err.std(0) / B**0.5
    torch.testing.assert_close(out["hi"] - out["mean"], half, rtol=1e-6, atol=0)
