"""Discovery and statistics: the run directories of a sweep, their state (icl_hybrids.results), the
expected grid (multirun.yaml), and task x model cells with their CIs over prompts or seeds."""
from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .. import paper as P
from ..results import run_state

# Table order: the paper's columns and rows first (icl_hybrids.paper), then anything else alphabetically.
TASKS = [*P.TABLE3["gpt2"], "mqar"]
MODELS = list(P.MODEL_IDS)


def task_label(task: str) -> str:
    """The task's own label (``Task.label``), from its config; the name when it has none."""
    from ..config import task_class

    try:
        return task_class(task).label
    except Exception:  # noqa: BLE001 - a task the package does not know (a user's): its name
        return task


# ---- loading --------------------------------------------------------------------------------------------
@dataclass
class Run:
    task: str
    model: str
    seed: int
    run_dir: Path | None = None
    results: dict | None = None
    status: str = "missing"  # finished | unfinished | diverged | failed | missing
    variant: str = ""  # a sweep's non-group keys, e.g. "optim.lr=0.001" (<task>/<name>/<variant>/seed<k>)

    @property
    def name(self) -> str:
        """The run's name without its variant (``model`` is ``name[variant]`` for a variant)."""
        return self.model.split("[", 1)[0] if self.variant else self.model

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def config(self) -> dict | None:
        """The run's config.yaml (resolved), or None."""
        if self.run_dir is None or not (self.run_dir / "config.yaml").is_file():
            return None
        from omegaconf import OmegaConf

        try:
            return OmegaConf.to_container(OmegaConf.load(self.run_dir / "config.yaml"), resolve=True)
        except Exception:  # noqa: BLE001 - a damaged config: not comparable, reported by the status
            return None

    @property
    def scored(self) -> dict | None:
        """The score this run enters the table with: against the paper's trained reference model where the
        task has one and it has been rescored (``reference.rescore``: paper_baseline.json), else results.json."""
        from ..reference import FILE

        if self.task in P.REFERENCE_MODELS and self.run_dir is not None and (self.run_dir / FILE).is_file():
            try:
                return json.loads((self.run_dir / FILE).read_text())
            except (OSError, ValueError):
                pass
        return self.results


@dataclass
class Cell:
    task: str
    model: str
    runs: list[Run] = field(default_factory=list)

    @property
    def done(self) -> list[Run]:
        return [r for r in self.runs if r.finished]

    def stats(self) -> dict:
        """Score over finished seeds: mean, prompt CI (one seed; mean of bounds for several), seed CI."""
        done = self.done
        out = {"n_seeds": len(self.runs), "n_finished": len(done), "score": None, "prompt_ci_lo": None,
               "prompt_ci_hi": None, "seed_std": None, "seed_ci_lo": None, "seed_ci_hi": None}
        scored = [r.scored for r in done]
        scores = [float(x["icl_score"]) for x in scored if _finite(x.get("icl_score"))]
        out["baseline"] = " ".join(sorted({str(x.get("baseline")) for x in scored})) or None
        if not scores:
            return out
        n = len(scores)
        mean = sum(scores) / n
        cis = [x.get("icl_score_ci95") for x in scored if x.get("icl_score_ci95")]
        out["score"] = mean
        if cis:
            out["prompt_ci_lo"] = sum(c[0] for c in cis) / len(cis)
            out["prompt_ci_hi"] = sum(c[1] for c in cis) / len(cis)
        if n >= 2:
            from scipy import stats

            sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1))
            half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
            out.update(seed_std=sd, seed_ci_lo=mean - half, seed_ci_hi=mean + half)
        return out

    def not_comparable(self) -> list[str]:
        """Why the paper's value does not apply to this cell (``paper.incomparable``); [] when it does."""
        done = self.done
        if not done:
            return ["no finished run"]
        r = done[0]
        return P.incomparable(self.task, self.model, r.config, r.scored.get("baseline"), r.results.get("step"))

    def label(self) -> str:
        """What the table says about the runs without a final score ("" when every run finished)."""
        if not self.runs:
            return "—"
        todo = [r for r in self.runs if not r.finished]
        if not todo:
            return ""
        st = {r.status for r in todo}
        if "failed" in st:
            lab = "failed"
        elif "diverged" in st:
            r = next(r for r in todo if r.status == "diverged")
            lab = f"diverged at {r.results.get('diverged_at_step', r.results.get('step', '?'))}"
        elif "unfinished" in st:
            r = max((r for r in todo if r.status == "unfinished"), key=lambda r: r.results.get("step", 0))
            lab = f"unfinished {r.results.get('step', '?')}/{r.results.get('max_steps', '?')}"
        else:
            lab = "missing"
        return lab if len(todo) == 1 and len(self.runs) == 1 else f"{len(todo)}/{len(self.runs)} {lab}"


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def run_status(run_dir: Path) -> tuple[str, dict | None]:
    return run_state(run_dir)  # the one rule (icl_hybrids.results)


