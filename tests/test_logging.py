"""W&B works offline by default (no network) and goes online only when asked."""
import os

from icl_hybrids.config import compose_config
from icl_hybrids.train import _wandb_logger, run


def test_wandb_offline_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")  # an inherited value must not win over the config
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = compose_config(["experiment=smoke", "task=linear", "model=gpt2", "logger=wandb", f"out_root={tmp_path}",
                          "trainer.max_steps=5"])
    assert cfg.logger.offline is True
    res = run(cfg)
    run_dir = tmp_path / "linear" / "gpt2" / "seed0"
    assert res["status"] == "finished"
    offline_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert offline_runs and any(p.suffix == ".wandb" for p in offline_runs[0].iterdir())
    assert os.environ["WANDB_MODE"] in ("offline", "dryrun")  # WandbLogger spells offline "dryrun"


def test_wandb_online_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_config(["logger=wandb", "logger.offline=false", f"out_root={tmp_path}"])
    logger = _wandb_logger(dict(cfg.logger), tmp_path, {})  # W&B init is lazy: nothing is contacted here
    assert os.environ["WANDB_MODE"] == "online" and logger._offline is False
    assert (tmp_path / "wandb_id.txt").read_text().strip() == logger._id
