"""Config composition for every task x model, and one-line errors for bad input."""
import subprocess
import sys

import pytest

from icl_hybrids.config import ConfigError, compose_config, group_options, validate

from .conftest import MODELS, PAPER_MODELS, TASKS


def test_groups_list_exactly_the_named_choices():
    """The package ships the paper's six tasks and its twelve models (plus Park's two hybrids)."""
    assert {"linear", "sparse_linear", "mlp", "decision_tree", "sparse_parity", "mqar"} <= set(TASKS)
    assert set(PAPER_MODELS) | {"mambaformer", "standard_hybrid"} <= set(MODELS)
    for g, must in {"model/positional": {"learned", "rope", "none", "mamba"},
                    "model/ffn": {"gelu_mlp", "swiglu", "mamba", "none"},
                    "model/norm": {"layernorm", "rmsnorm"}, "model/mixer": {"attention", "mamba"}}.items():
        assert must <= set(group_options(g)), g


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("model", MODELS)
def test_every_task_model_composes_and_validates(task, model):
    cfg = compose_config([f"task={task}", f"model={model}"])
    validate(cfg)
    assert cfg.run_dir == f"outputs/{task}/{model}/seed0"


def test_subgroup_swap_from_command_line():
    cfg = compose_config(["model=llama", "model/ffn=gelu_mlp", "model/norm=layernorm"])
    assert cfg.model.ffn._target_.endswith("GeluMLP") and cfg.model.norm._target_.endswith("LayerNorm")
    assert cfg.model.positional._target_.endswith("RotaryPositional")


BAD = [
    (["task=nope"], "task='nope': unknown task (allowed: decision_tree, linear, mlp, mqar, sparse_linear, sparse_parity"),
    (["model=gpt5"], "model='gpt5': unknown model"),
    (["model/ffn=moe"], "model/ffn='moe': unknown model/ffn (allowed: gelu_mlp, mamba, none, swiglu)"),
    (["task.n_dims=0"], "task.n_dims=0: must be an integer >= 1"),
    (["task=sparse_linear", "task.sparsity=30"], "task.sparsity=30: must be between 1 and task.n_dims=20"),
    (["task.n_points=0"], "task.n_points=0: must be an integer >= 1"),
    (["optim.lr=-0.1"], "optim.lr=-0.1: must be > 0"),
    (["trainer.max_steps=abc"], "trainer.max_steps='abc': expected int"),
    (["trainer.max_steps=1.5"], "trainer.max_steps=1.5: expected int"),
    (["curriculum.dims.end=40"], "curriculum.dims.end=40: must be between curriculum.dims.start=5 and task.n_dims=20"),
    (["curriculum.points.start=50"], "curriculum.points.start=50: must be between 1 and task.n_points=41"),
    (["model.n_head=7"], "model.n_head=7: must divide model.d_model=256"),
    (["task.baseline=magic"], "task.baseline='magic': allowed:"),
    (["resume_from=/nonexistent.ckpt"], "resume_from='/nonexistent.ckpt': checkpoint file not found"),
]


@pytest.mark.parametrize("overrides,message", BAD)
def test_bad_input_is_one_clear_error(overrides, message, tmp_path):
    from icl_hybrids.train import run

    with pytest.raises(ConfigError) as e:
        cfg = compose_config([*overrides, f"out_root={tmp_path}"])
        run(cfg)
    assert message in str(e.value)
    assert "\n" not in str(e.value)
    assert not any(tmp_path.iterdir()), "an invalid run must not write anything"


@pytest.mark.slow
def test_cli_bad_input_exit_code_no_traceback(tmp_path):
    for args, msg in ((["task=nope"], "unknown task"), (["task.n_dims=0"], "task.n_dims=0"),
                      (["not_a_key=3"], "not_a_key")):
        p = subprocess.run([sys.executable, "-m", "icl_hybrids", *args, f"out_root={tmp_path}"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert p.returncode == 2, p.stderr
        assert "Traceback" not in p.stderr and msg in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_one_source_of_defaults_the_yaml_tree():
    """The schema dataclasses carry types only: every default comes from conf/ (a key no YAML sets is a
    one-line 'missing' error, not a silent schema default); tasks keep defaults for their optional keys."""
    import dataclasses

    from omegaconf import MISSING, OmegaConf

    from icl_hybrids.config import SCHEMA

    for section, schema in SCHEMA.items():
        for f in dataclasses.fields(schema):
            if section == "task" and f.name in ("sparsity", "curriculum_points_start", "curriculum_points_inc"):
                continue
            assert f.default is MISSING, f"{section}.{f.name} has a schema default"
    cfg = compose_config(["experiment=smoke"])
    validate(cfg)
    OmegaConf.set_struct(cfg, False)
    del cfg.optim["eps"]
    with pytest.raises(ConfigError, match=r"^optim.eps: missing"):
        validate(cfg)
    assert OmegaConf.to_container(compose_config([]).optim)["warmup_steps"] == 0
