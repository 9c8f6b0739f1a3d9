"""A researcher's own components, from their own config directory and Python module, without touching the
package: a task (one class + one YAML), a mixer (one module + one YAML), a baseline (one class + one YAML) and
an OOD shift (one registered function), through train -> evaluate (own task and that shift) -> aggregate."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

MODULE = '''
import torch
from torch import nn

from icl_hybrids.baselines import Baseline
from icl_hybrids.shifts import EvalSet, register_shift, scalar_y
from icl_hybrids.tasks import Task


class SignTask(Task):
    """y = sign(w . x): a new function class."""
    name = "sign_linear"
    label = "Sign linear"

    def evaluate(self, xs, n_active, g):
        w = torch.randn(xs.shape[0], self.n_dims, generator=g, device=xs.device)
        return torch.sign(torch.einsum("bnd,bd->bn", xs, w))


class PrefixMeanMixer(nn.Module):
    """A causal token mixer: each position sees the running mean of a projection of the tokens so far."""

    def __init__(self, d_model):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x):  # [B, T, D]
        t = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype).view(1, -1, 1)
        return self.out_proj(self.proj(x).cumsum(1) / t)


class RunningMeanBaseline(Baseline):
    """Predicts the mean of the earlier labels (0 at position 0)."""

    def __init__(self, shrink: float = 1.0, n_dims=None):
        self.shrink = float(shrink)

    def __call__(self, xs, ys):
        c = torch.cumsum(ys, 1) - ys
        n = torch.arange(ys.shape[1], device=ys.device, dtype=ys.dtype).clamp_min(1)
        return self.shrink * c / n


@register_shift("flip_x", applies=scalar_y)
def flip_x(task, b, seed, value, device):
    from icl_hybrids.evaluation import eval_prompts

    batch = eval_prompts(task, b, seed, device=device)
    return EvalSet(-batch.xs, batch.ys)
'''


@pytest.mark.slow
def test_user_task_mixer_baseline_shift_end_to_end(tmp_path, monkeypatch):
    from icl_hybrids import config

    monkeypatch.setattr(config, "_USER_DIRS", [])  # the user directory registered below stays in this test
    mod_dir, conf = tmp_path / "pkg", tmp_path / "my_conf"
    mod_dir.mkdir()
    (mod_dir / "my_icl.py").write_text(MODULE)
    for rel, text in {
        "task/sign_linear.yaml": """
            # @package _global_
            task:
              _target_: my_icl.SignTask
              n_dims: 4
              n_points: 9
              curriculum_points_start: 9
              curriculum_points_inc: 0
              baseline: running_mean
            """,
        "model/mixer/prefix_mean.yaml": """
            _target_: my_icl.PrefixMeanMixer
            _partial_: true
            """,
        "baseline/running_mean.yaml": """
            _target_: my_icl.RunningMeanBaseline
            shrink: 1.0
            """,
    }.items():
        (conf / rel).parent.mkdir(parents=True, exist_ok=True)
        (conf / rel).write_text(textwrap.dedent(text))

    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": f"{mod_dir}{os.pathsep}{REPO}", "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "icl_hybrids", "--config-dir", str(conf), "task=sign_linear", "model=gpt2",
           "model/mixer=prefix_mean", "name=prefix_mean", "experiment=smoke", "trainer.max_steps=6",
           "eval.every_n_steps=6", "eval.n_prompts=16", "curriculum.dims.start=4", "curriculum.points.start=9",
           "baseline.running_mean.shrink=0.5", f"out_root={runs}"]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    run_dir = runs / "sign_linear" / "prefix_mean" / "seed0"
    res = json.loads((run_dir / "results.json").read_text())
    assert res["status"] == "finished" and res["task"] == "sign_linear" and res["baseline"] == "running_mean"
    assert res["task_config"]["label"] == "Sign linear"
    # a setting given on the command line reached the user's baseline (and is in the cache key)
    assert "shrink: 0.5" in (run_dir / "config.yaml").read_text()

    # evaluate in this process: the checkpoint brings its config directory; its module registers the shift
    monkeypatch.syspath_prepend(str(mod_dir))
    from icl_hybrids.evaluate import main

    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert main([f"ckpt={ckpt}", f"out={tmp_path / 'ev'}", "plot=false"]) == 0
    own = json.loads((tmp_path / "ev" / "results_eval.json").read_text())
    assert abs(own["icl_score"] - res["icl_score"]) < 1e-6  # reproduces training's score
    assert main([f"ckpt={ckpt}", "eval.shift=flip_x", f"out={tmp_path / 'ev_flip'}", "plot=false"]) == 0
    flip = json.loads((tmp_path / "ev_flip" / "results_eval.json").read_text())
    assert flip["shift"] == "flip_x" and flip["icl_score"] != own["icl_score"]

    from icl_hybrids.aggregate import write_tables

    out = write_tables(runs)
    md = out["md"].read_text()
    assert "| prefix_mean |" in md and "Sign linear" in md  # the task labels itself, from the user config dir
