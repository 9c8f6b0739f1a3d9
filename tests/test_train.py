"""End-to-end training in-process: one smoke run per task, results.json contents, resume equality,
finished-run skip, run-directory protection."""
import json
import math

import pytest
import torch

from icl_hybrids.config import ConfigError, compose_config
from icl_hybrids.train import run

from .conftest import TASKS

REQUIRED = {"task", "model", "seed", "step", "n_params", "icl_score", "baseline", "context_lengths", "model_errors",
            "baseline_errors", "steps_per_sec", "wall_s", "device", "peak_memory_mb", "tokens_per_sec", "status"}


def smoke(tmp_path, *over):
    return compose_config(["experiment=smoke", f"out_root={tmp_path}", *over])


@pytest.mark.parametrize("task", TASKS)
def test_smoke_run_per_task(task, tmp_path):
    cfg = smoke(tmp_path, f"task={task}", "model=gpt2")
    res = run(cfg)
    run_dir = tmp_path / task / "gpt2" / "seed0"
    on_disk = json.loads((run_dir / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(res))
    assert REQUIRED <= set(on_disk), REQUIRED - set(on_disk)
    assert on_disk["status"] == "finished" and on_disk["step"] == 30 and on_disk["task"] == task
    n = cfg.task.n_points
    assert len(on_disk["model_errors"]) == n and on_disk["context_lengths"] == list(range(n))
    assert "zero" in on_disk["baseline_errors"] and on_disk["baseline"] in on_disk["baseline_errors"]
    assert all(len(v) == n for v in on_disk["baseline_errors"].values())
    assert isinstance(on_disk["icl_score"], float) and math.isfinite(on_disk["icl_score"])
    assert (run_dir / "config.yaml").exists() and (run_dir / "checkpoints" / "last.ckpt").exists()
    assert (run_dir / "checkpoints" / "step15.ckpt").exists()
    assert list(run_dir.glob("logs/version_*/metrics.csv"))


def _train(tmp_path, steps, **over):
    args = [f"trainer.max_steps={steps}", "trainer.last_ckpt_every_n_steps=5", "trainer.ckpt_every_n_steps=5",
            *[f"{k}={v}" for k, v in over.items()]]
    return run(smoke(tmp_path, "task=linear", "model=gpt2", *args))


def test_resume_equals_uninterrupted(tmp_path):
    ref = _train(tmp_path / "ref", 20)
    # a run killed after step 10: its last.ckpt (full state) at step 10, the run itself further on (12)
    # (step<k>.ckpt are weights-only trajectory checkpoints: last.ckpt is the one that resumes bitwise)
    d = tmp_path / "cut"
    _train(d, 10)
    ck = d / "linear" / "gpt2" / "seed0" / "checkpoints"
    saved = (ck / "last.ckpt").read_bytes()
    _train(d, 12)
    (ck / "last.ckpt").write_bytes(saved)
    (d / "linear" / "gpt2" / "seed0" / "results.json").unlink()
    res = _train(d, 20)
    assert res["step"] == 20
    assert res["model_errors"] == ref["model_errors"]  # bitwise: identical floats
    assert res["icl_score"] == ref["icl_score"]
    a = torch.load(ck / "last.ckpt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "ref" / "linear" / "gpt2" / "seed0" / "checkpoints" / "last.ckpt",
                   weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_finished_run_is_skipped_and_different_config_refused(tmp_path):
    first = _train(tmp_path, 10)
    again = _train(tmp_path, 10)
    assert again == first
    before = (tmp_path / "linear" / "gpt2" / "seed0" / "results.json").read_bytes()
    with pytest.raises(ConfigError, match="holds a different run"):
        _train(tmp_path, 10, **{"model.n_layer": 3})
    assert (tmp_path / "linear" / "gpt2" / "seed0" / "results.json").read_bytes() == before


def test_seed_controls_everything(tmp_path):
    a = _train(tmp_path / "a", 5, seed=1)
    b = _train(tmp_path / "b", 5, seed=1)
    c = _train(tmp_path / "c", 5, seed=2)
    assert a["model_errors"] == b["model_errors"] and a["model_errors"] != c["model_errors"]


def test_fast_path_switches_keep_the_numbers(tmp_path):
    """optim.fused (one Adam kernel) and optim.foreach=false give the same training within float tolerance."""
    ref = _train(tmp_path / "ref", 5)
    fused = _train(tmp_path / "fused", 5, **{"optim.fused": "true"})
    loop = _train(tmp_path / "loop", 5, **{"optim.foreach": "false"})
    for other in (fused, loop):
        assert max(abs(a - b) for a, b in zip(ref["model_errors"], other["model_errors"])) < 1e-4


def test_trained_checkpoint_as_baseline(tmp_path):
    """The paper scores decision trees against a trained GPT-2: task.baseline=ckpt:<path>. With the same
    seed the evaluation prompts are the same, so the baseline's errors are that run's model errors."""
    a = run(smoke(tmp_path / "a", "task=decision_tree", "model=gpt2", "trainer.max_steps=10"))
    ck = tmp_path / "a" / "decision_tree" / "gpt2" / "seed0" / "checkpoints" / "last.ckpt"
    b = run(smoke(tmp_path / "b", "task=decision_tree", "model=mamba", "trainer.max_steps=5",
                  f"task.baseline=ckpt:{ck}"))
    assert b["baseline"] == f"ckpt:{ck}"
    assert max(abs(x - y) for x, y in zip(b["baseline_errors"][f"ckpt:{ck}"], a["model_errors"])) < 1e-6
