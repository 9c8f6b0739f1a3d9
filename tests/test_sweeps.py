"""Sweeps: the paper sweep's plan (72 jobs, per-task hyperparameters), a real 2-job local multirun at smoke scale
(skip finished / resume unfinished on rerun), the aggregate table/CSV/PNG with a missing run, and a 2-trial
Optuna architecture search."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from icl_hybrids.sweep import ReturnObjective, format_plan, plan

REPO = Path(__file__).resolve().parents[1]
from .conftest import PAPER_MODELS, TASKS  # noqa: E402  (derived from conf/ and icl_hybrids.paper)


@pytest.fixture(scope="module")
def paper_plan():
    return plan(["experiment=paper_sweep"])


def test_paper_sweep_plan(paper_plan):
    jobs = paper_plan
    assert len(jobs) == 72
    assert {(j.task, j.model) for j in jobs} == {(t, m) for t in TASKS for m in PAPER_MODELS}
    assert {j.seed for j in jobs} == {0}
    for j in jobs:
        assert j.run_dir == f"multirun_outputs/paper/{j.task}/{j.model}/seed0"
        assert j.batch_size == 64
        if j.task == "sparse_parity":
            assert (j.lr, j.max_steps, j.curriculum, j.d_model, j.n_layer) == (4e-4, 200_000, False, 256, 12)
        elif j.task == "mqar":
            assert (j.lr, j.max_steps, j.curriculum, j.d_model, j.n_layer) == (2e-4, 500_000, False, 128, 2)
        else:
            assert (j.lr, j.max_steps, j.curriculum, j.d_model, j.n_layer) == (1e-4, 500_000, True, 256, 12), j
    lines = format_plan(jobs).splitlines()
    assert len(lines) == 73 and lines[0].split()[:3] == ["task", "model", "seed"]  # header + one line per job


def test_plan_seeds_and_narrowing():
    jobs = plan(["experiment=paper_sweep", "seeds=3", "task=linear,mqar", "model=gpt2"])
    assert [(j.task, j.seed) for j in jobs] == [("linear", 0), ("linear", 1), ("linear", 2),
                                                ("mqar", 0), ("mqar", 1), ("mqar", 2)]
    assert jobs[5].run_dir.endswith("mqar/gpt2/seed2") and jobs[5].d_model == 128


def test_cpu_sweep_plan_scales_each_task():
    from icl_hybrids.config import compose_config

    jobs = plan(["experiment=cpu_sweep", "model=gpt2,mamba"])
    assert len(jobs) == 12 and all(j.max_steps == 200 and j.d_model == 32 and j.n_layer == 2 for j in jobs)
    assert {j.run_dir for j in jobs} >= {"multirun_outputs/cpu/mqar/mamba/seed0"}
    sizes = {}
    for t in sorted(TASKS):
        cfg = compose_config(["experiment=cpu_sweep", f"task={t}", "hydra.mode=RUN"])
        sizes[t] = (cfg.task.n_dims, cfg.task.n_points, cfg.curriculum.enabled)
    assert sizes["linear"] == (5, 16, True) and sizes["sparse_parity"] == (6, 24, False)
    assert sizes["mqar"] == (5, 32, False)  # 31 key/value pairs, then the one scored query


@pytest.mark.slow
def test_plan_cli_one_line_per_job():
    r = subprocess.run([sys.executable, "-m", "icl_hybrids.sweep", "task=linear", "model=gpt2,llama,mamba"],
                       cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 3 and lines[0].split()[:6] == ["linear", "gpt2", "0", "500000", "0.0001", "on"]
    assert "task" in r.stderr and "# 3 jobs" in r.stderr
    bad = subprocess.run([sys.executable, "-m", "icl_hybrids.sweep", "model=nope"], cwd=REPO, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert bad.returncode == 2 and "unknown model" in bad.stderr


def test_return_objective_callback():
    from hydra.core.utils import JobReturn, JobStatus

    ret = JobReturn(status=JobStatus.COMPLETED, _return_value={"icl_score": 0.75, "step": 3})
    ReturnObjective().on_job_end(None, ret)
    assert ret.return_value == 0.75
    nan = JobReturn(status=JobStatus.COMPLETED, _return_value={"icl_score": None})
    ReturnObjective(nan_value=-1.0).on_job_end(None, nan)
    assert nan.return_value == -1.0


# ---- real multiruns (subprocess, basic launcher) -----------------------------------------------------------
def _multirun(*over, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    r = subprocess.run([sys.executable, "-m", "icl_hybrids", "-m", *over], cwd=REPO, capture_output=True, text=True,
                       env=env, timeout=timeout)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return r.stdout + r.stderr


@pytest.mark.slow
def test_local_multirun_skip_resume_and_aggregate(tmp_path):
    from icl_hybrids.aggregate import write_figures, write_tables

    sweep = tmp_path / "sweep"
    args = ["experiment=smoke", "task=linear", "model=gpt2,llama", f"hydra.sweep.dir={sweep}",
            "trainer.max_steps=20", "eval.every_n_steps=10"]
    _multirun(*args)
    runs = {m: sweep / "linear" / m / "seed0" for m in ("gpt2", "llama")}
    for d in runs.values():
        res = json.loads((d / "results.json").read_text())
        assert res["status"] == "finished" and res["step"] == 20
    before = {m: (d / "results.json").read_bytes() for m, d in runs.items()}

    # rerun: both finished -> skipped, nothing rewritten
    out = _multirun(*args)
    assert out.count("run already finished") == 2, out[-3000:]
    assert {m: (d / "results.json").read_bytes() for m, d in runs.items()} == before
    assert not (runs["gpt2"] / "logs" / "version_1").exists()

    # more steps: unfinished at the new max_steps -> resumed from last.ckpt (a second logger version)
    args[-2] = "trainer.max_steps=30"
    _multirun(*args)
    for d in runs.values():
        res = json.loads((d / "results.json").read_text())
        assert res["step"] == 30 and res["status"] == "finished"
        assert (d / "logs" / "version_1").is_dir()

    # aggregate: table, CSV, heatmap; then a run disappears -> marked missing
    out = write_tables(sweep)
    assert out["md"].exists() and out["csv"].exists() and out["png"].stat().st_size > 10_000
    rows = list(csv.DictReader(open(out["csv"])))
    assert [(r["model"], r["status"]) for r in rows] == [("gpt2", "finished"), ("llama", "finished")]
    # a smoke-size run is not like for like with Table 3: no paper value, the reason instead
    assert rows[0]["paper_score"] == "" and rows[0]["score"]
    assert "task.n_dims=5 (paper 20)" in rows[0]["not_comparable"] and "profile is not paper_code" in rows[0]["not_comparable"]
    md = out["md"].read_text()
    assert "| 1 | gpt2 | " in md and "paper n/c[^1]" in md and "paper 0.996" not in md and "## Hardware" in md
    import shutil

    shutil.rmtree(runs["llama"])
    out = write_tables(sweep)
    rows = {r["model"]: r for r in csv.DictReader(open(out["csv"]))}
    assert rows["llama"]["status"] == "missing" and rows["llama"]["score"] == ""
    assert "| 2 | llama | missing · paper n/c[^" in out["md"].read_text()
    figs = write_figures(sweep)
    assert [p.name for p in figs] == ["linear_errors.png"] and figs[0].stat().st_size > 10_000


@pytest.mark.slow
def test_arch_search_two_trials(tmp_path):
    from icl_hybrids.aggregate import write_tables

    sweep = tmp_path / "arch"
    out = _multirun("experiment=arch_search", f"hydra.sweep.dir={sweep}", "hydra.sweeper.n_trials=2",
                    "trainer.max_steps=10", "eval.every_n_steps=10", "eval.n_prompts=64")
    best = (sweep / "optimization_results.yaml").read_text()
    assert "best_value" in best and "model/mixer" in best, out[-3000:]
    res = list(sweep.glob("linear/*/seed0/results.json"))
    assert 1 <= len(res) <= 2
    name = res[0].parent.parent.name
    assert name.count("-") == 5 and "-L" in name and "-d" in name  # positional-mixer-ffn-norm-L<n>-d<w>
    rows = list(csv.DictReader(open(write_tables(sweep)["csv"])))
    assert len(rows) == len(res) and all(r["status"] == "finished" for r in rows)


def test_paper_comparability_rule():
    """The paper's value stands beside a cell only when task definition, baseline, profile, size and steps are
    the paper's; each mismatch is named."""
    from omegaconf import OmegaConf

    from icl_hybrids import paper as P
    from icl_hybrids.config import compose_config

    def cfg(*ov):
        return OmegaConf.to_container(compose_config(list(ov)), resolve=True)

    ok = cfg("task=linear", "model=gpt2", "model/profile=paper_code")
    assert P.incomparable("linear", "gpt2", ok, "least_squares", 500_000) == []
    assert P.incomparable("linear", "gpt2", cfg("task=linear", "model=gpt2"), "least_squares", 500_000) == [
        "profile is not paper_code"]
    assert P.incomparable("linear", "gpt2", ok, "least_squares", 1000) == ["1000 steps (paper 500000)"]
    mlp = cfg("task=mlp", "model=gpt2", "model/profile=paper_code", "task.scale=garg")
    assert P.incomparable("mlp", "gpt2", mlp, "two_layer_nn", 500_000) == ["task.scale='garg' (paper 1.0)"]
    dt = cfg("task=decision_tree", "model=mamba", "model/profile=paper_code")
    assert P.incomparable("decision_tree", "mamba", dt, "decision_tree", 500_000) == [
        "baseline decision_tree (paper: a trained gpt2)"]
    assert P.incomparable("decision_tree", "mamba", dt, "ckpt:/s/decision_tree/gpt2/seed0/checkpoints/last.ckpt",
                          500_000) == []
    assert P.incomparable("mqar", "gpt2", ok, "mqar_lookup", 500_000) == ["not in Table 3"]
    assert P.incomparable("sparse_linear", "gpt2", cfg("task=sparse_linear", "model=gpt2", "model/profile=paper_code"),
                          "lasso_exact", 500_000) == ["baseline lasso_exact (paper: lasso)"]