_SEED_DIR = re.compile(r"^seed(\d+)$")


def cell_model(name: str, variant: str) -> str:
    """The table's model key: the run name, with its sweep variant in brackets (``gpt2[optim.lr=0.001]``)."""
    return f"{name}[{variant}]" if variant else name


def find_runs(sweep_dir: Path) -> list[Run]:
    """Every run directory under ``sweep_dir`` (<task>/<name>/seed<k>/, or <task>/<name>/<variant>/seed<k>/
    when the sweep varied non-group keys -- a variant level has an "=" in it: Hydra's override_dirname --
    with a config.yaml or results.json)."""
    runs = {}
    for p in sorted(sweep_dir.rglob("*")):
        if not (p.is_dir() and _SEED_DIR.match(p.name)) or ".submitit" in p.parts:
            continue
        if not ((p / "results.json").exists() or (p / "config.yaml").exists()):
            continue
        status, res = run_status(p)
        variant = p.parent.name if "=" in p.parent.name else ""
        up = p.parent.parent if variant else p.parent
        task, model, seed = up.parent.name, up.name, int(_SEED_DIR.match(p.name).group(1))
        if res:
            task, model, seed = res.get("task", task), res.get("model", model), int(res.get("seed", seed))
        model = cell_model(model, variant)
        runs[(task, model, seed)] = Run(task, model, seed, p, res, status, variant)
    return list(runs.values())


def expected_jobs(sweep_dir: Path) -> list[tuple[str, str, int]] | None:
    """(task, name, seed) of every job of the sweep recorded in DIR/multirun.yaml (basic sweeper only)."""
    mr_path = sweep_dir / "multirun.yaml"
    if not mr_path.exists():
        return None
    try:
        from omegaconf import OmegaConf

        from ..sweep import grid

        mr = OmegaConf.load(mr_path)
        if "BasicSweeper" not in str(mr.hydra.sweeper.get("_target_", "")):
            return None
        params = mr.hydra.sweeper.get("params") or {}
        args = [f"{k}={params[k]}" for k in params] + list(mr.hydra.overrides.task)
        jobs = grid(args)
        choices = mr.hydra.runtime.choices
        from ..sweep import variant_keys, variant_of

        vkeys = variant_keys(args, set(choices.keys()))
        name_node = OmegaConf.to_container(mr, resolve=False).get("name")
        out = []
        for ov in jobs:
            kv = dict(o.split("=", 1) for o in ov if "=" in o)
            task = kv.get("task", choices.get("task"))
            model = kv.get("model", choices.get("model"))
            name = kv.get("name")
            if name is None:
                if name_node not in ("${hydra:runtime.choices.model}", None):
                    return None  # a computed name (arch search): cannot be predicted here
                name = model
            out.append((str(task), cell_model(str(name), variant_of(ov, vkeys)), int(kv.get("seed", mr.get("seed", 0)))))
        return out
    except Exception as e:  # the grid is a convenience: never fail the table for it
        print(f"warning: could not read the sweep's job list from {mr_path}: {e}", file=sys.stderr)
        return None


def collect(sweep_dir) -> tuple[list[Cell], list[Run], bool]:
    """Cells (task x model) with their runs, the run list, and whether the expected grid was known."""
    sweep_dir = Path(sweep_dir)
    found = {(r.task, r.model, r.seed): r for r in find_runs(sweep_dir)}
    expected = expected_jobs(sweep_dir)
    runs = dict(found)
    for key in expected or []:
        runs.setdefault(key, Run(*key, variant=key[1].split("[", 1)[1][:-1] if key[1].endswith("]") else ""))
    cells: dict[tuple[str, str], Cell] = {}
    for r in sorted(runs.values(), key=lambda r: r.seed):
        cells.setdefault((r.task, r.model), Cell(r.task, r.model)).runs.append(r)
    return list(cells.values()), list(runs.values()), expected is not None


def order(items, reference):
    rank = {x: i for i, x in enumerate(reference)}
    return sorted(items, key=lambda x: (rank.get(x, len(rank)), x))


