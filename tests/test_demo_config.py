"""`make demo`'s config and the optional linear LR warmup (optim.warmup_steps): the schedule, that it is off
by default, and that a resumed run continues it exactly (Lightning checkpoints the scheduler)."""
import pytest
import torch

from icl_hybrids.config import ConfigError, compose_config, validate
from icl_hybrids.lit import ICLModule
from icl_hybrids.train import run


def smoke(tmp_path, *over):
    return compose_config(["experiment=smoke", "task=linear", "model=gpt2", f"out_root={tmp_path}", *over])


def _module(tmp_path, *over):
    from omegaconf import OmegaConf

    return ICLModule(OmegaConf.to_container(smoke(tmp_path, *over), resolve=True))


def test_demo_config_composes_and_validates():
    cfg = compose_config(["task=linear", "model=gpt2", "experiment=demo"])
    validate(cfg)
    assert cfg.task.n_dims == 3 and cfg.trainer.accelerator == "cpu" and cfg.optim.batch_size == 128
    assert 0 < cfg.optim.warmup_steps < cfg.trainer.max_steps


def test_warmup_off_by_default_returns_plain_adam(tmp_path):
    opt = _module(tmp_path).configure_optimizers()
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_warmup_schedule_is_linear_then_constant(tmp_path):
    m = _module(tmp_path, "optim.warmup_steps=4", "optim.lr=0.01")
    conf = m.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert conf["lr_scheduler"]["interval"] == "step"
    lrs = []
    for _ in range(7):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01, 0.01])


def test_negative_warmup_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="optim.warmup_steps"):
        validate(smoke(tmp_path, "optim.warmup_steps=-1"))


def _train(tmp_path, steps):
    return run(smoke(tmp_path, "optim.warmup_steps=16", f"trainer.max_steps={steps}",
                     "trainer.last_ckpt_every_n_steps=5", "trainer.ckpt_every_n_steps=5"))


def test_warmup_survives_resume(tmp_path):
    ref = _train(tmp_path / "ref", 20)
    d = tmp_path / "cut"
    _train(d, 10)  # a run stopped mid-warmup (last.ckpt at step 10 carries the scheduler), then continued
    ck = d / "linear" / "gpt2" / "seed0" / "checkpoints"
    state = torch.load(ck / "last.ckpt", weights_only=False)
    assert state["lr_schedulers"][0]["last_epoch"] == 10
    assert state["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(1e-3 * 11 / 16)
    res = _train(d, 20)
    assert res["step"] == 20 and res["model_errors"] == ref["model_errors"]  # bitwise
    a = torch.load(ck / "last.ckpt", weights_only=False)
    b = torch.load(tmp_path / "ref" / "linear" / "gpt2" / "seed0" / "checkpoints" / "last.ckpt", weights_only=False)
    assert a["lr_schedulers"] == b["lr_schedulers"]
    assert a["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(1e-3)
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
