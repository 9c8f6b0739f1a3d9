"""Numerical tests of icl_hybrids.models.mamba (Mamba v1 mixer) and icl_hybrids.ops (its kernels).

References used:
* ``icl_hybrids.ops.selective_scan_ref``: a deliberately simple, independently written sequential
  scan (plain autograd, state [B, D, N], one timestep at a time), shared with the benchmark.
* ``icl_hybrids.ops.causal_conv1d_ref``: ``F.conv1d(groups=D)``, what ``nn.Conv1d`` computes.
* ``mambapy.mamba.MambaBlock`` (pscan and sequential modes) and ``transformers``' ``MambaMixer``
  (torch fallback path; its ``causal_conv1d``/``mamba_ssm`` kernels are not installed on CPU)
  with our ``state_dict`` copied in.  Both references cast ``A_log``/``D`` with ``.float()``;
  transformers additionally casts ``B`` and ``u`` with ``.float()`` inside the scan, so in float64
  its agreement is limited to ~float32 rounding (measured ~1e-10 on O(1) outputs, well under 1e-5).
* ``mamba_ssm.selective_scan_fn`` / ``causal_conv1d_fn`` on CUDA (skipped without GPU/kernels).
"""

import io

import pytest
import torch
import torch.nn.functional as F

from icl_hybrids.models.mamba import AUTO_SCAN, MambaMixer, cuda_kernels_available
from icl_hybrids.ops import (
    _cpu_kernel,
    cpu_kernel_available,
    scan_blc,
    selective_scan_chunked,
    selective_scan_fn,
    selective_scan_loop,
    selective_scan_ref,
)
from icl_hybrids.ops.causal_conv1d import causal_conv1d_fn, causal_conv1d_ref

SCANS = {"loop": selective_scan_loop, "chunked": selective_scan_chunked,
         "cpp": lambda *a, chunk_size=None, **k: selective_scan_fn(*a, **k)}
needs_cpu_kernel = pytest.mark.skipif(not cpu_kernel_available(),
                                      reason=f"C++ CPU kernel unavailable: {_cpu_kernel.load_error()}")


