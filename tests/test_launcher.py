"""Local parallel sweeps through Hydra's joblib launcher (hydra/launcher=local, icl_hybrids.sweep.DevicePool):
the GPU assignment (pure functions, no GPU needed), the launcher config, and a real 2-job CPU sweep."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from icl_hybrids.config import CONF_DIR, ConfigError
from icl_hybrids.sweep import DevicePool, _acquire_slot, pool_device, pool_size, visible_gpus

REPO = Path(__file__).resolve().parents[1]


# ---- which GPU each worker gets -------------------------------------------------------------------------
def test_one_job_per_gpu():
    gpus = ["0", "1", "2", "3"]
    assert [pool_device(s, gpus) for s in range(4)] == gpus
    assert [pool_device(s, gpus) for s in range(4, 8)] == gpus  # more workers than GPUs: wrap round


def test_jobs_per_gpu_share_a_gpu():
    assert [pool_device(s, ["0", "1"], jobs_per_gpu=2) for s in range(4)] == ["0", "0", "1", "1"]
    assert [pool_device(s, ["0", "1"], jobs_per_gpu=3) for s in range(6)] == ["0"] * 3 + ["1"] * 3


def test_cpu_pool_and_bad_jobs_per_gpu():
    assert pool_device(0, []) is None and pool_device(5, []) is None
    with pytest.raises(ConfigError, match=r"jobs_per_gpu=0: expected an integer >= 1"):
        pool_device(0, ["0"], jobs_per_gpu=0)


def test_visible_gpus_respects_the_launching_shell():
    assert visible_gpus({}, 3) == ["0", "1", "2"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,5"}, 8) == ["2", "5"]  # a pool over the user's subset
    assert [pool_device(s, visible_gpus({"CUDA_VISIBLE_DEVICES": "2,5"}, 8)) for s in range(2)] == ["2", "5"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, 8) == []
    assert visible_gpus({}, 0) == []


def test_pool_size():
    assert pool_size(4, 1, 16) == 4 and pool_size(4, 2, 16) == 8
    assert pool_size(0, 2, 16) == 16 and pool_size(0, 1, 0) == 1


def test_slots_are_distinct_while_held(tmp_path):
    a, fa = _acquire_slot(tmp_path, 2)
    b, fb = _acquire_slot(tmp_path, 2)  # the same process opens a second file description: its own lock
    assert {a, b} == {0, 1}
    fa.close()  # a worker that ends frees its slot
    c, fc = _acquire_slot(tmp_path, 2)
    assert c == a
    fb.close()
    fc.close()


# ---- the launcher config ---------------------------------------------------------------------------------
def test_launcher_config_composes():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=smoke", "hydra/launcher=local", "hydra.launcher.n_jobs=3",
                                           "hydra.callbacks.device_pool.jobs_per_gpu=2"], return_hydra_config=True)
    assert "JoblibLauncher" in cfg.hydra.launcher._target_ and cfg.hydra.launcher.n_jobs == 3
    pool = cfg.hydra.callbacks.device_pool
    assert pool._target_ == "icl_hybrids.sweep.DevicePool" and pool.jobs_per_gpu == 2
    assert "swept_dirname" in cfg.hydra.callbacks  # conf/config.yaml's callbacks are kept


def test_pool_sizes_itself_and_gives_cpu_workers_one_thread(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cfg = OmegaConf.create({"hydra": {"launcher": {"n_jobs": -1}, "sweep": {"dir": str(tmp_path)}}})
    pool = DevicePool(gpus=[])
    pool.on_multirun_start(cfg)
    assert cfg.hydra.launcher.n_jobs == (os.cpu_count() or 1) and os.environ["OMP_NUM_THREADS"] == "1"
    cfg = OmegaConf.create({"hydra": {"launcher": {"n_jobs": -1}, "sweep": {"dir": str(tmp_path)}}})
    DevicePool(gpus=[4, 6], jobs_per_gpu=2).on_multirun_start(cfg)
    assert cfg.hydra.launcher.n_jobs == 4


# ---- a real sweep -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_job_cpu_sweep_runs_in_two_processes(tmp_path):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("OMP_NUM_THREADS", None)  # the pool sets one thread per CPU worker itself
    cmd = [sys.executable, "-m", "icl_hybrids.sweep", "run", "jobs=2", "experiment=smoke", "task=linear",
           "model=gpt2,llama", f"hydra.sweep.dir={sweep}", "trainer.max_steps=6", "eval.every_n_steps=6",
           "eval.n_prompts=16", "trainer.last_ckpt_every_n_steps=6", "trainer.ckpt_every_n_steps=6"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "hydra/launcher=local" in out and "hydra.launcher.n_jobs=2" in out

    runs = [sweep / "linear" / m / "seed0" for m in ("gpt2", "llama")]  # the basic launcher's layout
    for d in runs:
        res = json.loads((d / "results.json").read_text())
        assert res["status"] == "finished" and res["step"] == 6, d
    # each job in a worker process of its own, none in the launching process
    pids = [int(p) for p in re.findall(r"local pool: job in process (\d+), slot \d+, CPU", out)]
    assert len(pids) == 2 and len(set(pids)) == 2, out[-3000:]
    assert "CPU, 1 thread(s) each" in out
    # multirun.yaml written by Hydra itself, with the whole grid (aggregation's expected jobs)
    mr = OmegaConf.load(sweep / "multirun.yaml")
    assert "model=gpt2,llama" in list(mr.hydra.overrides.task)
    from icl_hybrids.aggregate.runs import expected_jobs

    assert len(expected_jobs(sweep)) == 2


@pytest.mark.slow
def test_a_config_error_fails_its_job_only(tmp_path):
    """A job refused by the preflight check (model.n_head=3 does not divide d_model=32) prints its one line and
    fails; the job beside it, in the other worker, finishes; the sweep exits 1 with the line, no traceback."""
    sweep = tmp_path / "sweep"
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "icl_hybrids.sweep", "run", "jobs=2", "experiment=smoke", "task=linear",
           "model=gpt2", "model.n_head=3,2", f"hydra.sweep.dir={sweep}", "trainer.max_steps=6",
           "eval.every_n_steps=6", "eval.n_prompts=16"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out[-4000:]
    assert "Traceback" not in out and "must divide" in out, out[-4000:]
    (done,) = sweep.glob("linear/gpt2/*/seed0/results.json")
    assert "n_head=2" in str(done) and json.loads(done.read_text())["status"] == "finished"
    assert not list(sweep.glob("linear/gpt2/*n_head=3*/seed0/config.yaml"))
