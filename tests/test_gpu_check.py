"""scripts/gpu_check.sh (the prepared GPU check) and its report (icl_hybrids/bench/gpu_check.py).

The dry run (``--dry-run``: the same steps on CPU at tiny sizes, with this python, nothing installed) is the
slow test; the report's arithmetic (goals, the 72-run projection) is checked on fabricated step outputs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from icl_hybrids import paper
from icl_hybrids.bench import gpu_check

ROOT = Path(__file__).resolve().parents[1]


def test_projection_arithmetic():
    """72 runs = 12 models x 6 tasks; 500k steps per run except sparse parity's 200k (paper.STEPS)."""
    tasks, models = gpu_check.sweep_grid(ROOT)
    assert len(tasks) * len(models) == 72 and "sparse_parity" in tasks
    rates = {m: 250.0 for m in gpu_check.BENCH_MODELS}
    p = gpu_check.projection(rates, ROOT, "test")
    per_model = sum(paper.STEPS.get(t, paper.DEFAULT_STEPS) for t in tasks)
    assert per_model == 5 * 500_000 + 200_000
    assert p["runs"] == 72 and p["total_steps"] == 12 * per_model
    assert p["gpu_hours"] == pytest.approx(12 * per_model / 250 / 3600, abs=0.1) == p["gpu_hours_at_goals"]["250_steps_per_s"]
    assert {gpu_check.family(m) for m in models} == set(gpu_check.BENCH_MODELS)
    slow = gpu_check.projection({**rates, "mamba": 125.0}, ROOT, "test")  # one model at half the rate
    assert slow["gpu_hours_by_model"]["mamba"] == pytest.approx(2 * p["gpu_hours_by_model"]["mamba"], abs=0.02)
    assert gpu_check.projection({"gpt2": 250.0}, ROOT, "test")["models_without_rate"]  # llama, mamba, hybrids


def test_report_from_fabricated_steps(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    (work / "train" / "linear" / "gpt2" / "seed0").mkdir(parents=True)
    (work / "eval").mkdir()
    (work / "steps.jsonl").write_text(
        json.dumps({"name": "bench_eager", "rc": 0, "wall_s": 12.0, "status": "ok", "note": ""}) + "\n"
        + json.dumps({"name": "train_compiled", "rc": None, "wall_s": 0, "status": "skipped", "note": "x"}) + "\n")
    bench = {"meta": {"device": "cuda", "matmul_peak": {"n": 4096, "fp32_gflops": 5e4, "bf16_gflops": 7e5}},
             "train_step.gpt2": {"steps_per_s": 200.0, "mfu": 0.1, "ours": {"min_s": 0.005}, "speedup_vs_hf": 1.2},
             "train_step_bf16.gpt2": {"steps_per_s_bf16": 400.0, "speedup": 2.0, "mfu_bf16": 0.02},
             "train_step_bf16.mamba": {"steps_per_s_bf16": 100.0, "speedup": 1.5}}
    (work / "bench_eager.json").write_text(json.dumps(bench))
    (work / "train" / "linear" / "gpt2" / "seed0" / "results.json").write_text(
        json.dumps({"status": "finished", "step": 2000, "steps_per_sec": 300.0, "wall_s": 6.7}))
    (work / "eval" / "results_eval.json").write_text(json.dumps({"icl_score": 0.9, "eval_time_s": {"total": 4.0}}))
    (work / "eval_args.json").write_text(json.dumps({"n_prompts": 1000}))
    res = gpu_check.report(work, out, "real", 480, 100.0, ROOT)
    on_disk = json.loads((out / "gpu_check.json").read_text())
    assert on_disk["goals"] == res["goals"] and (out / "gpu_check.txt").read_text().startswith("gpu_check (real)")
    goals = res["goals"]
    g250 = goals["gpt2_paper_size_b64_training_steps_per_s>=250"]
    assert g250["value"] == 300.0 and g250["pass"] is True
    assert goals["gpt2_paper_size_b64_training_steps_per_s>=500"]["pass"] is False
    assert goals["gpt2_paper_size_b64_bare_step_steps_per_s>=250"]["value"] == 400.0
    assert res["steps"]["train_compiled"]["status"] == "skipped"
    assert res["evaluate"]["prompts_per_s"] == 250.0
    # the projection: gpt2 at the training run's 300 steps/s, mamba scaled by its bf16 bench step (100 / 400)
    rates = res["projection"]["rates_steps_per_s"]
    assert rates["gpt2"] == 300.0 and rates["mamba"] == 75.0
    assert res["bench"]["models"]["gpt2"]["bf16_speedup"] == 2.0


@pytest.mark.slow
def test_dry_run(tmp_path):
    """The whole script on CPU: every step that needs no CUDA runs (tiny sizes), the rest is skipped, nothing
    is installed, and the JSON has each part."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    env.pop("OUT", None)
    p = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run", "--out", str(out)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    log = (out / "gpu_check.log").read_text() if (out / "gpu_check.log").exists() else ""
    assert p.returncode == 0, p.stderr[-3000:] + log[-5000:]
    res = json.loads((out / "gpu_check.json").read_text())
    assert res["mode"] == "dry-run" and res["device_name"]
    st = {k: v["status"] for k, v in res["steps"].items()}
    assert st == {"install": "skipped", "imports": "ok", "pytest_cuda": "ok", "bench_eager": "ok", "train": "ok",
                  "evaluate": "ok", "train_compiled": "skipped", "bench_compiled": "skipped",
                  "bench_cudagraphs": "skipped"}, log[-5000:]
    assert "install_wheels" not in log and "pip install" not in log  # the current venv is left alone
    assert res["tests"]["failures"] == res["tests"]["errors"] == 0 and res["tests"]["skipped"] == res["tests"]["tests"]
    models = res["bench"]["models"]
    assert set(models) == set(gpu_check.BENCH_MODELS)
    for m, v in models.items():
        assert v["fp32_steps_per_s"] > 0 and v["bf16_steps_per_s"] > 0 and v["fp32_mfu"] > 0, (m, v)
    assert res["bench"]["eager_meta"]["matmul_peak"]["fp32_gflops"] > 0
    assert res["train"]["status"] == "finished" and res["train"]["steps_per_sec"] > 0
    assert res["evaluate"]["n_prompts"] == 512 and res["evaluate"]["icl_score"] is not None
    assert res["projection"]["runs"] == 72 and res["projection"]["gpu_hours"] > 0
    assert len(res["goals"]) == 4 and all(isinstance(g["pass"], bool) for g in res["goals"].values())
    text = (out / "gpu_check.txt").read_text()
    assert text.startswith("gpu_check (dry-run)") and "projection:" in text
    assert sorted(x.name for x in out.iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_check.txt"]