def _scan_inputs(batch=3, dim=6, n=5, length=37, dtype=torch.float64, seed=0, dt_shift=0.0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return dict(
        u=r(batch, dim, length),
        delta=r(batch, dim, length),
        A=-torch.exp(r(dim, n)),
        B=r(batch, n, length),
        C=r(batch, n, length),
        D=r(dim),
        z=r(batch, dim, length),
        delta_bias=r(dim) + dt_shift,
    )


def _run(fn, inputs, grad_out, **kw):
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    y = fn(**leaves, delta_softplus=True, **kw)
    grads = torch.autograd.grad((y * grad_out).sum(), list(leaves.values()))
    return y, dict(zip(leaves, grads))


def _maxdiff(a, b):
    return (a - b).abs().max().item()


# ----------------------------------------------------------------------------- 1. scans
@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("dt_shift", [0.0, 4.0])  # 4.0: large steps -> decay overflow guard used
@pytest.mark.parametrize("scan,chunk_size", [("loop", 1), ("loop", 5), ("loop", 16),
                                             ("chunked", 1), ("chunked", 5), ("chunked", 16),
                                             ("cpp", None)])
def test_scans_match_reference(scan, chunk_size, dt_shift, dtype, atol):
    inputs = _scan_inputs(dtype=dtype, dt_shift=dt_shift)
    grad_out = torch.randn_like(inputs["u"])
    y_ref, g_ref = _run(selective_scan_ref, inputs, grad_out)
    y, g = _run(SCANS[scan], inputs, grad_out, chunk_size=chunk_size)
    scale = max(1.0, y_ref.abs().max().item())
    assert _maxdiff(y, y_ref) <= atol * scale
    for k in inputs:
        gscale = max(1.0, g_ref[k].abs().max().item())
        assert _maxdiff(g[k], g_ref[k]) <= atol * gscale, k


def test_loop_batch_blocking_and_optional_args():
    inp = _scan_inputs(batch=5, length=23)
    inp["delta"] = F.softplus(inp["delta"])  # no softplus below: delta must be positive
    y_ref = selective_scan_ref(inp["u"], inp["delta"], inp["A"], inp["B"], inp["C"])
    for bb in (1, 2, 5, 64):
        y = scan_blc(inp["u"].transpose(1, 2), inp["delta"].transpose(1, 2), inp["A"],
                     inp["B"].transpose(1, 2), inp["C"].transpose(1, 2), method="loop",
                     batch_block=bb, chunk_size=4).transpose(1, 2)
        assert _maxdiff(y, y_ref) < 1e-12
    # no D / z / bias / softplus
    for fn in SCANS.values():
        assert _maxdiff(fn(inp["u"], inp["delta"], inp["A"], inp["B"], inp["C"]), y_ref) < 1e-12


def test_loop_gradcheck():
    inp = _scan_inputs(batch=2, dim=3, n=2, length=7, seed=1)
    args = [inp[k].clone().requires_grad_() for k in ("u", "delta", "A", "B", "C", "D", "z")]
    fn = lambda *a: selective_scan_loop(*a, delta_softplus=True, chunk_size=3)  # noqa: E731
    assert torch.autograd.gradcheck(fn, args)


def test_half_precision_inputs_scan_in_fp32():
    inp = _scan_inputs(dtype=torch.float32, length=9)
    for fn in (selective_scan_loop, selective_scan_fn):
        y32 = fn(**inp, delta_softplus=True)
        y16 = fn(**{k: v.bfloat16() for k, v in inp.items()}, delta_softplus=True)
        assert y16.dtype == torch.bfloat16
        assert _maxdiff(y16.float(), y32) < 0.1 * y32.abs().max().item()


# ----------------------------------------------------------------------------- 1b. C++ CPU kernels
# Shapes: odd lengths, L = 1, single state / channel, and channel counts on both sides of the
# kernel's channel-tile boundaries (TILE = 64 channels in fp32, 32 in fp64).
KERNEL_SHAPES = [  # (batch, d_inner, d_state, length)
    (1, 1, 1, 1), (2, 3, 1, 2), (3, 31, 5, 37), (2, 32, 16, 1), (2, 33, 4, 23), (1, 63, 3, 9),
    (2, 64, 16, 22), (2, 65, 7, 41), (1, 129, 2, 5),
]


@needs_cpu_kernel
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("shape", KERNEL_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("optional", ["all", "none"])
def test_cpp_scan_matches_reference(shape, dtype, tol, optional):
    batch, dim, n, length = shape
    for dt_shift in (0.0, 4.0):
        inputs = _scan_inputs(batch=batch, dim=dim, n=n, length=length, dtype=dtype, dt_shift=dt_shift,
                              seed=dim + length)
        if optional == "none":  # no D, no z gate, no bias
            inputs = {k: v for k, v in inputs.items() if k not in ("D", "z", "delta_bias")}
        grad_out = torch.randn_like(inputs["u"])
        y_ref, g_ref = _run(selective_scan_ref, inputs, grad_out)
        y, g = _run(selective_scan_fn, inputs, grad_out)
        assert y.dtype == dtype
        assert _maxdiff(y, y_ref) <= tol * max(1.0, y_ref.abs().max().item())
        assert set(g) == set(g_ref)
        for k in g_ref:  # every input's gradient: u, delta, A, B, C (, D, z, delta_bias)
            assert _maxdiff(g[k], g_ref[k]) <= tol * max(1.0, g_ref[k].abs().max().item()), (k, dt_shift)


@needs_cpu_kernel
def test_cpp_scan_gradcheck_and_threads():
    inp = _scan_inputs(batch=3, dim=35, n=3, length=6, seed=2)  # 35: two fp64 channel tiles
    args = [inp[k].clone().requires_grad_() for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    fn = lambda *a: selective_scan_fn(*a, delta_softplus=True)  # noqa: E731
    assert torch.autograd.gradcheck(fn, args)
    # the OpenMP split over sequences (per-thread dA / dD partial sums) gives the same numbers
    go = torch.randn_like(inp["u"])
    prev = torch.get_num_threads()
    try:
        outs = []
        for nt in (1, 3):
            torch.set_num_threads(nt)
            outs.append(_run(selective_scan_fn, inp, go))
    finally:
        torch.set_num_threads(prev)
    (y1, g1), (y3, g3) = outs
    assert _maxdiff(y1, y3) == 0
    for k in g1:
        assert _maxdiff(g1[k], g3[k]) <= 1e-13 * max(1.0, g1[k].abs().max().item()), k


def test_cpp_scan_falls_back_to_loop(monkeypatch):
    inp = _scan_inputs(length=11)
    go = torch.randn_like(inp["u"])
    y_ref, g_ref = _run(selective_scan_ref, inp, go)
    monkeypatch.setattr(_cpu_kernel, "available", lambda: False)
    y, g = _run(selective_scan_fn, inp, go)
    assert _maxdiff(y, y_ref) < 1e-10
    x, w = torch.randn(2, 5, 6, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    assert torch.equal(causal_conv1d_fn(x, w, None, "silu"), causal_conv1d_ref(x, w, None, "silu"))


@needs_cpu_kernel
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("shape", [(1, 1, 1, 4), (2, 3, 5, 4), (3, 22, 65, 4), (2, 9, 33, 3), (1, 2, 7, 1)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("bias,activation,sliced", [(True, "silu", True), (False, None, False), (True, None, True)])
def test_cpp_causal_conv1d_matches_reference(shape, dtype, tol, bias, activation, sliced):
    B, T, D, K = shape
    g = torch.Generator().manual_seed(T * D)
    wide = torch.randn(B, T, 2 * D if sliced else D, dtype=dtype, generator=g)  # sliced: x half of in_proj
    leaves = [wide, torch.randn(D, K, dtype=dtype, generator=g)] + ([torch.randn(D, dtype=dtype, generator=g)]
                                                                   if bias else [])
    go = torch.randn(B, T, D, dtype=dtype, generator=g)
    res = []
    for fn in (causal_conv1d_ref, causal_conv1d_fn):
        lv = [t.clone().requires_grad_() for t in leaves]
        y = fn(lv[0][..., :D], lv[1], lv[2] if bias else None, activation)
        res.append((y, torch.autograd.grad((y * go).sum(), lv)))
    (y0, g0), (y1, g1) = res
    assert _maxdiff(y1, y0) <= tol * max(1.0, y0.abs().max().item())
    for a, b in zip(g1, g0):
        assert _maxdiff(a, b) <= tol * max(1.0, b.abs().max().item())


# ----------------------------------------------------------------------------- 2. parity
def _randomize_(mixer, seed=0):
    """Non-trivial A, D, dt (ranges reached after training); default init elsewhere; all fp32."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        mixer.A_log.copy_(torch.log(torch.rand(mixer.A_log.shape, generator=g) * 8 + 0.5))
        mixer.D.copy_(torch.randn(mixer.D.shape, generator=g))
        mixer.dt_proj.bias.copy_(torch.rand(mixer.d_inner, generator=g) * 3 - 2)  # dt in .13-1.3
        mixer.conv1d.bias.copy_(torch.randn(mixer.d_inner, generator=g) * 0.5)
    return mixer


def _make_mixer(d_model=12, d_state=6, expand=2, **kw):
    torch.manual_seed(0)
    return _randomize_(MambaMixer(d_model, d_state=d_state, d_conv=4, expand=expand, dt_rank=3, **kw))


def _hf_mixer(m):
    from transformers.models.mamba.configuration_mamba import MambaConfig
    from transformers.models.mamba.modeling_mamba import MambaMixer as HFMambaMixer

    cfg = MambaConfig(hidden_size=m.d_model, state_size=m.d_state, conv_kernel=m.d_conv,
                      expand=m.expand, time_step_rank=m.dt_rank, use_bias=False,
                      use_conv_bias=True, num_hidden_layers=1, use_mambapy=False)
    hf = HFMambaMixer(cfg, layer_idx=0)
    hf.load_state_dict(m.state_dict())  # strict: identical names and shapes
    return hf.eval()


def _mambapy_block(m, pscan):
    from mambapy.mamba import MambaBlock, MambaConfig

    cfg = MambaConfig(d_model=m.d_model, n_layers=1, dt_rank=m.dt_rank, d_state=m.d_state,
                      expand_factor=m.expand, d_conv=m.d_conv, pscan=pscan, use_cuda=False)
    blk = MambaBlock(cfg)
    blk.load_state_dict(m.state_dict())
    return blk


@pytest.mark.parametrize("scan", ["cpp", "loop", "chunked"])
@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-5), (torch.float32, 1e-4)])
def test_mixer_matches_mambapy_and_transformers(scan, dtype, atol):
    m = _make_mixer(scan=scan)
    refs = {"mambapy-pscan": _mambapy_block(m, True), "mambapy-seq": _mambapy_block(m, False),
            "transformers": _hf_mixer(m)}
    x = torch.randn(3, 29, m.d_model, generator=torch.Generator().manual_seed(1), dtype=dtype)
    m.to(dtype)
    y = m(x)
    assert 0.1 < y.abs().max() < 10  # outputs are O(1): abs tolerances are meaningful
    for name, ref in refs.items():
        ref.to(dtype)
        with torch.no_grad():
            d = _maxdiff(y, ref(x))
        assert d <= atol, (name, d)


@pytest.mark.parametrize("scan", ["cpp", "loop"])
def test_mixer_gradients_match_mambapy(scan):
    m = _make_mixer(scan=scan).double()
    ref = _mambapy_block(m, pscan=False).double()
    x = torch.randn(2, 17, m.d_model, dtype=torch.float64, requires_grad=True)
    go = torch.randn(2, 17, m.d_model, dtype=torch.float64)
    g_ours = torch.autograd.grad((m(x) * go).sum(), [x, *m.parameters()])
    g_ref = torch.autograd.grad((ref(x) * go).sum(), [x, *ref.parameters()])
    for a, b in zip(g_ours, g_ref):
        assert _maxdiff(a, b) <= 1e-5 * max(1.0, b.abs().max().item())


# ----------------------------------------------------------------------------- 3. causality
@pytest.mark.parametrize("scan", ["cpp", "loop", "chunked"])
def test_causality_perturbation_and_gradient(scan):
    m = _make_mixer(scan=scan, chunk_size=4).double()
    T, t0 = 19, 9
    x = torch.randn(2, T, m.d_model, dtype=torch.float64)
    x2 = x.clone()
    x2[:, t0 + 1:] += 10 * torch.randn_like(x2[:, t0 + 1:])
    with torch.no_grad():
        y, y2 = m(x), m(x2)
    assert torch.equal(y[:, : t0 + 1], y2[:, : t0 + 1])
    assert not torch.allclose(y[:, t0 + 1:], y2[:, t0 + 1:])
    xg = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(m(xg)[:, t0].sum(), xg)
    assert torch.count_nonzero(grad[:, t0 + 1:]) == 0
    assert torch.count_nonzero(grad[:, : t0 + 1]) > 0


# ----------------------------------------------------------------------------- 4. CUDA
needs_kernels = pytest.mark.skipif(not cuda_kernels_available(),
                                   reason="needs CUDA and mamba_ssm + causal_conv1d kernels")


@pytest.mark.cuda
@needs_kernels
def test_cuda_fast_path_matches_torch_path():
    m = _make_mixer(d_model=32, d_state=16).cuda()
    x = torch.randn(4, 33, 32, device="cuda", requires_grad=True)
    go = torch.randn(4, 33, 32, device="cuda")
    outs = {}
    for fast in (True, False):
        m.use_cuda_kernels = fast
        y = m(x)
        outs[fast] = (y, torch.autograd.grad((y * go).sum(), [x, *m.parameters()]))
    (y1, g1), (y0, g0) = outs[True], outs[False]
    assert _maxdiff(y1, y0) <= 1e-4 * max(1.0, y0.abs().max().item())
    for a, b in zip(g1, g0):
        assert _maxdiff(a, b) <= 1e-3 * max(1.0, b.abs().max().item())


@needs_kernels
@pytest.mark.cuda
def test_cuda_selective_scan_fn_matches_loop():
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    inp = {k: v.float().cuda() for k, v in _scan_inputs(dtype=torch.float32, dim=16).items()}
    go = torch.randn_like(inp["u"])
    y1, g1 = _run(selective_scan_fn, inp, go)
    y0, g0 = _run(selective_scan_loop, inp, go)
    assert _maxdiff(y1, y0) <= 1e-4 * max(1.0, y0.abs().max().item())
    for k in inp:
        assert _maxdiff(g1[k], g0[k]) <= 1e-3 * max(1.0, g0[k].abs().max().item()), k


# ----------------------------------------------------------------------------- 5. misc
def test_dtype_device_roundtrip_and_state_dict():
    m = _make_mixer()
    x = torch.randn(2, 13, m.d_model)
    y32 = m(x)
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    m.double()
    y64 = m(x.double())
    assert y64.dtype == torch.float64 and _maxdiff(y64, y32.double()) < 1e-4
    if torch.cuda.is_available():
        m.cuda().cpu()
    m.float()
    for k, v in m.state_dict().items():
        assert v.dtype == sd[k].dtype and torch.equal(v, sd[k]), k
    assert torch.equal(m(x), y32)

    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(123)
    m2 = MambaMixer(m.d_model, d_state=m.d_state, expand=m.expand, dt_rank=m.dt_rank)
    assert not torch.equal(m2(x), y32)
    m2.load_state_dict(torch.load(buf))
    assert torch.equal(m2(x), y32)

    yb = m.bfloat16()(x.bfloat16())  # half precision weights: scan still in fp32
    assert yb.dtype == torch.bfloat16 and _maxdiff(yb.float(), y32) < 0.1 * y32.abs().max().item()


def test_init_matches_mamba_ssm_conventions():
    torch.manual_seed(0)
    m = MambaMixer(32, d_state=8, expand=4, dt_min=0.001, dt_max=0.1)
    assert m.dt_rank == 2 and m.d_inner == 128
    assert torch.equal(m.A_log, torch.arange(1, 9, dtype=torch.float32).log().repeat(128, 1))
    assert torch.equal(m.D, torch.ones(128))
    dt = F.softplus(m.dt_proj.bias.detach())
    assert dt.min() >= 0.001 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    assert dt.log().std() > 0.5  # log-uniform spread over two decades
    assert m.dt_proj.weight.abs().max() <= 2 ** -0.5
    assert m.dt_proj._keep_init is True
    assert m.A_log._no_weight_decay is True and m.D._no_weight_decay is True
    assert m.scan == AUTO_SCAN
    with pytest.raises(ValueError):
        MambaMixer(8, scan="bogus")
