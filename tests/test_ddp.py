"""Multi-device training (docs/sweeps.md, "Multi-device training (DDP)"): the batch-sharding rule, the
trainer keys that reach Lightning, and (``slow``) real 2-process DDP runs on the CPU with gloo: no crash,
each rank its own prompts, ranks in sync, the same weights as one process drawing the same global batch,
and a resume under DDP that continues the uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from icl_hybrids.config import ConfigError, compose_config, validate
from icl_hybrids.lit import ICLModule, batch_fingerprint, rank_slice, step_seed
from icl_hybrids.train import run

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
    ENV.pop(k, None)

#: a smoke run cut to 8 steps (evaluated at 4 and 8), 64 evaluation prompts: a few seconds per process
SMALL = ["experiment=smoke", "task=linear", "model=gpt2", "trainer.max_steps=8", "eval.every_n_steps=4",
         "trainer.ckpt_every_n_steps=4", "trainer.last_ckpt_every_n_steps=4"]
#: DDP on the CPU vs one process on the same global batch, after 8 Adam steps at lr 1e-3 (weights move up to
#: 8e-3): the gradient of the mean loss is the mean of the two halves' gradients, the same up to float32
#: summation order. Measured 6.4e-8 at most (median 2e-10). The attention key biases are apart: their true
#: gradient is 0 (softmax ignores a constant per query), so theirs is float noise that Adam scales up to
#: lr-sized steps of either sign (measured 1.1e-5); they do not change any output.
WEIGHT_ATOL = 1e-6
KEY_BIAS_ATOL = 1e-4


def _module(*over) -> ICLModule:
    from omegaconf import OmegaConf

    return ICLModule(OmegaConf.to_container(compose_config(["experiment=smoke", "task=linear", *over]), resolve=True))


# ---- the sharding rule (in-process) ---------------------------------------------------------------------------
def test_one_process_draws_what_it_always_drew():
    m = _module()
    g = torch.Generator().manual_seed(0 * 1_000_003 + 7)  # the rule before DDP: (seed, step)
    old = m.task.sample(16, generator=g, n_dims=3, n_points=5)
    new = m.draw_batch(7, 3, 5)
    assert torch.equal(old.xs, new.xs) and torch.equal(old.ys, new.ys)
    assert step_seed(3, 7) == 3 * 1_000_003 + 7


def test_ranks_train_on_disjoint_shards_of_the_one_process_batch():
    m = _module()
    whole = m.draw_batch(5, 3, 5, rank=0, world=1)
    shards = [m.draw_batch(5, 3, 5, rank=r, world=4) for r in range(4)]
    assert [s.xs.shape[0] for s in shards] == [4] * 4
    assert torch.equal(torch.cat([s.xs for s in shards]), whole.xs) and torch.equal(torch.cat([s.ys for s in shards]), whole.ys)
    assert len({batch_fingerprint(s) for s in shards}) == 4
    assert rank_slice(1, 2, 16) == slice(8, 16)


def test_trainer_keys_validated(compose):
    for over, word in ((["+trainer.foo=1"], "trainer.foo=1: unknown key (allowed: accelerator,"),
                       (["trainer.devices=0"], "trainer.devices=0"), (["trainer.strategy=fsdp"], "trainer.strategy='fsdp'"),
                       (["trainer.num_nodes=0"], "trainer.num_nodes=0"),
                       (["trainer=ddp_cpu", "optim.batch_size=15"], "optim.batch_size=15: must be divisible by the world size 2"),
                       (["trainer.devices=[0,0]"], "trainer.devices=[0, 0]")):
        with pytest.raises(ConfigError, match=word.replace("(", r"\(").replace("[", r"\[")) as e:
            validate(compose("experiment=smoke", *over))
        assert "\n" not in str(e.value)
    for over in (["trainer.devices=auto"], ["trainer.devices=[0,1]"], ["trainer=ddp_cpu"], ["trainer=ddp"]):
        validate(compose("experiment=smoke", *over))  # accepted (the machine check is preflight's)


def test_machine_checks_in_preflight(compose, tmp_path):
    from icl_hybrids.preflight import preflight

    for over, word in ((["trainer.devices=[0,1]"], "trainer.devices=[0, 1]: on the CPU give a number of processes"),
                       (["trainer.devices=auto", "trainer.num_nodes=3"],
                        "optim.batch_size=16: must be divisible by the world size 3")):
        with pytest.raises(ConfigError, match=word.replace("[", r"\[")) as e:
            preflight(compose("experiment=smoke", f"out_root={tmp_path}", *over))
        assert "\n" not in str(e.value)
    assert not any(tmp_path.iterdir())


def test_runs_from_before_the_ddp_keys_still_resume(compose):
    from omegaconf import OmegaConf

    from icl_hybrids.preflight import config_diff

    new = OmegaConf.to_container(compose("experiment=smoke"), resolve=True)
    old = {**new, "trainer": {k: v for k, v in new["trainer"].items() if k not in ("strategy", "num_nodes")}}
    assert config_diff(old, new) == []  # absent = the value that trains as before
    assert config_diff(old, {**new, "trainer": {**new["trainer"], "num_nodes": 2}}) == ["trainer.num_nodes: 1 -> 2"]


def test_unknown_trainer_key_is_one_line_on_the_command_line(monkeypatch, capsys, tmp_path):
    from icl_hybrids.cli import hydra_entry

    monkeypatch.setattr(sys, "argv", ["icl_hybrids", "experiment=smoke", f"out_root={tmp_path}", "+trainer.foo=1"])
    with pytest.raises(SystemExit) as e:
        hydra_entry("config", "icl_hybrids.train:run", check="icl_hybrids.train:preflight")
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error: trainer.foo=1: unknown key") and "\n" not in err
    assert not any(tmp_path.iterdir())  # nothing written


def test_strategy_and_num_nodes_reach_lightning(tmp_path, monkeypatch):
    import lightning as L

    seen = {}

    class Stop(Exception):
        pass

    def fake_trainer(**kw):
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(L, "Trainer", fake_trainer)
    with pytest.raises(Stop):
        run(compose_config([*SMALL, f"out_root={tmp_path}", "trainer.strategy=ddp", "trainer.num_nodes=1",
                            "trainer.devices=2", "trainer.accelerator=cpu"]))
    assert seen["strategy"] == "ddp" and seen["num_nodes"] == 1 and seen["devices"] == 2


# ---- real 2-process DDP runs (gloo on the CPU) -------------------------------------------------------------------
def _cli(out_root, *over):
    p = subprocess.run([sys.executable, "-m", "icl_hybrids", *SMALL, f"out_root={out_root}", *over], env=ENV, cwd=ROOT,
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def _run_dir(out_root):
    return Path(out_root) / "linear" / "gpt2" / "seed0"


def _weights(out_root):
    return torch.load(_run_dir(out_root) / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")["state_dict"]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """One 2-process DDP run (trainer=ddp_cpu), 8 steps; its out_root."""
    root = tmp_path_factory.mktemp("ddp")
    _cli(root, "trainer=ddp_cpu")
    return root


@pytest.mark.slow
def test_ddp_run_ranks_draw_different_prompts_and_stay_in_sync(ddp_run):
    d = _run_dir(ddp_run)
    res = json.loads((d / "results.json").read_text())
    assert res["status"] == "finished" and res["step"] == 8
    data = res["data"]
    assert data["world_size"] == 2 and data["rank_batch_size"] == 8
    h0, h1 = data["first_batch_sha1"]
    assert h0 and h1 and h0 != h1  # each rank drew its own shard
    assert len(set(data["weights_sha1"])) == 1  # bitwise the same weights on both ranks
    # rank 0 wrote everything, once: no temp files, one config, one metrics log
    assert not list((d / "checkpoints").glob(".*tmp")) and (d / "config.yaml").exists()
    assert sorted(p.name for p in (d / "checkpoints").iterdir()) == ["last.ckpt", "step4.ckpt", "step8.ckpt"]
    assert len(list(d.glob("logs/version_*/metrics.csv"))) == 1


@pytest.mark.slow
def test_ddp_equals_one_process_on_the_same_global_batch(ddp_run, tmp_path):
    ref = run(compose_config([*SMALL, f"out_root={tmp_path}"]))  # one process, the same global batch of 16
    a, b = _weights(ddp_run), _weights(tmp_path)
    key_bias = {k: (a[k] - b[k]).view(3, -1)[1].abs().max().item() for k in a if k.endswith("qkv.bias")}
    rest = [(a[k] - b[k]).view(3, -1)[[0, 2]] if k in key_bias else a[k] - b[k] for k in a]
    diff = max(d.abs().max().item() for d in rest)
    print(f"max |w_ddp - w_1proc| = {diff:.3g} (key biases: {max(key_bias.values()):.3g}) over "
          f"{sum(v.numel() for v in a.values())} weights")
    assert key_bias and diff <= WEIGHT_ATOL and max(key_bias.values()) <= KEY_BIAS_ATOL
    res = json.loads((_run_dir(ddp_run) / "results.json").read_text())
    assert abs(res["icl_score"] - ref["icl_score"]) < 1e-3
    assert ref["data"]["first_batch_sha1"] != res["data"]["first_batch_sha1"][:1]  # 16 prompts vs rank 0's 8


@pytest.mark.slow
def test_ddp_resume_continues_the_uninterrupted_run(ddp_run, tmp_path):
    _cli(tmp_path, "trainer=ddp_cpu", "trainer.max_steps=4")  # "killed" after step 4: last.ckpt at 4
    assert json.loads((_run_dir(tmp_path) / "results.json").read_text())["step"] == 4
    p = _cli(tmp_path, "trainer=ddp_cpu")  # the same command with the full max_steps resumes
    res = json.loads((_run_dir(tmp_path) / "results.json").read_text())
    assert res["status"] == "finished" and res["step"] == 8 and res["data"]["first_batch_step"] == 4
    a, b = _weights(ddp_run), _weights(tmp_path)
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"max |w_resumed - w_uninterrupted| = {diff:.3g}")
    assert diff == 0.0, p.stderr[-2000:]  # bitwise, as for one process


def _long_ddp(out_root):
    """A DDP run far too long to finish, signalled once it has logged (its metrics.csv exists)."""
    args = [sys.executable, "-m", "icl_hybrids", *SMALL, f"out_root={out_root}", "trainer=ddp_cpu",
            "trainer.max_steps=100000", "trainer.last_ckpt_every_n_steps=100000", "trainer.ckpt_every_n_steps=100000",
            "eval.every_n_steps=100000"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline and not list(_run_dir(out_root).glob("logs/version_*/metrics.csv")):
        assert p.poll() is None, p.communicate()[1][-2000:]
        time.sleep(0.5)
    time.sleep(1.0)
    return p


@pytest.mark.slow
def test_ddp_sigterm_saves_last_ckpt_and_exits_143(tmp_path):
    p = _long_ddp(tmp_path)
    p.send_signal(signal.SIGTERM)  # rank 0 only: the ranks decide together to stop after the same step
    _, err = p.communicate(timeout=90)
    assert p.returncode == 143, err[-3000:]
    ck = torch.load(_run_dir(tmp_path) / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert ck["global_step"] > 0


@pytest.mark.slow
def test_a_dead_rank_fails_the_run_with_one_line(tmp_path):
    p = _long_ddp(tmp_path)
    children = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
    assert len(children) == 1  # rank 1, started by rank 0
    os.kill(int(children[0]), signal.SIGKILL)
    _, err = p.communicate(timeout=90)
    assert p.returncode == 1, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("error: DDP local rank 1 exited with status -9")
