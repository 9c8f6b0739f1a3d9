"""Evaluation CLI (icl_hybrids.evaluate): own task, cross-task, trajectories, Garg et al.'s shifts, prompt
dumps, figures and one-line errors. One smoke checkpoint is trained in-process for the whole module."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from icl_hybrids.config import compose_config
from icl_hybrids.evaluate import main
from icl_hybrids.lit import build_task
from icl_hybrids.shifts import SHIFTS, EvalSet, make_eval_set, parse_shift, random_transform

from .conftest import TASKS  # noqa: E402  (derived from conf/)


@pytest.fixture(scope="module")
def run_dir(tiny_run):
    return tiny_run  # conftest: one smoke run (sparse linear, GPT-2) shared by the session


def smoke_task(name, *over):
    return build_task(compose_config([f"task={name}", "experiment=smoke", *over]).task)


def read(p):
    return json.loads(p.read_text())


def test_own_task_reproduces_training_results(run_dir):
    assert main([f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}"]) == 0
    res, train = read(run_dir / "eval" / "results_eval.json"), read(run_dir / "results.json")
    assert res["icl_score"] == train["icl_score"] and res["model_errors"] == train["model_errors"]
    for k in ("icl_score_ci95", "model_errors_ci99", "baseline_errors", "baseline_errors_ci99", "baseline",
              "context_lengths", "score_positions", "n_prompts", "task", "model", "step"):
        assert res[k] == train[k], k
    for f in ("error_curves.png", "error_curves.csv"):
        assert (run_dir / "eval" / f).stat().st_size > 0


def test_cross_task(run_dir, tmp_path):
    assert main([f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}", "eval_task=linear", f"out={tmp_path}"]) == 0
    res = read(tmp_path / "results_eval.json")
    assert (res["task"], res["train_task"], res["baseline"]) == ("linear", "sparse_linear", "least_squares")
    assert res["task_config"]["n_dims"] == 5 and len(res["model_errors"]) == 11
    assert len(res["train_task_model_errors"]) == 11 and isinstance(res["train_task_icl_score"], float)
    assert {"zero", "least_squares", "averaging"} <= set(res["baseline_errors"])
    for f in ("cross_task.png", "cross_task.csv", "error_curves.png", "error_curves.csv"):
        assert (tmp_path / f).stat().st_size > 0


def test_trajectory(run_dir):
    assert main([f"ckpt_dir={run_dir}"]) == 0
    out = run_dir / "eval"
    traj = read(out / "trajectory.json")
    assert traj["steps"] == [15, 30]
    assert traj["icl_scores"]["30"] == read(run_dir / "results.json")["icl_score"]
    assert set(traj["model_errors"]) == {"15", "30"} and "lasso" in traj["baseline_errors"]
    for f in ("trajectory.png", "trajectory.csv", "trajectory_scores.csv"):
        assert (out / f).stat().st_size > 0
    # the cross-task trajectory (paper Fig. 5b) writes to its own folder
    assert main([f"ckpt_dir={run_dir / 'checkpoints'}", "eval_task=linear", "plot=false"]) == 0
    assert read(out / "linear" / "trajectory.json")["task"] == "linear"


@pytest.mark.parametrize("shift", ["skewed", "half_subspace", "scale_x=2", "scale_y:0.5", "noisy_y:0.5",
                                   "random_quadrants", "opposite_quadrants", "orthogonal_train_test",
                                   "overlapping_contexts"])
def test_every_shift_runs(run_dir, tmp_path, shift):
    assert main([f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}", f"eval.shift={shift}", f"out={tmp_path}",
                 "eval.n_prompts=16", "plot=false"]) == 0
    res = read(tmp_path / "results_eval.json")
    n = 5 if shift == "orthogonal_train_test" else 11  # orthogonal queries exist for i < d only
    assert res["shift"] == str(parse_shift(shift)) and len(res["model_errors"]) == n
    assert np.isfinite(res["icl_score"])


def test_shift_definitions_numerically():
    task = smoke_task("linear", "task.n_dims=6", "task.n_points=12")
    base = make_eval_set(task, 32, 7)
    zero = lambda es: (es.targets ** 2).mean(0)  # noqa: E731 - zero estimator's error per position
    # y and x scaling on the same prompts: the zero estimator's error scales by s^2
    assert torch.allclose(zero(make_eval_set(task, 32, 7, parse_shift("scale_y:2"))), 4 * zero(base))
    sx = make_eval_set(task, 32, 7, parse_shift("scale_x:3"))
    assert torch.allclose(sx.xs, 3 * base.xs) and torch.allclose(zero(sx), 9 * zero(base), rtol=1e-4)
    noisy = make_eval_set(task, 4000, 7, parse_shift("noisy_y:0.5"))
    clean = make_eval_set(task, 4000, 7)
    assert abs((noisy.ys - clean.ys).std().item() - 0.5) < 0.02
    # half subspace: every prompt's x spans the same d/2-dim subspace
    hs = make_eval_set(task, 8, 7, parse_shift("half_subspace"))
    assert all(torch.linalg.matrix_rank(x).item() == 3 for x in hs.xs)
    assert torch.linalg.matrix_rank(hs.xs.reshape(-1, 6)).item() == 3
    # skewed: Cov x = A^T A has eigenvalues ∝ 1/i^2 and trace d
    a = random_transform(1.0 / torch.arange(1, 7, dtype=torch.float64), torch.Generator().manual_seed(0)).double()
    ev = torch.linalg.eigvalsh(a.T @ a).flip(0)
    assert torch.allclose(ev / ev[0], 1.0 / torch.arange(1, 7, dtype=torch.float64) ** 2, atol=1e-5)
    assert abs(ev.sum().item() - 6) < 1e-4
    # orthogonal: query i is orthogonal to x_0..x_{i-1} and keeps ||x_i||
    ot = make_eval_set(task, 8, 7, parse_shift("orthogonal_train_test"))
    assert ot.n_points == 6
    for i in range(1, 6):
        assert (ot.xs[:, :i] @ ot.xq[:, i:i + 1].transpose(1, 2)).abs().max() < 1e-4
        assert torch.allclose(ot.xq[:, i].norm(dim=-1), ot.xs[:, i].norm(dim=-1), rtol=1e-5)
    # overlapping: query i (>= 1) is one of the earlier context points, with its label
    ov = make_eval_set(task, 8, 7, parse_shift("overlapping_contexts"))
    for i in range(1, 12):
        d = (ov.xs[:, :i] - ov.xq[:, i:i + 1]).abs().sum(-1)  # [B, i]
        j = d.argmin(1)
        assert d.min(1).values.max() == 0 and torch.equal(ov.yq[:, i], ov.ys[torch.arange(8), j])
    # quadrants: one sign pattern per prompt in the context; the opposite query is its negation
    rq = make_eval_set(task, 8, 7, parse_shift("opposite_quadrants"))
    s = rq.xs.sign()
    assert torch.equal(s, s[:, :1].expand_as(s)) and torch.equal(rq.xq, -rq.xs)


def test_per_position_prompts_equal_plain_prompts_without_a_shift(run_dir):
    """The batched per-position construction (position i scored on a prompt of length i+1) gives the plain
    predictions when the query is the context point itself (causality)."""
    from icl_hybrids.evaluate import load_checkpoint, make_baseline, model_fn

    m = load_checkpoint(str(run_dir / "checkpoints" / "last.ckpt"))
    es = make_eval_set(m.task, 8, 3)
    same = EvalSet(es.xs, es.ys, es.xs.clone(), es.ys.clone())
    f = model_fn(m.model, 8, "cpu")
    assert torch.allclose(same.predict(f), es.predict(f), atol=1e-5)
    ls = make_baseline("least_squares", m.task)
    assert torch.allclose(same.predict(ls), es.predict(ls), atol=1e-5)


@pytest.mark.parametrize("task", TASKS)
def test_dump(task, tmp_path):
    from icl_hybrids.evaluate import make_baseline

    path = tmp_path / "d.npz"
    over = []
    slow = "slow_baselines_max_prompts=16" if task == "linear" else "slow_baselines_max_prompts=0"
    assert main([f"task={task}", "experiment=smoke", f"dump={path}", "eval.n_prompts=4", slow, *over]) == 0
    z = np.load(path)
    t = smoke_task(task, *over)
    # the task declares what applies; the slow ones (_slow_ in their YAML) are skipped above the limit
    expect = [b for b in t.applicable_baselines if task == "linear" or b not in ("two_layer_nn", "decision_tree",
                                                                                   "gradient_boosting")]
    assert set(z.files) == {"xs", "ys", *[f"pred_{b}" for b in expect]}
    assert z["xs"].shape == (4, 11, 5)
    assert z["ys"].shape == ((4, 11, 5) if task == "mqar" else (4, 11))
    ref = make_eval_set(t, 4, 1000003)  # seed 0 + eval.seed_offset: the training run's prompts
    assert np.array_equal(z["xs"], ref.xs.numpy()) and np.array_equal(z["ys"], ref.ys.numpy())
    xs, ys = torch.from_numpy(z["xs"]), torch.from_numpy(z["ys"])
    for b in expect:
        direct = make_baseline(b, t)(xs, ys).float().numpy()
        assert z[f"pred_{b}"].shape == z["ys"].shape
        np.testing.assert_allclose(z[f"pred_{b}"], direct, rtol=1e-5, atol=1e-6, err_msg=b)


def test_checkpoint_baseline(run_dir, tmp_path):
    ck = run_dir / "checkpoints" / "last.ckpt"
    assert main([f"ckpt={ck}", f"eval.baselines=[ckpt:{ck}]", f"out={tmp_path}", "plot=false"]) == 0
    res = read(tmp_path / "results_eval.json")
    np.testing.assert_allclose(res["baseline_errors"][f"ckpt:{ck}"], res["model_errors"], rtol=1e-5)


def test_heatmap(tmp_path):
    from icl_hybrids.plots import heatmap

    png = heatmap({("linear", "gpt2"): 0.98, ("mlp", "gpt2"): 0.9, ("linear", "mamba"): 1.02},
                  ["linear", "mlp"], ["gpt2", "mamba"], tmp_path / "h.png", title="scores")
    assert png.stat().st_size > 0
    rows = (tmp_path / "h.csv").read_text().splitlines()
    assert rows == ["model,linear,mlp", "gpt2,0.98,0.9", "mamba,1.02,"]


@pytest.mark.parametrize("args,starts", [
    (["ckpt=/nonexistent/last.ckpt"], "error: ckpt='/nonexistent/last.ckpt': checkpoint file not found"),
    (["eval.shift=sideways"], "error: eval.shift='sideways': unknown shift (allowed: skewed"),
    (["eval_task=cubic"], "error: eval_task='cubic': unknown task (allowed: decision_tree"),
    (["bogus=1"], "error: bogus=1: unknown key (allowed: ckpt"),
    (["eval.shift=scale_x"], "error: eval.shift='scale_x': scale_x needs a factor"),
    (["task=mqar", "dump=x.npz", "eval.shift=skewed"], "error: eval.shift='skewed': not defined for task mqar"),
])
def test_bad_input_is_one_line(run_dir, capsys, args, starts):
    ck = [] if args[0].startswith(("ckpt=", "task=")) else [f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}"]
    assert main([*ck, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(starts) and err.count("\n") == 1, err


@pytest.mark.slow
def test_cli_subprocess_error():
    p = subprocess.run([sys.executable, "-m", "icl_hybrids.evaluate", "ckpt=/nonexistent.ckpt"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == ["error: ckpt='/nonexistent.ckpt': checkpoint file not found"]


def test_shift_registry_is_documented():
    doc = (__import__("pathlib").Path(__file__).parents[1] / "docs" / "evaluation.md").read_text()
    assert all(f"`{name}" in doc for name in SHIFTS)
