"""Shared Hydra entry point: one-line errors for bad input (no traceback, exit 2)."""
from __future__ import annotations

import importlib
import sys

from .config import CONF_DIR, ConfigError, check_group_choices


def fail(msg: str, code: int = 2):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


def _precheck(config_name: str, overrides: list[str]) -> None:
    """Compose once before Hydra runs so unknown groups/keys become one-line errors."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    check_group_choices(overrides)
    if any(o in ("-m", "--multirun") for o in sys.argv[1:]) or any("," in o for o in overrides):
        return  # sweeps: every job is validated when it starts
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            compose(config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:
        first = str(e).strip().splitlines()[0]
        raise ConfigError(first) from None


def hydra_entry(config_name: str, target: str):
    import hydra

    overrides = [a for a in sys.argv[1:] if not a.startswith("-")]
    if "--help" not in sys.argv and "-h" not in sys.argv and "--cfg" not in sys.argv:
        try:
            _precheck(config_name, overrides)
        except ConfigError as e:
            fail(str(e))
    mod, fn = target.split(":")

    @hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")
    def _main(cfg):
        func = getattr(importlib.import_module(mod), fn)
        try:
            return func(cfg)
        except ConfigError as e:
            fail(str(e))

    _main()