@pytest.mark.slow
def test_paper_sweep_rescores_against_its_trained_reference(tmp_path):
    """experiment=paper_sweep: at the end of the multirun (Hydra's on_multirun_end, after every launcher) the
    decision-tree runs are scored against the sweep's own trained GPT-2, and the table uses that score."""
    sweep = tmp_path / "paper"
    out = _multirun("experiment=paper_sweep", "task=decision_tree", "model=gpt2,llama", f"hydra.sweep.dir={sweep}",
                    "task.n_dims=4", "task.n_points=9", "task.curriculum_points_start=9", "model.d_model=16",
                    "model.n_layer=1", "model.n_head=2", "trainer.max_steps=4", "eval.every_n_steps=4",
                    "eval.n_prompts=16", "trainer.progress_bar=false", "trainer.accelerator=cpu", "optim.batch_size=8",
                    "curriculum.dims.start=4", "curriculum.points.start=9")
    assert "paper baselines: 2 run(s) rescored" in out, out[-3000:]
    ref = sweep / "decision_tree" / "gpt2" / "seed0" / "checkpoints" / "last.ckpt"
    for m in ("gpt2", "llama"):
        pb = json.loads((sweep / "decision_tree" / m / "seed0" / "paper_baseline.json").read_text())
        assert pb["baseline"] == f"ckpt:{ref}"
    cfg = (sweep / "decision_tree" / "llama" / "seed0" / "config.yaml").read_text()
    assert "mamba_outer_residual: true" in cfg  # the paper sweep builds models as the paper's code does


@pytest.mark.slow
def test_basic_launcher_runs_the_jobs_after_a_failed_one(tmp_path):
    """The first job stops on a configuration error (one line); the basic launcher still runs the second, and the
    sweep exits 1 with the line and no traceback."""
    sweep = tmp_path / "sweep"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    r = subprocess.run([sys.executable, "-m", "icl_hybrids", "-m", "experiment=smoke", "task=linear", "model=gpt2",
                        "model.n_head=3,2", f"hydra.sweep.dir={sweep}", "trainer.max_steps=4",
                        "eval.every_n_steps=4", "eval.n_prompts=16"],
                       cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out[-4000:]
    assert "Traceback" not in out and out.count("must divide") >= 1, out[-4000:]
    (done,) = sweep.glob("linear/gpt2/*/seed0/results.json")
    assert "n_head=2" in str(done) and json.loads(done.read_text())["status"] == "finished"
