"""Arguments: conf/evaluate.yaml updated by key=value overrides, and the evaluation settings."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ..config import CONF_DIR, ConfigError, group_options

EVAL_KEYS = ("n_prompts", "batch_size", "baselines", "positions", "seed_offset", "shift")


# ---- arguments ---------------------------------------------------------------------------------------
def _defaults():
    return OmegaConf.load(CONF_DIR / "evaluate.yaml")


def parse_args(argv: list[str]) -> tuple[Any, list[str]]:
    """conf/evaluate.yaml updated by the key=value overrides; ``task.<k>=v`` / ``model.<k>=v`` / ``experiment=``
    overrides are returned apart (they shape a config composed from conf/config.yaml)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    cfg = _defaults()
    task_ovs: list[str] = []
    parser = OverridesParser.create()
    allowed = ", ".join([k for k in cfg if k not in ("eval", "baseline")] + [f"eval.{k}" for k in cfg.eval]
                        + ["baseline.<name>.<key>", "task.<key>", "model.<key>", "experiment"])
    for arg in argv:
        if arg.startswith("-"):
            raise ConfigError(f"{arg}: options are not supported; give key=value arguments (allowed keys: {allowed})")
        if "=" not in arg:
            raise ConfigError(f"{arg}: expected key=value (allowed keys: {allowed})")
        key, value = arg.split("=", 1)
        if key == "eval.shift" and "=" in value and not value.startswith(("'", '"')):
            value = value.replace("=", ":", 1)  # eval.shift=scale_x=2 -> scale_x:2
        # task.<key> / model.<key> / experiment shape a config composed from conf/config.yaml (dump mode,
        # eval_task, a reference checkpoint's model)
        if key.startswith(("task.", "model.")) or key == "experiment":
            if key == "experiment" and value not in group_options("experiment"):
                raise ConfigError(f"experiment={value!r}: unknown experiment (allowed: {', '.join(group_options('experiment'))})")
            task_ovs.append(f"{key}={value}")
            continue
        top, _, sub = key.partition(".")
        if top == "baseline" and sub.count(".") == 1:  # baseline.<name>.<key>: settings on top of the YAML
            try:
                OmegaConf.update(cfg, key, parser.parse_overrides([f"{key}={value}"])[0].value(), merge=False)
            except HydraException as e:
                raise ConfigError(f"{key}={value}: {str(e).strip().splitlines()[0]}") from None
            continue
        if top not in cfg or top == "baseline" or (top == "eval") != bool(sub) or (sub and sub not in cfg.eval):
            raise ConfigError(f"{key}={value}: unknown key (allowed: {allowed})")
        try:
            parsed = parser.parse_overrides([f"{key}={value}"])[0].value()
        except HydraException as e:
            raise ConfigError(f"{key}={value}: {str(e).strip().splitlines()[0]}") from None
        OmegaConf.update(cfg, key, parsed, merge=False)
    return cfg, task_ovs


def _int(key: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}={value!r}: must be an integer >= {minimum}")
    return value


def eval_settings(cli_eval, ckpt_eval: dict | None) -> dict:
    """conf/eval/default.yaml <- the checkpoint's eval section <- the command line (non-null values)."""
    s = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "eval" / "default.yaml"))
    for k in EVAL_KEYS:
        if ckpt_eval and k in ckpt_eval:
            s[k] = ckpt_eval[k]
    for k in EVAL_KEYS:
        v = cli_eval.get(k)
        if v is not None:
            s[k] = OmegaConf.to_container(v) if OmegaConf.is_config(v) else v
    s["n_prompts"] = _int("eval.n_prompts", s["n_prompts"])
    s["batch_size"] = _int("eval.batch_size", s["batch_size"])
    s["seed_offset"] = _int("eval.seed_offset", s["seed_offset"], minimum=0)
    b = s.get("baselines") or []
    if isinstance(b, str):
        b = [b]
    from ..baselines import baseline_names

    for name in b:
        if not (isinstance(name, str) and (name in baseline_names() or name.startswith("ckpt:"))):
            raise ConfigError(f"eval.baselines={name!r}: allowed: {', '.join(baseline_names())} or ckpt:<path>")
        if name.startswith("ckpt:") and not Path(name[5:]).is_file():
            raise ConfigError(f"eval.baselines={name!r}: checkpoint file not found")
    s["baselines"] = list(b)
    return s
