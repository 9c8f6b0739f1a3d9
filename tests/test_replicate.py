"""The CPU-scale replication (icl_hybrids/replicate/): its plan (from conf/experiment/replicate_cpu_*.yaml),
the scores and verdict rules on fabricated results directories, the report, and one tiny end-to-end run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from icl_hybrids import paper as P
from icl_hybrids import replicate as R

N = 6  # context positions of the fabricated runs


def fake_run(root: Path, group: str, task: str, model: str, seed: int, score: float, baseline: str,
             others: dict[str, float] | None = None, profile: str = "cleaned", status: str = "finished") -> Path:
    """A results.json as the callback writes it, with per-position errors such that the run's score against
    ``baseline`` is ``score`` and against each of ``others`` (name -> score) the given value: the zero
    estimator errs 1 everywhere, the baseline 0, the model 1 - score; a baseline b with score s_b: 1 - score / s_b."""
    d = root / group / task / model / f"seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    errs = {"zero": [1.0] * N, baseline: [0.0] * N}
    for name, s in (others or {}).items():
        errs[name] = [1.0 - score / s] * N
    res = {"task": task, "model": model, "seed": seed, "run_dir": str(d), "task_config": {"name": task, "n_dims": 2},
           "status": status, "step": 100, "max_steps": 100, "n_params": 1000, "icl_score": score,
           "icl_score_ci95": [score - 0.01, score + 0.01], "baseline": baseline, "score_positions": list(range(N)),
           "context_lengths": list(range(N)), "model_errors": [1.0 - score] * N,
           "model_errors_ci99": [[1.0 - score - 0.1] * N, [1.0 - score + 0.1] * N], "baseline_errors": errs,
           "baseline_errors_ci99": {k: [v, v] for k, v in errs.items()}, "n_prompts": 100, "device": "cpu (1 threads)",
           "steps_per_sec": 50.0, "tokens_per_sec": 1000.0, "wall_s": 2.0, "gpu_hours": 0.0, "peak_memory_mb": 100.0,
           "score_history": [{"step": 100, "icl_score": score}]}
    (d / "results.json").write_text(json.dumps(res))
    io_init = "torch_default" if profile == "paper_code" else "gpt2"
    (d / "config.yaml").write_text(f"task:\n  n_dims: 2\n  n_points: {N}\nmodel:\n  d_model: 32\n  n_layer: 2\n  n_head: 2\n"
                                   f"  profile:\n    io_init: {io_init}\noptim:\n  lr: 0.001\n  batch_size: 64\n"
                                   f"curriculum:\n  enabled: false\n")
    return d


def cell(root, group, task, model, scores, baseline, others=None, profile="cleaned"):
    for seed, s in enumerate(scores):
        o = {k: v[seed] for k, v in (others or {}).items()}
        fake_run(root, group, task, model, seed, s, baseline, o, profile)


def verdicts(root) -> dict[str, R.Verdict]:
    return {v.claim + ("" if v.claim != "C6" else ":" + v.title): v for v in R.judge(R.collect(root))}


# ---- plan ------------------------------------------------------------------------------------------------
def test_plan_groups_come_from_the_experiment_files():
    groups = R.load_plan()
    names = [g.short for g in groups]
    assert names == sorted(names) and len(names) >= 5
    by_task = {}
    for g in groups:
        assert len({j.task for j in g.jobs}) == 1, g.name
        assert len(g.seeds) >= 3, g.name
        assert all(j.run_dir.startswith(f"multirun_outputs/replicate_cpu/{g.short}/") for j in g.jobs)
        by_task.setdefault(g.task, []).append(g)
    # C1 covers the paper's 12 architectures, the other claims have their tasks
    assert set(by_task["linear"][0].models) == set(P.MODEL_IDS)
    assert {"sparse_linear", "sparse_parity", "mqar", "decision_tree", "mlp"} <= set(by_task)
    parity = by_task["sparse_parity"][0].models
    assert any(R.model_parts(m)["mamba"] for m in parity) and any(not R.model_parts(m)["mamba"] for m in parity)
    mqar = by_task["mqar"][0].models
    assert any(not R.model_parts(m)["attention"] for m in mqar) and any(R.model_parts(m)["attention"] for m in mqar)


def test_plan_root_override(tmp_path):
    (g,) = R.load_plan(root=str(tmp_path), overrides=["model=gpt2", "seed=0"], only=["c1_linear"])
    assert [(j.model, j.seed) for j in g.jobs] == [("gpt2", 0)]
    assert g.jobs[0].run_dir == str(tmp_path / "c1_linear" / "linear" / "gpt2" / "seed0")


def test_model_parts_from_conf():
    assert R.model_parts("gpt2") == {**R.model_parts("gpt2"), "attention": True, "mamba": False}
    assert R.model_parts("mamba")["attention"] is False and R.model_parts("mamba")["mamba"] is True
    for m in ("llama_mamba_pos", "llama_mamba_ffn", "llama_mamba_pos_ffn"):
        assert R.model_parts(m)["attention"] and R.model_parts(m)["mamba"], m


# ---- scores and intervals --------------------------------------------------------------------------------
def test_score_against_other_baselines(tmp_path):
    d = fake_run(tmp_path, "g", "sparse_linear", "gpt2", 0, 0.8, "lasso", {"least_squares": 1.6})
    res = json.loads((d / "results.json").read_text())
    assert R.score_against(res, "lasso") == pytest.approx(0.8)
    assert R.score_against(res, "least_squares") == pytest.approx(1.6)
    assert R.score_against(res, "ridge") is None
    # Lasso's own score against least squares (the headroom of "beats least squares"): 1.6 / 0.8
    assert R.baseline_score(res, "lasso", "least_squares") == pytest.approx(2.0)
    assert R.baseline_score(res, "ridge", "least_squares") is None
    # recomputed from the errors (not the stored icl_score) when the baseline is not the run's own
    res["baseline"] = "other"
    assert R.score_against(res, "lasso") == pytest.approx(0.8)
    # only the scored positions count
    res["score_positions"] = [N - 1]
    res["model_errors"][0] = 99.0
    assert R.score_against(res, "lasso") == pytest.approx(0.8)


def test_intervals_and_checks():
    m, lo, hi = R.t_interval([0.9, 1.0, 1.1])
    assert m == pytest.approx(1.0) and lo == pytest.approx(1.0 - 4.302653 * 0.1 / 3 ** 0.5, rel=1e-5) and hi > 1.2
    assert R.t_interval([1.0]) is None
    assert R.above((0.95, 0.91, 0.99), 0.9) == "yes"
    assert R.above((0.5, 0.3, 0.89), 0.9) == "no"
    assert R.above((0.9, 0.8, 1.0), 0.9) == "unclear"
    assert R.above(None, 0.9) == "unclear"
    assert R.above((1.0, 1.0, 1.0), 1.0, strict=True) == "no"
    assert R.below((0.1, 0.0, 0.2), 0.5) == "yes" and R.below((0.9, 0.6, 1.0), 0.5) == "no"
    d, lo, hi = R.welch_interval([1.0, 1.1, 0.9], [0.0, 0.1, -0.1])
    assert d == pytest.approx(1.0) and lo < 1.0 < hi and lo > 0.5
    assert R.combine(["yes", "yes"]) == "replicated"
    assert R.combine(["yes", "unclear"]) == "inconclusive at this scale"
    assert R.combine(["yes", "unclear", "no"]) == "not replicated"
    assert R.combine([]) == "inconclusive at this scale"


# ---- verdicts on fabricated directories ------------------------------------------------------------------
GOOD = [0.97, 0.98, 0.99]


def test_verdicts_replicated(tmp_path):
    for m in P.MODEL_IDS:
        cell(tmp_path, "c1_linear", "linear", m, GOOD, "least_squares")
    for m in ("gpt2", "llama", "mamba", "gpt2_rms_swiglu"):
        sl = [0.5, 0.52, 0.54] if m == "gpt2_rms_swiglu" else GOOD
        cell(tmp_path, "c2_sparse_linear", "sparse_linear", m, sl, "lasso", {"least_squares": [1.3, 1.35, 1.4]})
    for m in ("gpt2", "llama"):
        cell(tmp_path, "c3_sparse_parity", "sparse_parity", m, [0.01, 0.02, 0.03], "sparse_parity_bayes")
    for m in ("mamba", "llama_mamba_pos", "llama_mamba_ffn", "llama_mamba_pos_ffn"):
        cell(tmp_path, "c3_sparse_parity", "sparse_parity", m, GOOD, "sparse_parity_bayes")
    for m in ("gpt2", "llama"):
        cell(tmp_path, "c4_mqar", "mqar", m, GOOD, "mqar_lookup")
    cell(tmp_path, "c4_mqar", "mqar", "mamba", [0.4, 0.5, 0.45], "mqar_lookup")
    for m in ("gpt2", "llama", "mamba", "gpt2_rms"):
        dt = [0.1, 0.12, 0.14] if m == "gpt2_rms" else GOOD
        cell(tmp_path, "c5_decision_tree", "decision_tree", m, dt, "decision_tree")
        cell(tmp_path, "c5_mlp", "mlp", m, [1.01, 1.02, 1.03], "two_layer_nn")
    v = verdicts(tmp_path)
    for c in ("C1", "C2", "C3", "C4", "C5"):
        assert v[c].verdict == "replicated", (c, [(x.what, x.outcome, x.numbers) for x in v[c].checks])
    assert len(v["C1"].checks) == 12
    # the paper's outliers are left out of C2/C5 and judged in C6 (vs gpt2, same profile)
    assert "Headroom" in v["C2"].note and "gpt2_rms_swiglu" in v["C2"].note
    assert not any("gpt2_rms_swiglu" in x.what for x in v["C2"].checks)
    assert "gpt2_rms on decision_tree" in v["C5"].note
    assert "mamba on decision_tree" in v["C5"].note  # 0.832 in Table 3
    c6 = [x for k, x in v.items() if k.startswith("C6")]
    assert {x.verdict for x in c6} == {"replicated"} and len(c6) == 2  # cleaned only: no paper_code cells

    doc = R.report(tmp_path, tmp_path / "docs" / "replication.md", tmp_path / "docs" / "replication")
    text = doc.read_text()
    assert "| C1 |" in text and "**replicated**" in text and "not replicated" not in text.split("## Verdicts")[1].split("###")[0]
    assert f"NEAR={R.NEAR}" in text and "95% t-interval" in text
    assert "0.970, 0.980, 0.990" in text  # per-seed scores in the cell table
    pilots = text.split("How each size was chosen")[1].split("## Verdict rules")[0]
    assert "- **c1_linear**: C1" in pilots and "Pilots" in pilots  # the group YAML's header comment
    assert (tmp_path / "docs" / "replication" / "c1_linear.png").stat().st_size > 1000
    assert "](replication/c1_linear.png)" in text
    vj = json.loads((tmp_path / "docs" / "replication" / "verdicts.json").read_text())
    assert {x["claim"] for x in vj} >= {"C1", "C2", "C3", "C4", "C5", "C6"}


def test_verdicts_not_replicated_and_inconclusive(tmp_path):
    for m in P.MODEL_IDS:
        scores = {"mamba": [0.3, 0.32, 0.31], "llama": [0.5, 0.99, 1.2]}.get(m, GOOD)
        cell(tmp_path, "c1_linear", "linear", m, scores, "least_squares")
    # sparse linear: ties least squares (does not beat it)
    cell(tmp_path, "c2_sparse_linear", "sparse_linear", "gpt2", GOOD, "lasso", {"least_squares": [1.0, 1.0, 1.0]})
    # parity: GPT-2 learns too
    cell(tmp_path, "c3_sparse_parity", "sparse_parity", "gpt2", GOOD, "sparse_parity_bayes")
    cell(tmp_path, "c3_sparse_parity", "sparse_parity", "mamba", GOOD, "sparse_parity_bayes")
    # MQAR: Mamba as good as GPT-2
    cell(tmp_path, "c4_mqar", "mqar", "gpt2", GOOD, "mqar_lookup")
    cell(tmp_path, "c4_mqar", "mqar", "mamba", GOOD, "mqar_lookup")
    # paper_code outlier pair: no deficit
    cell(tmp_path, "c6_decision_tree_paper_code", "decision_tree", "gpt2", GOOD, "decision_tree", profile="paper_code")
    cell(tmp_path, "c6_decision_tree_paper_code", "decision_tree", "gpt2_rms", GOOD, "decision_tree", profile="paper_code")
    v = verdicts(tmp_path)
    assert v["C1"].verdict == "not replicated"
    out = {x.what.split()[0]: x.outcome for x in v["C1"].checks}
    assert out["mamba"] == "no" and out["llama"] == "unclear" and out["gpt2"] == "yes"
    assert v["C2"].verdict == "not replicated"
    assert v["C3"].verdict == "not replicated"
    assert v["C4"].verdict == "not replicated"
    assert v["C5"].verdict == "inconclusive at this scale"  # no cells at all
    (c6,) = [x for k, x in v.items() if k.startswith("C6")]
    assert "paper_code" in c6.title and c6.verdict == "not replicated"
    # one finished seed only: no interval, inconclusive
    for m in P.MODEL_IDS:
        for s in (1, 2):
            (tmp_path / "c1_linear" / "linear" / m / f"seed{s}" / "results.json").unlink()
    assert verdicts(tmp_path)["C1"].verdict == "inconclusive at this scale"


def test_unfinished_runs_are_not_scored(tmp_path):
    cell(tmp_path, "c1_linear", "linear", "gpt2", GOOD, "least_squares")
    fake_run(tmp_path, "c1_linear", "linear", "gpt2", 3, 0.0, "least_squares", status="running")
    (c,) = R.collect(tmp_path)["c1_linear"].values()
    assert c.expected == 4 and len(c.runs) == 3 and c.status["seed3"] == "unfinished"
    text = R.report(tmp_path, tmp_path / "r.md", tmp_path / "figs").read_text()
    assert "3/4 (seed3 unfinished)" in text


def test_report_cli_missing_dir(tmp_path, capsys):
    assert R.main(["report", f"dir={tmp_path / 'nope'}"]) == 2
    assert "no such directory" in capsys.readouterr().err


# ---- end to end: 2 real runs of a few steps, resumable, then the report -----------------------------------
@pytest.mark.slow
def test_end_to_end_tiny(tmp_path):
    root = tmp_path / "rep"
    ov = ["model=gpt2,llama", "seed=0", "trainer.max_steps=4", "eval.n_prompts=16", "eval.batch_size=16",
          "task.n_points=5", "model.d_model=16", "model.n_layer=1"]
    assert R.run(2, str(root), ov, only=["c1_linear"]) == 0
    for m in ("gpt2", "llama"):
        res = json.loads((root / "c1_linear" / "linear" / m / "seed0" / "results.json").read_text())
        assert res["status"] == "finished" and res["step"] == 4
    log = json.loads((root / R.RUN_LOG).read_text())
    assert len(log["sessions"]) == 1 and {u["model"] for u in log["sessions"][0]["units"]} == {"gpt2", "llama"}
    # rerun: everything finished, nothing started
    assert R.run(2, str(root), ov, only=["c1_linear"]) == 0
    assert json.loads((root / R.RUN_LOG).read_text())["sessions"][-1]["units"] == []
    doc = R.report(root, tmp_path / "replication.md", tmp_path / "fig")
    text = doc.read_text()
    assert "| c1_linear | gpt2 |" in text and "1/1" in text
    assert "C1" in text and "inconclusive at this scale" in text  # one seed per cell: no interval


def test_session_wall_counts_overlap_once():
    s = [{"started": "2026-01-01T07:00:00+00:00", "finished": "2026-01-01T08:00:00+00:00"},
         {"started": "2026-01-01T07:30:00+00:00", "finished": "2026-01-01T08:10:00+00:00"},
         {"started": "2026-01-01T09:00:00+00:00", "finished": "2026-01-01T09:05:00+00:00"}]
    assert R.session_wall(s) == pytest.approx((70 + 5) * 60)
    assert R.session_wall([]) == 0


def test_optional_groups_only_when_asked():
    from icl_hybrids.replicate.__main__ import parse

    _, a, _ = parse(["run"])
    assert a["only"] and not any(g.startswith(R.PREFIX + R.OPTIONAL) for g in a["only"])
    assert len(a["only"]) == len([g for g in R.group_names() if not g[len(R.PREFIX):].startswith(R.OPTIONAL)])
    assert parse(["run", "optional=true"])[1]["only"] is None  # every group
    assert parse(["plan", "only=c6_decision_tree_paper_code"])[1]["only"] == ["c6_decision_tree_paper_code"]


def test_jobs_side_by_side_counts_only_overlapping_sessions():
    t = "2026-01-01T{}:00+00:00".format
    one_after_other = [{"started": t("07:00"), "finished": t("08:00"), "n_procs": 2},
                       {"started": t("08:00"), "finished": t("08:10"), "n_procs": 2}]
    assert R.max_side_by_side(one_after_other) == 2
    overlap = [*one_after_other, {"started": t("07:30"), "finished": t("07:40"), "n_procs": 1}]
    assert R.max_side_by_side(overlap) == 3
    assert R.max_side_by_side([]) == 0
