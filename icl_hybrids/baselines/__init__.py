"""Batched classical in-context estimators ("baselines") and their registry.

Every baseline is a callable ``est(xs, ys) -> preds`` with ``preds[:, i]`` computed only from
the context points ``0..i-1`` of the same prompt (and the query ``xs[:, i]``); position 0
predicts 0. See ``docs/baselines.md``.

A baseline is configured, not registered: ``conf/baseline/<name>.yaml`` holds its ``_target_`` class and
hyperparameters (a user's own config directory may add more), so ``task.baseline=<name>``,
``eval.baselines=[...]`` and ``baseline.<name>.<key>=<value>`` work from the command line.
"""

from __future__ import annotations

from pathlib import Path

from .base import Baseline
from .bayes import MQARLookupBaseline, SparseParityBayesBaseline
from .linear import LassoBaseline, LeastSquaresBaseline, RidgeBaseline
from .nn import TwoLayerNNBaseline
from .simple import AveragingBaseline, KNNBaseline, ZeroBaseline
from .trees import DecisionTreeBaseline, GradientBoostingBaseline


def config_dirs() -> list[Path]:
    """Where baseline configs are looked up: the directories of the active Hydra config search path (a user's
    ``--config-dir`` / ``hydra.searchpath``), the registered user directories (``config.add_config_dirs``:
    e.g. those a checkpoint was trained with), then the package's ``conf/``."""
    from .. import config

    dirs: list[Path] = []
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            for src in HydraConfig.get().runtime.config_sources:
                if src.get("schema") == "file" and src.get("path"):
                    dirs.append(Path(src["path"]))
    except Exception:  # noqa: BLE001 - outside a Hydra app: the package's conf/ only
        pass
    return list(dict.fromkeys([*dirs, *config.config_dirs()]))


def baseline_names(dirs=None) -> list[str]:
    """Every baseline configured as ``baseline/<name>.yaml`` in the config search path."""
    return sorted({p.stem for d in (dirs or config_dirs()) for p in (Path(d) / "baseline").glob("*.yaml")})


def baseline_spec(name: str, overrides=None, dirs=None) -> dict:
    """``baseline/<name>.yaml`` (``_target_`` + hyperparameters) with ``overrides`` (the run config's
    ``baseline.<name>`` node, e.g. from ``baseline.lasso.tol=1e-4``) merged on top. Keys ``_like_this_`` are
    metadata (``_target_``, ``_slow_``), not constructor arguments."""
    from omegaconf import OmegaConf

    for d in dirs or config_dirs():
        f = Path(d) / "baseline" / f"{name}.yaml"
        if f.is_file():
            spec = OmegaConf.to_container(OmegaConf.load(f), resolve=True) or {}
            break
    else:
        raise ValueError(f"unknown baseline {name!r}; allowed: {', '.join(baseline_names(dirs))} or ckpt:<path>")
    if overrides:
        unknown = sorted(k for k in set(overrides) - set(spec) if not k.startswith("_"))
        if unknown:
            raise ValueError(f"baseline.{name}.{unknown[0]}: not a setting of baseline {name!r} "
                             f"(settings: {', '.join(k for k in spec if k != '_target_') or 'none'})")
        spec.update(overrides)
    return spec


def baseline_class(name: str, dirs=None) -> type:
    """The class behind ``name``; ``ckpt:<path>`` is a trained checkpoint used as a baseline (the paper's
    GPT-2 for decision trees, Mamba for sparse parity)."""
    if name.startswith("ckpt:"):
        from .checkpoint import CheckpointBaseline

        return CheckpointBaseline
    from hydra.utils import get_class

    return get_class(baseline_spec(name, dirs=dirs)["_target_"])


def baseline_settings(name: str, overrides=None, dirs=None) -> dict:
    """The constructor keyword arguments of baseline ``name`` (its YAML's hyperparameters + overrides)."""
    if name.startswith("ckpt:"):
        return dict(overrides or {})
    return {k: v for k, v in baseline_spec(name, overrides, dirs).items() if not k.startswith("_")}


def baseline_is_slow(name: str, dirs=None) -> bool:
    """``_slow_: true`` in the YAML: seconds per prompt on a CPU (evaluate's dump mode skips it on many prompts)."""
    return not name.startswith("ckpt:") and bool(baseline_spec(name, dirs=dirs).get("_slow_", False))


def baseline_label(name: str, dirs=None) -> str:
    """How plots and tables name baseline ``name``: ``_label_`` in its YAML, else the name itself (also for
    names that are not a config, e.g. ``ckpt:<path>`` or a results file's ``ridge_alpha=0.5``)."""
    try:
        return str(baseline_spec(name, dirs=dirs).get("_label_") or name)
    except ValueError:
        return name


def get_baseline(name: str, overrides=None, dirs=None, **kwargs) -> Baseline:
    """Instantiate the baseline ``name``: its configured settings, then ``overrides``, then ``kwargs`` (task
    parameters such as ``n_dims``/``k``, or a test's explicit settings). ``ckpt:<path>`` loads a checkpoint."""
    cls = baseline_class(name, dirs)
    kw = {**baseline_settings(name, overrides, dirs), **kwargs}
    est = cls(name, **kw) if name.startswith("ckpt:") else cls(**kw)
    est.name = name
    return est


__all__ = [
    "Baseline",
    "baseline_class",
    "baseline_label",
    "baseline_is_slow",
    "baseline_names",
    "baseline_settings",
    "baseline_spec",
    "config_dirs",
    "get_baseline",
    "ZeroBaseline",
    "AveragingBaseline",
    "KNNBaseline",
    "LeastSquaresBaseline",
    "RidgeBaseline",
    "LassoBaseline",
    "TwoLayerNNBaseline",
    "DecisionTreeBaseline",
    "GradientBoostingBaseline",
    "SparseParityBayesBaseline",
    "MQARLookupBaseline",
]
