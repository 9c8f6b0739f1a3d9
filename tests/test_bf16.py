"""bf16 on CPU: ``trainer.precision=bf16-mixed`` trains in-process through perf.CPUBf16MixedPrecision
(autocast + SDPA math backend) with fp32 master weights and a finite loss. A few seconds."""
import json
import math

import torch

from icl_hybrids import perf
from icl_hybrids.config import compose_config
from icl_hybrids.train import run


def test_bf16_mixed_cpu_training(tmp_path, monkeypatch):
    calls = {"forward_context": 0}
    real = perf.bf16_cpu_context

    def counted():  # the plugin's forward context, counted: the bf16 path really ran
        calls["forward_context"] += 1
        return real()

    monkeypatch.setattr(perf, "bf16_cpu_context", counted)
    seen = {}
    real_forward = torch.nn.Linear.forward

    def linear_forward(self, x):  # the dtype the matmuls run in under the plugin's autocast
        out = real_forward(self, x)
        seen[out.dtype] = seen.get(out.dtype, 0) + 1
        return out

    monkeypatch.setattr(torch.nn.Linear, "forward", linear_forward)
    cfg = compose_config(["experiment=smoke", f"out_root={tmp_path}", "task=linear", "model=gpt2",
                          "trainer.precision=bf16-mixed", "trainer.max_steps=10", "eval.every_n_steps=10"])
    res = run(cfg)
    assert calls["forward_context"] >= 10  # one per training step
    assert seen.get(torch.bfloat16, 0) > 0  # training matmuls ran in bf16 ...
    assert res["status"] == "finished" and res["step"] == 10
    assert math.isfinite(res["icl_score"]) and all(math.isfinite(e) for e in res["model_errors"])
    assert res["fast_paths"]["precision"] == "bf16-mixed"
    run_dir = tmp_path / "linear" / "gpt2" / "seed0"
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    # ... on fp32 master weights: every parameter and Adam moment stays float32
    assert {v.dtype for v in ckpt["state_dict"].values()} == {torch.float32}
    for state in ckpt["optimizer_states"][0]["state"].values():
        assert {v.dtype for k, v in state.items() if k != "step"} == {torch.float32}
    losses = [float(r["train/loss"]) for r in _metrics(run_dir) if r.get("train/loss")]
    assert losses and all(math.isfinite(v) for v in losses)
    json.dumps(res)


def _metrics(run_dir):
    import csv

    (path,) = run_dir.glob("logs/version_*/metrics.csv")
    with open(path) as f:
        return list(csv.DictReader(f))
