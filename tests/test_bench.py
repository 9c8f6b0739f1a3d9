"""Smoke test of the side-by-side benchmark (icl_hybrids/bench/) at tiny sizes: every entry runs, the
result object has its structure, and our implementations agree with the references. Not a speed test."""
import json

import pytest

pytest.importorskip("transformers")
pytest.importorskip("mambapy")
pytest.importorskip("sklearn")

from icl_hybrids import bench  # noqa: E402

TIMING = {"min_s", "median_s", "reps", "peak_mem_mb"}


@pytest.fixture(scope="module")
def result():
    return bench.run(tiny=True, log=lambda s: None)


def test_all_entries_and_meta(result):
    assert set(result) == {"meta", *bench.entry_names()}
    meta = result["meta"]
    assert meta["errors"] == {}
    for k in ("date", "device", "device_name", "threads", "torch", "quick", "memory", "targets", "sizes",
              "matmul_peak", "roofline"):
        assert k in meta, k
    assert meta["matmul_peak"]["fp32_gflops"] > 0
    assert meta["tiny"] is True and meta["quick"] is False
    assert meta["threads"] == 1 or meta["device"] != "cpu"
    # every target of the issue is evaluated, with a pass/fail flag
    for entry, key, thr in bench.TARGETS:
        t = meta["targets"][f"{entry}.{key}>={thr:g}"]
        assert isinstance(t["pass"], bool) and t["value"] > 0
    json.dumps(result)  # serialisable as printed


@pytest.mark.parametrize("name", bench.BASELINE_NAMES)
def test_baseline_entries(result, name):
    e = result[f"baselines.{name}"]
    assert TIMING <= set(e["ours"]) and TIMING <= set(e["reference_timing"])
    assert e["speedup"] > 0 and e["speedup_median"] > 0
    assert {"B", "N", "d", "reference_prompts"} <= set(e["shapes"])
    assert e["device"] in ("cpu", "cuda")
    assert e["compared_predictions"] > 0
    assert e["max_abs_diff"] <= bench.AGREEMENT_TOL, e


@pytest.mark.parametrize("name", bench.TRAIN_MODELS)
def test_train_step_entries(result, name):
    e = result[f"train_step.{name}"]
    assert TIMING <= set(e["ours"]) and e["steps_per_s"] > 0
    assert {"batch", "tokens", "n_layer", "d_model", "n_params"} <= set(e["shapes"])
    if name in bench.HF_BUILDERS:  # same weights copied into transformers: same function
        assert TIMING <= set(e["hf"]) and e["speedup_vs_hf"] > 0
        assert e["max_abs_diff"] <= 1e-5, e
    else:
        assert "speedup_vs_hf" not in e
    _check_roofline(e, "ours")
    assert e["flops_per_step"]["mfu_flops"] > 0 and 0 < e["mfu"] == e["roofline"]["ours"]["mfu"]


def _check_roofline(e, *sides):
    """Every timed side has FLOPs per step, achieved GFLOP/s and its MFU against the run's matmul peak."""
    for side in sides:
        r = e["roofline"][side]
        assert r["flops_per_step"] > 0 and r["gflops"] > 0 and r["peak_gflops"] > 0, (side, r)
        assert r["mfu"] == pytest.approx(r["gflops"] / r["peak_gflops"], rel=1e-2)
        assert r["dtype"] in ("fp32", "bf16")


@pytest.mark.parametrize("name", bench.BF16_MODELS)
def test_train_step_bf16_entries(result, name):
    """Our bf16 autocast step against our fp32 step: timed, finite, fp32 master weights, close forward."""
    e = result[f"train_step_bf16.{name}"]
    assert TIMING <= set(e["fp32"]) and TIMING <= set(e["bf16"])
    assert e["speedup"] > 0 and e["steps_per_s_bf16"] > 0 and e["steps_per_s_fp32"] > 0
    assert e["loss_finite"] and e["forward_finite"]
    assert e["master_weights_dtype"] == ["float32"]
    assert e["max_abs_diff_forward"] <= 0.05 * max(1.0, e["output_max_abs"]), e  # bf16 rounding, not a bug
    _check_roofline(e, "fp32", "bf16")
    assert e["roofline"]["bf16"]["dtype"] == "bf16" and e["mfu_bf16"] > 0 and e["mfu_fp32"] > 0


def test_mamba_scan_entry(result):
    e = result["mamba_scan"]
    assert TIMING <= set(e["ours"]) and TIMING <= set(e["mambapy"])
    assert e["speedup_vs_mambapy"] > 0
    assert e["max_abs_diff"] <= bench.AGREEMENT_TOL and e["max_rel_diff_grads"] <= 1e-5, e
    # against the plain sequential reference (icl_hybrids.ops.selective_scan_ref)
    assert e["max_abs_diff_vs_reference"] <= bench.AGREEMENT_TOL and e["max_rel_diff_grads_vs_reference"] <= 1e-5, e
    if "torch_loop" in e:  # the pure-PyTorch scan, timed side by side
        assert TIMING <= set(e["torch_loop"]) and e["speedup_vs_torch_loop"] > 0
        assert e["max_abs_diff_vs_torch_loop"] <= bench.AGREEMENT_TOL, e


def test_train_step_ratio_entry(result):
    e = result["train_step_ratio.mamba_vs_gpt2"]
    for k in ("gpt2", "mamba", "mamba_torch_path"):
        assert TIMING <= set(e[k]), k
    assert e["ratio"] > 0 and e["ratio_median"] > 0 and e["ratio_torch_path"] > 0
    assert e["speedup_vs_torch_path"] > 0
    assert e["max_abs_diff_vs_torch_path"] <= 1e-5, e  # kernel path and pure-PyTorch path agree
    assert {"batch", "tokens", "n_layer", "d_model"} <= set(e["shapes"])
    _check_roofline(e, "gpt2", "mamba", "mamba_torch_path")
    (entry, key, thr), = bench.TARGETS_MAX
    t = result["meta"]["targets"][f"{entry}.{key}<={thr:g}"]
    assert isinstance(t["pass"], bool) and t["value"] == e["ratio"]


def test_evaluate_entry(result):
    e = result["evaluate"]
    assert e["min_s"] > 0 and e["median_s"] >= e["min_s"]
    assert set(e["breakdown_s"]) == {"prompts", "model", "baselines", "summarize"}
    assert e["shapes"]["n_prompts"] == bench.SIZES["tiny"]["eval_prompts"]


def test_only_and_cli(tmp_path, capsys):
    out = tmp_path / "b.json"
    rc = bench.main(["tiny=true", "only=baselines.averaging,mamba", f"json={out}", "reps=2"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads(out.read_text())
    assert set(printed) == set(written) == {"meta", "baselines.averaging", "mamba_scan"}
    assert printed["mamba_scan"]["ours"]["reps"] == 2 and printed["meta"]["command"].endswith("reps=2")
    assert printed["meta"]["matmul_peak"] is None  # no train-step entry: no roofline
