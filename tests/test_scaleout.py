"""Scale out and fit in: the doctor, the fast paths a run records, cluster-friendly output (one copy of each
log line, plain progress lines off a terminal), sweep directories that never collide (+ best_over=), and
weights-only trajectory checkpoints."""
from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from icl_hybrids.config import compose_config
from icl_hybrids.train import run

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}


def smoke(tmp_path, *over, task="linear", model="gpt2"):
    return compose_config(["experiment=smoke", f"task={task}", f"model={model}", f"out_root={tmp_path}", *over])


# ---- doctor -----------------------------------------------------------------------------------------------
def test_doctor(capsys):
    from icl_hybrids import doctor
    from icl_hybrids.ops import _cpu_kernel

    assert doctor.main([]) == 0
    out = capsys.readouterr().out
    for word in ("python", "torch", "lightning", "hydra", "transformers", "cpu", "cores", "cuda",
                 "mamba_cuda_kernels", "flash_attn", "cpu_mamba_kernel", "fused_adam", "torch_compile", "bf16"):
        assert word in out, word
    assert torch.__version__ in out
    assert doctor.main(["json=true"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["versions"]["torch"] == torch.__version__ and r["devices"]["cpu_cores"] == os.cpu_count()
    assert r["fast_paths"]["cpu_mamba_kernel"]["importable"] == _cpu_kernel.available()
    assert r["devices"]["cuda_available"] == torch.cuda.is_available()


# ---- fast paths recorded in results.json ------------------------------------------------------------------
def test_results_record_fast_paths(tmp_path):
    from icl_hybrids.ops import _cpu_kernel

    res = run(smoke(tmp_path, "trainer.max_steps=4", "eval.every_n_steps=4", model="standard_hybrid"))
    fp = res["fast_paths"]
    assert fp["mamba_scan"] == ("cpp" if _cpu_kernel.available() else "torch")
    assert fp["attention"] == "sdpa" and fp["adam"] == "foreach" and fp["compile"] is False
    assert fp["precision"] == "32-true"
    on_disk = json.loads((tmp_path / "linear" / "standard_hybrid" / "seed0" / "results.json").read_text())
    assert on_disk["fast_paths"] == fp
    res = run(smoke(tmp_path, "trainer.max_steps=2", "optim.fused=true", "+model.mixer.use_sdpa=false", "name=g2"))
    assert res["fast_paths"]["mamba_scan"] is None  # no Mamba mixer in GPT-2
    assert res["fast_paths"]["attention"] == "explicit" and res["fast_paths"]["adam"] == "fused"


# ---- cluster-friendly output --------------------------------------------------------------------------------
def test_progress_bar_kind():
    from lightning.pytorch.callbacks import RichProgressBar

    from icl_hybrids.callbacks import PlainProgress, progress_bar

    assert isinstance(progress_bar(tty=True), RichProgressBar)
    assert isinstance(progress_bar(tty=False), PlainProgress)


PROGRESS = re.compile(r"^step (\d+)/(\d+) \(\d+%\)  loss \S+( {2}[\d.]+ steps/s)?( {2}ETA \S+)?( {2}icl \S+)?$")


@pytest.mark.slow
def test_piped_output_one_copy_per_line_and_plain_progress(tmp_path):
    env = {**ENV, "ICL_HYBRIDS_PROGRESS_S": "0"}  # a line every step (the default is every 30 s)
    r = subprocess.run([sys.executable, "-m", "icl_hybrids", "-m", "experiment=smoke", "task=linear", "model=gpt2",
                        f"hydra.sweep.dir={tmp_path / 'sweep'}", "trainer.max_steps=12", "eval.every_n_steps=6",
                        "trainer.progress_bar=true"], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    dup = {ln: n for ln, n in collections.Counter(lines).items() if n > 1}
    assert not dup, dup
    assert not any("litlogger" in ln or "━" in ln for ln in lines)
    assert any("GPU available" in ln for ln in lines)  # Lightning's lines still come, once
    prog = [ln for ln in r.stdout.splitlines() if PROGRESS.match(ln)]
    assert len(prog) == 12, r.stdout
    assert prog[-1].startswith("step 12/12 (100%)") and "icl" in prog[-1]


# ---- sweep directories that never collide + best_over= ------------------------------------------------------
def test_variant_keys():
    from icl_hybrids.sweep import variant_keys, variant_of, variant_overrides

    groups = {"task", "model", "model/mixer", "experiment", "curriculum", "trainer"}
    args = ["task=linear,mlp", "model=gpt2,llama", "seed=0,1", "name=a,b", "optim.lr=1e-3,1e-4",
            "model/mixer=attention,mamba", "trainer.max_steps=5", "+baseline.lasso.tol=1e-6,1e-8"]
    assert variant_keys(args, groups) == ["optim.lr", "baseline.lasso.tol"]
    job = ["task=linear", "optim.lr=0.001", "+baseline.lasso.tol=1e-06", "seed=1"]
    assert variant_of(job, ["optim.lr", "baseline.lasso.tol"]) == "+baseline.lasso.tol=1e-06,optim.lr=0.001"
    assert variant_overrides(["task=linear,mlp", "model=gpt2,llama", "seed=0,1", "trainer.max_steps=5"], groups) == []


@pytest.mark.slow
def test_lr_sweep_dirs_aggregate_and_best_over(tmp_path):
    from icl_hybrids.aggregate import collect, write_tables
    from icl_hybrids.aggregate.__main__ import main as aggregate_main
    from icl_hybrids.aggregate.best import write_best
    from icl_hybrids.sweep import plan

    sweep = tmp_path / "sweep"
    args = ["experiment=smoke", "task=linear", "model=gpt2", "optim.lr=1e-3,1e-4", f"hydra.sweep.dir={sweep}",
            "trainer.max_steps=10", "eval.every_n_steps=10"]
    r = subprocess.run([sys.executable, "-m", "icl_hybrids", "-m", *args], cwd=REPO, capture_output=True, text=True,
                       env=ENV, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    dirs = {lr: sweep / "linear" / "gpt2" / f"optim.lr={lr}" / "seed0" for lr in ("0.001", "0.0001")}
    for d in dirs.values():
        res = json.loads((d / "results.json").read_text())
        assert res["status"] == "finished" and res["step"] == 10
    assert {j.run_dir for j in plan(args)} == {str(d) for d in dirs.values()}  # the plan shows the same dirs

    cells, runs, known = collect(sweep)
    assert known and sorted(c.model for c in cells) == ["gpt2[optim.lr=0.0001]", "gpt2[optim.lr=0.001]"]
    assert all(r.status == "finished" for r in runs)  # the expected grid (multirun.yaml) matches: nothing missing
    write_tables(sweep, paper=False)

    out = write_best(sweep, "optim.lr")
    (row,) = out["rows"]
    assert (row["task"], row["model"]) == ("linear", "gpt2")
    cands = row["candidates"]
    assert set(cands) == {"0.001", "0.0001"} and row["chosen"] == max(cands, key=cands.get)
    test = json.loads((dirs[row["chosen"]] / "results.json").read_text())["icl_score"]
    assert row["test_score"] == pytest.approx(test)
    val = json.loads((dirs[row["chosen"]] / "val_score.json").read_text())
    assert val["icl_score"] == pytest.approx(row["val_score"]) and val["icl_score"] != pytest.approx(test)
    assert aggregate_main([f"dir={sweep}", "best_over=optim.lr"]) == 0
    assert "| linear | gpt2 | " in out["md"].read_text()
    assert aggregate_main([f"dir={sweep}", "best_over=optim.eps"]) == 2  # not swept: one line


# ---- weights-only trajectory checkpoints ------------------------------------------------------------------
def test_step_checkpoints_weights_only_and_resumable(tmp_path, caplog):
    from icl_hybrids.lit import OPTIMIZER_DROPPED

    over = ["trainer.ckpt_every_n_steps=2", "trainer.last_ckpt_every_n_steps=2", "optim.warmup_steps=100"]
    run(smoke(tmp_path, "trainer.max_steps=4", *over))
    ck = tmp_path / "linear" / "gpt2" / "seed0" / "checkpoints"
    step, last = (torch.load(ck / n, map_location="cpu", weights_only=False) for n in ("step4.ckpt", "last.ckpt"))
    assert step["optimizer_states"] == [] and step[OPTIMIZER_DROPPED] is True
    assert last["optimizer_states"] and OPTIMIZER_DROPPED not in last
    assert step["lr_schedulers"] == last["lr_schedulers"]  # the schedule's state is kept
    assert step["global_step"] == 4 and step["curriculum"] == last["curriculum"]
    for k, v in last["state_dict"].items():
        assert torch.equal(v, step["state_dict"][k])
    assert (ck / "step4.ckpt").stat().st_size < 0.5 * (ck / "last.ckpt").stat().st_size

    (ck / "last.ckpt").unlink()  # damaged last.ckpt: the fallback is a weights-only step checkpoint
    (ck.parent / "results.json").unlink()
    with caplog.at_level("WARNING", logger="icl_hybrids"):
        res = run(smoke(tmp_path, "trainer.max_steps=6", *over))
    assert res["status"] == "finished" and res["step"] == 6
    assert "weights-only" in caplog.text and "step4.ckpt" in caplog.text
