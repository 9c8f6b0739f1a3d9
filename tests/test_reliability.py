"""Issue 14 (reliability): non-finite guard, concurrent writers and the run lock, path escapes, umask,
resume from the newest good checkpoint, SIGTERM, one-line validation before anything is written, memory
estimate, W&B without network, and the small ones (non-ASCII paths, stray cache, partial temp files,
aggregate on odd input, sweeps without -m, unwritable out=, a corrupt checkpoint in a trajectory).

In-process where possible (``import lightning`` costs seconds per process); tiny shapes."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from icl_hybrids import aggregate, evaluate
from icl_hybrids.cli import RunFailed
from icl_hybrids.config import ConfigError, compose_config
from icl_hybrids.io import RunLock, atomic_write_bytes, atomic_write_json, file_mode
from icl_hybrids.train import preflight, run

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}


def smoke(tmp_path, *over, task="linear"):
    return compose_config(["experiment=smoke", f"out_root={tmp_path}", f"task={task}", "model=gpt2", *over])


def rd(tmp_path, task="linear", name="gpt2", seed=0):
    return tmp_path / task / name / f"seed{seed}"


def strict_load(path):
    def bad(tok):
        raise AssertionError(f"{path}: non-strict JSON token {tok}")

    return json.loads(Path(path).read_text(), parse_constant=bad)


# ---- 1. non-finite guard ---------------------------------------------------------------------------------
def test_nan_run_is_diverged_not_finished(tmp_path):
    # lr=1e3 blows up within a few steps; checkpoints every 5 steps so that some finite ones exist
    over = ["optim.lr=1e3", "trainer.max_steps=100", "trainer.ckpt_every_n_steps=5",
            "trainer.last_ckpt_every_n_steps=5", "eval.every_n_steps=5"]
    with pytest.raises(RunFailed) as ei:
        run(smoke(tmp_path, *over))
    msg = str(ei.value)
    assert "\n" not in msg and "diverged at step" in msg
    d = rd(tmp_path)
    res = strict_load(d / "results.json")  # strict JSON: no bare NaN
    assert res["status"] == "diverged" and res["icl_score"] is None
    step = res["diverged_at_step"]
    assert 0 < step < 100 and f"step {step}" in msg
    # every checkpoint left holds finite weights and none is at or after the bad step
    for p in (d / "checkpoints").glob("*.ckpt"):
        sd = torch.load(p, weights_only=False)
        assert sd["global_step"] < step
        assert all(torch.isfinite(v).all() for v in sd["state_dict"].values() if v.is_floating_point()), p
    assert not list((d / "checkpoints").glob(".*.tmp"))
    # rerunning says so instead of resuming into NaN
    with pytest.raises(RunFailed, match="diverged at step"):
        run(smoke(tmp_path, *over))
    # aggregate: diverged, not finished
    runs = aggregate.find_runs(tmp_path)
    assert [r.status for r in runs] == ["diverged"]
    cells, _, _ = aggregate.collect(tmp_path)
    assert cells[0].stats()["n_finished"] == 0 and "diverged" in cells[0].label()


def test_results_json_is_strict(tmp_path):
    atomic_write_json(tmp_path / "r.json", {"a": float("nan"), "b": [float("inf"), 1.0], "c": torch.tensor(2.5)})
    assert strict_load(tmp_path / "r.json") == {"a": None, "b": [None, 1.0], "c": 2.5}


def test_evaluate_reports_a_nan_checkpoint_as_diverged(tmp_path, capsys):
    run(smoke(tmp_path, "trainer.max_steps=2", "trainer.ckpt_every_n_steps=1"))
    ck = torch.load(rd(tmp_path) / "checkpoints" / "last.ckpt", weights_only=False)
    for v in ck["state_dict"].values():
        if v.is_floating_point():
            v.fill_(float("nan"))
    bad = tmp_path / "nan.ckpt"
    torch.save(ck, bad)
    out = tmp_path / "ev"
    assert evaluate.main([f"ckpt={bad}", f"out={out}", "plot=false"]) == 1
    assert "diverged" in capsys.readouterr().err
    assert strict_load(out / "results_eval.json")["status"] == "diverged"


def test_mqar_queries_must_fit(tmp_path):
    with pytest.raises(ConfigError):
        preflight(smoke(tmp_path, "task.n_queries=200", task="mqar"))
    assert not tmp_path.joinpath("mqar").exists()


# ---- 2. concurrent writers, lock, umask -----------------------------------------------------------------
def test_second_live_run_is_refused_and_stale_lock_taken_over(tmp_path):
    cfg = smoke(tmp_path, "trainer.max_steps=2")
    d = rd(tmp_path)
    holder = RunLock(d)
    assert holder.acquire()
    try:
        with pytest.raises(ConfigError, match="in use by another live run"):
            run(cfg)
    finally:
        holder.release()
    # a lock file left by a killed process (no flock held) is taken over
    p = subprocess.Popen([PY, "-c", "import sys; sys.path.insert(0, sys.argv[2]);"
                          "from icl_hybrids.io import RunLock; lk = RunLock(sys.argv[1]); lk.acquire(); "
                          "import time; time.sleep(60)",
                          str(d), str(ROOT)])
    for _ in range(100):
        if (d / ".lock").exists() and f"pid {p.pid} " in (d / ".lock").read_text():
            break
        time.sleep(0.05)
    assert not RunLock(d).acquire()  # held by the live child
    p.kill()
    p.wait()
    assert run(cfg)["status"] == "finished"


def test_checkpoint_temp_names_are_per_writer_and_cleaned(tmp_path, monkeypatch):
    from icl_hybrids.callbacks import AtomicCheckpoint

    seen = []

    class T:
        global_rank, is_global_zero, lightning_module = 0, True, None

        def save_checkpoint(self, path, weights_only=False):
            seen.append(Path(path).name)
            Path(path).write_bytes(b"partial")
            raise OSError(28, "No space left on device", str(path))

    with pytest.raises(OSError):
        AtomicCheckpoint(tmp_path, 1, 1).save(T(), "last.ckpt")
    assert seen and str(os.getpid()) in seen[0] and "rank0" in seen[0]
    assert list(tmp_path.iterdir()) == []  # no partial .tmp left behind


def test_atomic_writes_keep_umask_and_clean_up(tmp_path, monkeypatch):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.txt", b"x")
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644 == file_mode()
    finally:
        os.umask(old)

    def boom(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: type("F", (), {
        "__enter__": lambda s: s, "__exit__": lambda s, *a: os.close(fd), "write": lambda s, d: boom(fd, d)})())
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "b.txt", b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


# ---- 3 + 7. one-line errors before anything is written ---------------------------------------------------
BAD = ["seed=abc", "seed=-1", "seed=1.5", "optim.betas=[2.0,0.5]", "optim.eps=-1", "trainer.precision=bogus",
       "trainer.num_threads=-1", "eval.positions=[999]", "eval.batch_size=0", "name=../../escaped", "out_root="]


@pytest.mark.parametrize("bad", BAD)
def test_bad_values_are_one_line_and_write_nothing(bad, tmp_path):
    over = [f"out_root={tmp_path}", bad] if not bad.startswith("out_root") else [bad]
    cfg = compose_config(["experiment=smoke", "task=linear", "model=gpt2", *over])
    with pytest.raises(ConfigError) as ei:
        run(cfg)
    assert "\n" not in str(ei.value) and bad.split("=")[0] in str(ei.value)
    assert list(tmp_path.iterdir()) == []


def test_gpu_accelerator_without_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="no GPU"):
        run(smoke(tmp_path, "trainer.accelerator=gpu"))
    assert list(tmp_path.iterdir()) == []


def test_resume_from_a_text_file(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("hello\n")
    with pytest.raises(ConfigError, match="resume_from"):
        run(smoke(tmp_path / "o", f"resume_from={f}"))
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_cli_one_line_errors_and_nothing_written(tmp_path):
    """Through the real entry point (one process): the error is one line, exit 2, and Hydra has not
    created the run directory (validation runs before it)."""
    p = subprocess.run([PY, "-m", "icl_hybrids", "task=linear", "model=gpt2", "experiment=smoke",
                        f"out_root={tmp_path}", "trainer.precision=bogus"],
                       capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=300)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().count("\n") == 0 and "trainer.precision" in p.stderr
    assert list(tmp_path.iterdir()) == []


# ---- 5. resume from the newest good checkpoint; corrupt records ------------------------------------------
def test_resume_skips_bad_checkpoints(tmp_path, caplog):
    over = ["trainer.ckpt_every_n_steps=2", "trainer.last_ckpt_every_n_steps=2"]
    run(smoke(tmp_path, "trainer.max_steps=6", *over))
    ck = rd(tmp_path) / "checkpoints"
    (rd(tmp_path) / "results.json").unlink()
    (ck / "last.ckpt").unlink()                       # deleted last.ckpt
    (ck / "step6.ckpt").write_bytes(b"garbage")       # and the newest step checkpoint is corrupt
    from icl_hybrids.train import choose_resume

    with caplog.at_level("WARNING", logger="icl_hybrids"):
        assert choose_resume(ck) == str(ck / "step4.ckpt")
    assert "step6.ckpt" in caplog.text
    res = run(smoke(tmp_path, "trainer.max_steps=8", *over))
    assert res["status"] == "finished" and res["step"] == 8
    # all checkpoints unreadable: an error, never a silent restart from step 0
    for p in ck.glob("*.ckpt"):
        p.write_bytes(b"garbage")
    (rd(tmp_path) / "results.json").unlink()
    with pytest.raises(RunFailed, match="no checkpoint loads"):
        run(smoke(tmp_path, "trainer.max_steps=10", *over))


@pytest.mark.parametrize("which", ["results.json", "config.yaml"])
def test_corrupt_run_records_are_one_line(which, tmp_path):
    run(smoke(tmp_path, "trainer.max_steps=2"))
    f = rd(tmp_path) / which
    f.write_text("{not: [valid" if which == "config.yaml" else "{truncated")
    with pytest.raises(ConfigError) as ei:
        run(smoke(tmp_path, "trainer.max_steps=2"))
    assert str(f) in str(ei.value) and "delete it" in str(ei.value) and "\n" not in str(ei.value)


# ---- 6. SIGTERM ----------------------------------------------------------------------------------------------
def test_sigterm_saves_last_and_exits_143(tmp_path):
    """A subprocess trains slowly enough to be signalled mid-run; a rerun resumes and finishes."""
    args = [PY, "-m", "icl_hybrids", "task=linear", "model=gpt2", "experiment=smoke", f"out_root={tmp_path}",
            "trainer.max_steps=100000", "trainer.last_ckpt_every_n_steps=100000", "trainer.ckpt_every_n_steps=100000",
            "eval.every_n_steps=100000"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, cwd=tmp_path)
    log = rd(tmp_path) / "logs"
    deadline = time.time() + 240
    while time.time() < deadline and not list(log.glob("version_*/metrics.csv")):
        time.sleep(0.5)
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 143, out
    ck = torch.load(rd(tmp_path) / "checkpoints" / "last.ckpt", weights_only=False)
    assert ck["global_step"] > 0
    from icl_hybrids.train import choose_resume

    assert choose_resume(rd(tmp_path) / "checkpoints") == str(rd(tmp_path) / "checkpoints" / "last.ckpt")


# ---- 8. memory estimate ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["model.d_model=100000", "optim.batch_size=10000000"])
def test_memory_estimate_refuses(bad, tmp_path):
    with pytest.raises(ConfigError, match="needs an estimated") as ei:
        run(smoke(tmp_path, bad))
    assert "\n" not in str(ei.value)
    assert list(tmp_path.iterdir()) == []


def test_memory_estimate_small_config(tmp_path):
    from omegaconf import OmegaConf

    from icl_hybrids.lit import build_task
    from icl_hybrids.train import memory_estimate

    r = OmegaConf.to_container(smoke(tmp_path), resolve=True)
    est = memory_estimate(r, build_task(OmegaConf.create(r["task"])))
    assert 0 < est["total"] < 2**30 and est["n_params"] > 1000


# ---- 9. W&B online without a key / network ------------------------------------------------------------------
def test_wandb_online_without_key_or_network(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    cfg = smoke(tmp_path / "o", "logger=wandb", "logger.offline=false")
    with pytest.raises(ConfigError, match="no W&B API key"):
        run(cfg)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    t0 = time.time()
    with pytest.raises(ConfigError, match="cannot reach"):
        run(cfg)
    assert time.time() - t0 < 15
    assert not (tmp_path / "o").exists()


# ---- 10. the small ones ---------------------------------------------------------------------------------------
def test_cli_sweep_without_m_and_non_ascii_path():
    from icl_hybrids.cli import _check_sweep_syntax

    with pytest.raises(ConfigError, match="add -m"):
        _check_sweep_syntax(["model=gpt2,llama"], multirun=False)
    _check_sweep_syntax(["model=gpt2,llama"], multirun=True)
    _check_sweep_syntax(["optim.betas=[0.9,0.99]"], multirun=False)  # a list is not a sweep
    with pytest.raises(ConfigError) as ei:
        _check_sweep_syntax(["out_root=/tmp/résultats"], multirun=False)
    assert "\n" not in str(ei.value) and "quote" in str(ei.value)


def test_evaluate_from_elsewhere_uses_the_training_cache(tmp_path, monkeypatch):
    train_cwd, other = tmp_path / "a", tmp_path / "b"
    train_cwd.mkdir()
    other.mkdir()
    monkeypatch.chdir(train_cwd)
    run(compose_config(["experiment=smoke", "task=linear", "model=gpt2", "trainer.max_steps=2"]))
    ckpt = train_cwd / "outputs" / "smoke" / "linear" / "gpt2" / "seed0" / "checkpoints" / "last.ckpt"
    monkeypatch.chdir(other)
    assert evaluate.main([f"ckpt={ckpt}", "plot=false"]) == 0
    assert list(other.iterdir()) == []  # no stray outputs/smoke/.baseline_cache here
    assert (train_cwd / "outputs" / "smoke" / ".baseline_cache").is_dir()


def test_aggregate_odd_input(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert aggregate.main([f"dir={empty}"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    d = tmp_path / "sweep" / "linear" / "gpt2" / "seed0"
    d.mkdir(parents=True)
    (d / "results.json").write_text("[1, 2]")
    assert aggregate.main([f"dir={tmp_path / 'sweep'}"]) == 0
    assert [r.status for r in aggregate.find_runs(tmp_path / "sweep")] == ["failed"]


def test_evaluate_unwritable_out_and_corrupt_checkpoint_in_trajectory(tmp_path, capsys):
    run(smoke(tmp_path, "trainer.max_steps=4", "trainer.ckpt_every_n_steps=2"))
    ck = rd(tmp_path) / "checkpoints"
    blocker = tmp_path / "a-file"  # out= below a regular file: unwritable even as root
    blocker.write_text("")
    assert evaluate.main([f"ckpt={ck / 'last.ckpt'}", f"out={blocker / 'x'}", "plot=false"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot write") and "\n" not in err
    (ck / "step2.ckpt").write_bytes(b"garbage")
    traj = evaluate.main([f"ckpt_dir={rd(tmp_path)}", f"out={tmp_path / 'traj'}", "plot=false"])
    assert traj == 0
    assert "skipping" in capsys.readouterr().err
    assert strict_load(tmp_path / "traj" / "trajectory.json")["steps"] == [4]
