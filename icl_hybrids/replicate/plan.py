"""The replication's plan: its claim groups (``conf/experiment/replicate_cpu_<group>.yaml``), their jobs as the
run composes them (``sweep.plan``), what each model is made of (``conf/model``), and the relative cost used to
order the runs."""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..config import CONF_DIR

PREFIX = "replicate_cpu_"
DEFAULT_ROOT = "multirun_outputs/replicate_cpu"
RUN_LOG = "replicate_run.json"
#: Groups run after all the others ("if the budget allows"): their name starts with this.
OPTIONAL = "c6_"


@dataclass
class Group:
    name: str  # experiment name (replicate_cpu_<group>)
    jobs: list  # sweep.Job
    sweep_dir: str

    @property
    def short(self) -> str:
        return self.name[len(PREFIX):]

    @property
    def task(self) -> str:
        return self.jobs[0].task

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(j.model for j in self.jobs))

    @property
    def seeds(self) -> list[int]:
        return sorted({j.seed for j in self.jobs})


def group_names(conf_dir: Path = CONF_DIR) -> list[str]:
    """The claim groups: conf/experiment/replicate_cpu_*.yaml, in file-name order (c1_…, c2_…)."""
    return sorted(p.stem for p in (Path(conf_dir) / "experiment").glob(f"{PREFIX}*.yaml"))


def load_plan(root: str | None = None, overrides: list[str] | tuple = (), only: list[str] | None = None) -> list[Group]:
    """Every group's jobs, composed as the run composes them (``sweep.plan``). ``root`` replaces the
    ``multirun_outputs/replicate_cpu`` prefix of the sweep directories; ``overrides`` go to every group."""
    from ..sweep import plan

    groups = []
    for name in group_names():
        if only and name not in only and name[len(PREFIX):] not in only:
            continue
        ov = [f"experiment={name}", *overrides]
        if root is not None:
            ov.append(f"hydra.sweep.dir={Path(root) / name[len(PREFIX):]}")
        jobs = plan(ov)
        sweep_dir = str(Path(jobs[0].run_dir).parents[2]) if jobs else ""
        groups.append(Group(name, jobs, sweep_dir))
    return groups


@lru_cache(maxsize=None)
def model_parts(model: str) -> dict:
    """What the named model is made of (conf/model/<model>.yaml composed): mixer/ffn/positional targets and
    whether it has attention / a Mamba stage anywhere."""
    from ..config import compose_config

    cfg = compose_config([f"model={model}", "task=linear"]).model
    text = json.dumps({k: str(v.get("_target_", "")) if hasattr(v, "get") else str(v)
                       for k, v in cfg.items() if k in ("mixer", "ffn", "positional")})
    return {"attention": "Attention" in text or "alternating" in text.lower(), "mamba": "Mamba" in text,
            "parts": text}


def _mamba_factor(model: str) -> float:
    try:
        return 2.0 if model_parts(model)["mamba"] else 1.0
    except Exception:  # noqa: BLE001 - an unknown model: assume the slow kind
        return 2.0


def unit_cost(jobs) -> float:
    """Relative cost of a list of jobs (for longest-first ordering): steps x batch x width x depth, x2 for
    a Mamba stage (measured: a Mamba step ~2x a GPT-2 step at the same size)."""
    return sum(j.max_steps * j.batch_size * (j.d_model / 32) * j.n_layer * _mamba_factor(j.model) for j in jobs)


def format_plan(groups: list[Group]) -> str:
    lines = []
    for g in groups:
        st = [j.status() for j in g.jobs]
        j0 = g.jobs[0]
        lines.append(f"{g.name}: task={g.task} models={len(g.models)} seeds={g.seeds} jobs={len(g.jobs)} "
                     f"steps={j0.max_steps} lr={j0.lr:g} d_model={j0.d_model} n_layer={j0.n_layer} "
                     f"batch={j0.batch_size} finished={st.count('finished')} dir={g.sweep_dir}")
        lines.append(f"    models: {' '.join(g.models)}")
    return "\n".join(lines)

