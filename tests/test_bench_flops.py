"""The roofline's FLOP count (icl_hybrids/bench/flops.py) against torch.utils.flop_counter.FlopCounterMode,
its closed form, and the matmul-peak / MFU helpers. Tiny models, one step each: seconds."""
import pytest
import torch

from icl_hybrids import perf
from icl_hybrids.bench import flops
from icl_hybrids.bench.driver import add_mfu
from icl_hybrids.bench.train_step import _train_case, _train_step_fn
from icl_hybrids.models.ffn import swiglu_hidden

SIZE = dict(model=dict(n_layer=2, d_model=32, n_head=4), task=dict(n_dims=4, n_points=7), batch=3)


def _case(name, **model_over):
    size = {**SIZE, "model": {**SIZE["model"], **model_over}}
    cfg, model, xs, ys = _train_case(name, size, torch.device("cpu"))
    return cfg, model, xs, ys, size


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_matmul_and_attention_match_flop_counter(name):
    """Linear layers = the counter's mm/addmm, attention = its bmm (SDPA's math backend decomposes into bmm;
    CPU's fused SDPA op has no FLOP formula in torch). Forward + backward of a full train step."""
    cfg, model, xs, ys, size = _case(name)
    step = _train_step_fn(model, xs, ys, cfg.optim)
    with perf.sdpa_math():
        got = flops.measured_flops(step)
    want = flops.count_train_step_flops(model, size["batch"], 2 * size["task"]["n_points"])
    assert want["matmul"] == got["matmul"], (want, got["by_op"])
    assert want["attention"] == got["attention"], (want, got["by_op"])
    assert want["mfu_flops"] == want["matmul"] + want["attention"] == want["total"]  # no Mamba parts


def test_explicit_attention_path_counts_the_same():
    """The reference attention path (softmax(QK^T)V with a mask) does the same matmuls as SDPA's."""
    cfg, model, xs, ys, size = _case("gpt2")
    for m in model.modules():
        if hasattr(m, "use_sdpa"):
            m.use_sdpa = False
    got = flops.measured_flops(_train_step_fn(model, xs, ys, cfg.optim))
    want = flops.count_train_step_flops(model, size["batch"], 2 * size["task"]["n_points"])
    assert (want["matmul"], want["attention"]) == (got["matmul"], got["attention"])


def test_read_in_has_no_input_gradient():
    """4 * in * out * BT for the read-in (its input is data), 6 * ... for every other Linear."""
    _, model, _, _, size = _case("gpt2")
    bt = size["batch"] * 2 * size["task"]["n_points"]
    full = flops.count_train_step_flops(model, size["batch"], 2 * size["task"]["n_points"])["matmul"]
    lin = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert full == sum(6 * m.in_features * m.out_features * bt for m in lin) - 2 * size["task"]["n_dims"] * 32 * bt


@pytest.mark.parametrize("name", ["mamba", "llama_mamba_pos_ffn"])
def test_mamba_models_linear_part_matches_flop_counter(name):
    """Mamba's in/x/dt/out projections are counted like any Linear (the counter's mm/addmm); the scan and
    the depthwise conv are kept apart and out of the MFU."""
    cfg, model, xs, ys, size = _case(name)
    with perf.sdpa_math():
        got = flops.measured_flops(_train_step_fn(model, xs, ys, cfg.optim))
    want = flops.count_train_step_flops(model, size["batch"], 2 * size["task"]["n_points"])
    assert want["matmul"] == got["matmul"], (want, got["by_op"])
    assert want["mamba_scan"] > 0 and want["mamba_conv"] > 0
    assert want["mfu_flops"] == want["matmul"] + want["attention"] < want["total"]
    # its attention mixers: the counter's bmm (the pure-PyTorch scan, used without a C++ compiler, has bmm too)
    if name == "llama_mamba_pos_ffn" and all(m.last_path == "cpp" for m in model.modules() if hasattr(m, "d_state")):
        assert want["attention"] == got["attention"] > 0


@pytest.mark.parametrize("name,ffn_mats", [("gpt2", 2), ("llama", 3)])
def test_closed_form_equals_module_walk(name, ffn_mats):
    """The written-out count for the paper's GPT-2 and Llama (12 layers, d_model 256, batch 64, 82 tokens)."""
    size = dict(model=dict(n_layer=12, d_model=256, n_head=8), task=dict(n_dims=20, n_points=41), batch=64)
    from icl_hybrids.config import compose_config
    from icl_hybrids.models.model import build_model

    cfg = compose_config([f"model={name}", "task=linear", "model.n_layer=12", "model.d_model=256", "model.n_head=8"])
    model = build_model(cfg.model, n_dims=20, y_dim=1, max_points=41)
    hidden = 4 * 256 if name == "gpt2" else swiglu_hidden(256)
    want = flops.closed_form_transformer_flops(12, 256, 20, 1, hidden, size["batch"], 82, ffn_mats=ffn_mats)
    assert flops.count_train_step_flops(model, 64, 82)["total"] == want
    if name == "gpt2":  # the paper-size GPT-2 step: ~313 GFLOP (docs/performance.md, "Roofline")
        assert abs(want / 1e9 - 313.4) < 0.5


def test_matmul_peak_and_mfu():
    peak = flops.matmul_peak(torch.device("cpu"), reps=1, n=64)
    assert peak["n"] == 64 and peak["fp32_gflops"] > 0
    assert peak["bf16_gflops"] is None or peak["bf16_gflops"] > 0
    assert peak["fp32_onednn_gflops"] is None or peak["fp32_onednn_gflops"] > 0  # informational, CPU only
    merged = flops.merge_peaks({"fp32_gflops": 10.0, "bf16_gflops": None}, {"fp32_gflops": 12.0, "bf16_gflops": 30.0})
    assert merged["fp32_gflops"] == 12.0 and merged["bf16_gflops"] == 30.0
    res = {"train_step.x": {"roofline": {"ours": {"dtype": "fp32", "gflops": 6.0}}},
           "train_step_bf16.x": {"roofline": {"fp32": {"dtype": "fp32", "gflops": 3.0},
                                              "bf16": {"dtype": "bf16", "gflops": 15.0}}}}
    add_mfu(res, merged)
    assert res["train_step.x"]["mfu"] == 0.5 and res["train_step.x"]["roofline"]["ours"]["peak_gflops"] == 12.0
    assert res["train_step_bf16.x"]["mfu_fp32"] == 0.25 and res["train_step_bf16.x"]["mfu_bf16"] == 0.5
    roof = flops.roofline({"mfu_flops": 4e9, "total": 5e9}, 2.0, 4.0)
    assert roof == {"gflops": 2.0, "gflops_total": 2.5, "mfu": 0.5}


def test_cpu_bf16_support_keys():
    s = flops.cpu_bf16_support()
    assert {"capability", "avx512_bf16", "amx_bf16", "native_bf16", "source"} <= set(s)
    assert s["native_bf16"] == (s["avx512_bf16"] or s["amx_bf16"])
