"""Loggers: W&B offline by default (no network) and online only when asked, runs named <task>/<model>/seed<k>
and grouped by sweep, per-position error tables at each evaluation; TensorBoard; several at once."""
import json
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


def test_wandb_run_named_task_model_seed_and_grouped_by_sweep(tmp_path, monkeypatch):
    import icl_hybrids.train as T

    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "linear" / "gpt2" / "seed3"
    run_dir.mkdir(parents=True)
    resolved = {"name": "gpt2", "sweep_name": "paper", "logger": {"kind": "wandb", "name": None, "group": None}}
    logger = _wandb_logger(resolved["logger"], run_dir, resolved)  # W&B init is lazy: nothing starts here
    assert logger._wandb_init["name"] == "linear/gpt2/seed3" and logger._wandb_init["group"] is None  # single run
    swept = tmp_path / "linear" / "gpt2" / "optim.lr=0.001" / "seed0"
    assert T.wandb_names(resolved, swept)[0] == "linear/gpt2/optim.lr=0.001/seed0"
    monkeypatch.setattr(T, "_in_multirun", lambda: True)
    logger = _wandb_logger(resolved["logger"], run_dir, resolved)
    assert logger._wandb_init["name"] == "linear/gpt2/seed3" and logger._wandb_init["group"] == "paper"
    given = {**resolved, "logger": {"kind": "wandb", "name": "mine", "group": "g"}}
    assert T.wandb_names(given, run_dir) == ("mine", "g")


def test_tensorboard_and_wandb_at_once_with_error_curves(tmp_path, monkeypatch):
    """logger=multi: CSV + TensorBoard event files + an offline W&B run holding a per-position error table
    at every evaluation (steps 5 and 10)."""
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = compose_config(["experiment=smoke", "task=linear", "model=gpt2", "logger=multi", f"out_root={tmp_path}",
                          "trainer.max_steps=10", "eval.every_n_steps=5"])
    assert list(cfg.logger.kind) == ["tensorboard", "wandb"]
    res = run(cfg)
    run_dir = tmp_path / "linear" / "gpt2" / "seed0"
    assert res["status"] == "finished"
    assert list(run_dir.glob("logs/version_0/metrics.csv"))
    assert list(run_dir.glob("tensorboard/version_0/events.out.tfevents.*"))
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    tables = sorted(offline.glob("files/media/table/eval/error_table_*.table.json"))
    assert len(tables) == 2, list(offline.rglob("*"))
    t = json.loads(tables[-1].read_text())
    assert t["columns"][:2] == ["context_length", "model"] and "zero" in t["columns"]
    assert [row[0] for row in t["data"]] == res["context_lengths"]
    assert [row[1] for row in t["data"]] == res["model_errors"]  # the final evaluation's curve


def test_tensorboard_alone(tmp_path):
    res = run(compose_config(["experiment=smoke", "task=linear", "model=gpt2", "logger=tensorboard",
                              f"out_root={tmp_path}", "trainer.max_steps=5"]))
    run_dir = tmp_path / "linear" / "gpt2" / "seed0"
    assert res["status"] == "finished" and list(run_dir.glob("tensorboard/version_0/events.out.tfevents.*"))
    assert not (run_dir / "wandb").exists()


def test_unknown_logger_kind_is_one_line(compose):
    import pytest

    from icl_hybrids.config import ConfigError, validate

    with pytest.raises(ConfigError, match=r"logger.kind='nope': allowed: csv, tensorboard, wandb"):
        validate(compose("logger.kind=[tensorboard,nope]"))


def test_metrics_rows_do_not_depend_on_the_progress_bar(tmp_path):
    """Without a progress bar training_step calls self.log only on the steps Lightning hands to the loggers
    (every log_every_n_steps): the CSV rows, steps and values, are those of a run that logs every
    step for its progress bar."""
    import csv

    rows = {}
    for bar in (True, False):
        out = tmp_path / f"bar{bar}"
        run(compose_config(["experiment=smoke", "task=linear", "model=gpt2", f"out_root={out}",
                            "trainer.max_steps=11", "trainer.log_every_n_steps=4", f"trainer.progress_bar={bar}"]))
        (path,) = (out / "linear" / "gpt2" / "seed0").glob("logs/version_0/metrics.csv")
        rows[bar] = [(r["step"], r["train/loss"]) for r in csv.DictReader(path.open()) if r.get("train/loss")]
    assert [s for s, _ in rows[False]] == ["3", "7"]
    assert rows[False] == rows[True]
