"""A reduced-scale replication of the findings of arXiv 2411.03945 on a 2-core CPU (``make replicate-cpu``).

    python -m icl_hybrids.replicate plan [--root DIR]                 # groups, jobs, status, cost estimate
    python -m icl_hybrids.replicate run [-j 2] [--root DIR] [--only G1,G2] [key=value ...]
    python -m icl_hybrids.replicate report DIR [--doc docs/replication.md] [--fig-dir docs/replication]

**Plan.** Every claim group is a Hydra experiment, ``conf/experiment/replicate_cpu_<group>.yaml`` (which
includes ``replicate_cpu.yaml``, the shared settings): its ``hydra.sweeper.params`` are the grid (task, models,
seeds), its body the sizes. Nothing here lists models: the jobs come from ``sweep.plan`` on each group, and
the roles a claim needs (attention-only vs Mamba-containing models, the paper's outliers) are read from the
model configs (``conf/model``) and from the paper's Table 3 (``icl_hybrids.paper``).

**Run.** Each (group, model) pair is one Hydra multirun over the group's seeds, started through the sweep
runner (``python -m icl_hybrids.sweep run -j 1 experiment=<group> model=<model>``); ``-j`` of them run side by
side (longest first), one CPU thread per job. Rerunning skips finished runs and resumes unfinished ones (the
training run's own resume); pairs whose runs are all finished are not started at all. Wall time per pair and
per session is appended to ``DIR/replicate_run.json``.

**Report.** ``report`` reads every run's ``results.json``, scores each run against the baselines a claim
needs (from the per-position errors in results.json), and decides each claim by the rules in ``RULES`` below:
a cell's interval is the 95% t-interval of its mean over seeds (Welch's interval for a difference of two
cells); a check is *yes* when the whole interval is on the claimed side of its threshold, *no* when the whole
interval is on the other side, *unclear* otherwise; a claim is **replicated** when all its checks are yes,
**not replicated** when any is no, **inconclusive at this scale** otherwise (or with fewer than 2 finished
seeds in a cell). The thresholds are fixed constants, stated in the report.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

from . import paper as P
from .config import CONF_DIR

PREFIX = "replicate_cpu_"
DEFAULT_ROOT = "multirun_outputs/replicate_cpu"
RUN_LOG = "replicate_run.json"

# ---- the verdict rules (stated verbatim in the report) ----------------------------------------------------
#: "reaches / is at or above its baseline" (linear, sparse linear vs Lasso, MLP, tree): score >= NEAR.
NEAR = 0.9
#: sparse parity "learns": score > LEARNED; "does not learn": score < LEARNED (parity is all-or-nothing:
#: a model that has not found the subset predicts ~0, score ~0; one that has, score ~1).
LEARNED = 0.5
#: MQAR "solves": score >= SOLVED (vs the exact lookup: 1 - error / error of predicting 0).
SOLVED = 0.9
#: "clearly / notably worse": the difference of the means is larger than MARGIN.
MARGIN = 0.05
#: a model "beats least squares" on sparse linear: its score against least squares is > 1 (lower error).
BEATS = 1.0
CONF = 0.95
#: The paper's named outliers (Sec. 4): GPT-2 RMS SwiGLU converges to a suboptimal scheme on sparse linear
#: (Table 3: 0.754 vs ~0.93), GPT-2 RMS fails to learn decision trees (0.114); each against GPT-2 (model 1).
OUTLIERS = {"sparse_linear": "gpt2_rms_swiglu", "decision_tree": "gpt2_rms"}
SIBLING = "gpt2"
#: Groups run after all the others ("if the budget allows"): their name starts with this.
OPTIONAL = "c6_"

RULES = {
    "C1": f"every model: score vs least squares >= {NEAR}",
    "C2": f"every model the paper has at ~1 (Table 3 >= {NEAR}): score vs least squares > {BEATS} (beats it) "
          f"and score vs Lasso >= {NEAR} (approaches it)",
    "C3": f"every Mamba-containing model: score vs Bayes-optimal > {LEARNED} (learns); every attention-only "
          f"model: score < {LEARNED} (does not learn)",
    "C4": f"every attention model: score vs exact lookup >= {SOLVED} (solves); the attention-free model(s): "
          f"mean score below each attention model's by more than {MARGIN} (clearly worse)",
    "C5": f"every model the paper has at ~1 (Table 3 >= {NEAR}): score vs the task's baseline >= {NEAR}",
    "C6": f"the outlier's mean score is below GPT-2's (same task, same profile) by more than {MARGIN}",
}


# ---- plan -------------------------------------------------------------------------------------------------
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
    from .sweep import plan

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
    from .config import compose_config

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


# ---- run --------------------------------------------------------------------------------------------------
def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} ({os.cpu_count()} cores visible)"


def _append_log(root: Path, entry: dict) -> None:
    path = root / RUN_LOG
    log = json.loads(path.read_text()) if path.exists() else {"sessions": []}
    log["sessions"].append(entry)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(log, indent=1))
    tmp.replace(path)


def run(n_procs: int = 2, root: str | None = None, overrides: list[str] | tuple = (), only: list[str] | None = None) -> int:
    """Every group's (group, model) multiruns, ``n_procs`` side by side, longest first. Returns the worst rc."""
    groups = load_plan(root, overrides, only)
    root_dir = Path(root or DEFAULT_ROOT)
    root_dir.mkdir(parents=True, exist_ok=True)
    (root_dir / "logs").mkdir(exist_ok=True)
    units = []
    for g in groups:
        for m in g.models:
            jobs = [j for j in g.jobs if j.model == m]
            if all(j.status() == "finished" for j in jobs):
                continue
            units.append((unit_cost(jobs), g, m))
    # longest first, the optional groups (OPTIONAL: the paper_code outlier pairs) after all the others
    units.sort(key=lambda u: (u[1].short.startswith(OPTIONAL), -u[0]))
    print(f"replicate: {len(units)} (group, model) multiruns to run, {n_procs} at a time; root {root_dir}", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    lock = threading.Lock()
    queue = list(units)
    done: list[dict] = []
    t0 = time.time()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                _, g, m = queue.pop(0)
            cmd = [sys.executable, "-m", "icl_hybrids.sweep", "run", "-j", "1", f"experiment={g.name}", f"model={m}",
                   *overrides]
            if root is not None:
                cmd.append(f"hydra.sweep.dir={Path(root) / g.short}")
            log = root_dir / "logs" / f"{g.short}__{m}.log"
            t = time.time()
            with open(log, "a") as fh:
                rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
            with lock:
                done.append({"group": g.short, "model": m, "rc": rc, "wall_s": round(time.time() - t, 1)})
                print(f"[{time.time() - t0:7.0f}s] {g.short} {m}: rc={rc} {time.time() - t:.0f}s "
                      f"({len(done)}/{len(units)})", flush=True)

    threads = [threading.Thread(target=worker) for _ in range(max(1, n_procs))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.time() - t0
    _append_log(root_dir, {"started": started, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                           "wall_s": round(wall, 1), "n_procs": n_procs, "machine": machine(),
                           "overrides": list(overrides), "only": list(only or []), "units": done})
    print(f"replicate: done in {wall / 60:.1f} min", flush=True)
    return max((u["rc"] for u in done), key=abs, default=0)


# ---- scores and statistics --------------------------------------------------------------------------------
def score_against(res: dict, baseline: str) -> float | None:
    """The ICL regression score of a run against any baseline in its results.json (paper eq. 1 over the
    scored positions): sum_i (e_model - e_zero) / sum_i (e_base - e_zero)."""
    if baseline == res.get("baseline") and res.get("icl_score") is not None:
        return float(res["icl_score"])
    errs = res.get("baseline_errors") or {}
    if baseline not in errs or "zero" not in errs or not res.get("model_errors"):
        return None
    k = list(res["context_lengths"])
    pos = [k.index(p) for p in (res.get("score_positions") or k) if p in k]
    m, b, z = res["model_errors"], errs[baseline], errs["zero"]
    den = sum(b[i] - z[i] for i in pos)
    return sum(m[i] - z[i] for i in pos) / den if den else None


def baseline_score(res: dict, estimator: str, baseline: str) -> float | None:
    """The ICL score an estimator of the run's results.json would get against another one (e.g. Lasso vs least squares)."""
    errs = res.get("baseline_errors") or {}
    if estimator not in errs:
        return None
    return score_against({**res, "model_errors": errs[estimator], "baseline": None}, baseline)


def t_interval(xs: list[float]) -> tuple[float, float, float] | None:
    """(mean, lo, hi): the 95% t-interval of the mean over seeds; None with fewer than 2 values."""
    from scipy import stats

    xs = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    if len(xs) < 2:
        return None
    n = len(xs)
    m = sum(xs) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    h = float(stats.t.ppf(0.5 + CONF / 2, n - 1)) * sd / math.sqrt(n)
    return m, m - h, m + h


def welch_interval(a: list[float], b: list[float]) -> tuple[float, float, float] | None:
    """(mean(a) - mean(b), lo, hi): Welch's 95% interval for the difference of two cells' means."""
    from scipy import stats

    a, b = [float(x) for x in a if x is not None], [float(x) for x in b if x is not None]
    if len(a) < 2 or len(b) < 2:
        return None
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1) / len(a)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1) / len(b)
    d = ma - mb
    se = math.sqrt(va + vb)
    if se == 0:
        return d, d, d
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    h = float(stats.t.ppf(0.5 + CONF / 2, df)) * se
    return d, d - h, d + h


def above(iv, thr: float, strict: bool = False) -> str:
    """yes: the whole interval is >= thr (> with strict); no: the whole interval is on the other side."""
    if iv is None:
        return "unclear"
    _, lo, hi = iv
    if (lo > thr) if strict else (lo >= thr):
        return "yes"
    if (hi <= thr) if strict else (hi < thr):
        return "no"
    return "unclear"


def below(iv, thr: float) -> str:
    if iv is None:
        return "unclear"
    _, lo, hi = iv
    if hi < thr:
        return "yes"
    if lo >= thr:
        return "no"
    return "unclear"


def combine(outcomes: list[str]) -> str:
    if not outcomes:
        return "inconclusive at this scale"
    if any(o == "no" for o in outcomes):
        return "not replicated"
    if all(o == "yes" for o in outcomes):
        return "replicated"
    return "inconclusive at this scale"


# ---- collecting a replication directory --------------------------------------------------------------------
@dataclass
class CellData:
    group: str
    task: str
    model: str
    profile: str
    runs: list[dict] = field(default_factory=list)  # finished results.json
    expected: int = 0
    status: dict = field(default_factory=dict)  # seed -> status

    def scores(self, baseline: str | None = None) -> list[float]:
        out = []
        for r in self.runs:
            s = score_against(r, baseline or r.get("baseline"))
            if s is not None and math.isfinite(s):
                out.append(s)
        return out

    def iv(self, baseline: str | None = None):
        return t_interval(self.scores(baseline))


def _profile(run_dir: Path) -> str:
    cfg = run_dir / "config.yaml"
    if cfg.is_file():
        try:
            from omegaconf import OmegaConf

            prof = OmegaConf.to_container(OmegaConf.load(cfg), resolve=False).get("model", {}).get("profile", {})
            # paper_code's init comes from the model's paper_code facts (hf_*/gpt2), cleaned's is gpt2 with
            # vocab_rows 0 and io_init gpt2: io_init tells them apart
            return "paper_code" if prof.get("io_init") == "torch_default" else "cleaned"
        except Exception:  # noqa: BLE001
            pass
    return "cleaned"


def collect(root) -> dict[str, dict[str, CellData]]:
    """group -> model -> CellData, from <root>/<group>/<task>/<model>/seed<k>/results.json."""
    from .aggregate import run_status

    root = Path(root)
    out: dict[str, dict[str, CellData]] = {}
    for gdir in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in ("logs",) and not p.name.startswith(".")):
        for seed_dir in sorted(gdir.glob("*/*/seed*")):
            if not seed_dir.is_dir():
                continue
            task, model = seed_dir.parent.parent.name, seed_dir.parent.name
            status, res = run_status(seed_dir)
            cell = out.setdefault(gdir.name, {}).setdefault(model, CellData(gdir.name, task, model, _profile(seed_dir)))
            cell.expected += 1
            cell.status[seed_dir.name] = status
            if status == "finished" and res:
                cell.runs.append(res)
    return out


# ---- claims ------------------------------------------------------------------------------------------------
@dataclass
class Check:
    what: str
    outcome: str  # yes / no / unclear
    numbers: str


@dataclass
class Verdict:
    claim: str
    title: str
    rule: str
    groups: list[str]
    checks: list[Check]
    verdict: str
    note: str = ""


def _fmt_iv(iv) -> str:
    if iv is None:
        return "n/a (< 2 seeds)"
    m, lo, hi = iv
    return f"{m:.3f} [{lo:.3f}, {hi:.3f}]"


def _cells_of(data, task: str, profile: str = "cleaned") -> dict[str, CellData]:
    """The cells of one task and profile over all groups (a model in two groups: the first group's)."""
    out = {}
    for g in sorted(data):
        for m, c in data[g].items():
            if c.task == task and c.profile == profile and m not in out:
                out[m] = c
    return out


def _paper_ok(task: str, model: str) -> bool:
    v = P.paper_value(task, model)
    return v is None or v >= NEAR


def _order(models):
    from .aggregate import MODELS, order

    return order(models, MODELS)


def judge(data) -> list[Verdict]:
    verdicts = []

    def groups_of(cells):
        return sorted({c.group for c in cells.values()})

    # C1 linear
    cells = _cells_of(data, "linear")
    checks = [Check(f"{m} reaches least squares", above(cells[m].iv(), NEAR), _fmt_iv(cells[m].iv()))
              for m in _order(cells)]
    verdicts.append(Verdict("C1", "Linear regression: every architecture reaches the least-squares baseline",
                            RULES["C1"], groups_of(cells), checks, combine(checks and [c.outcome for c in checks])))
    # C2 sparse linear
    cells = _cells_of(data, "sparse_linear")
    checks, excluded = [], []
    for m in _order(cells):
        if not _paper_ok("sparse_linear", m):
            excluded.append(m)
            continue
        c = cells[m]
        checks.append(Check(f"{m} beats least squares", above(c.iv("least_squares"), BEATS, strict=True),
                            "vs LS " + _fmt_iv(c.iv("least_squares"))))
        checks.append(Check(f"{m} approaches Lasso", above(c.iv("lasso"), NEAR), "vs Lasso " + _fmt_iv(c.iv("lasso"))))
    note = f"Not judged here (the paper's own outliers, C6): {', '.join(excluded)}." if excluded else ""
    lasso_vs_ls = [baseline_score(r, "lasso", "least_squares") for c in cells.values() for r in c.runs]
    lasso_vs_ls = [x for x in lasso_vs_ls if x is not None]
    if lasso_vs_ls:
        note += (f" Headroom at this size: Lasso's own score against least squares is "
                 f"{sum(lasso_vs_ls) / len(lasso_vs_ls):.3f} (the most a model that matches Lasso can reach on the "
                 f"'beats least squares' check).")
    verdicts.append(Verdict("C2", "Sparse linear regression: models beat least squares and approach Lasso",
                            RULES["C2"], groups_of(cells), checks, combine([c.outcome for c in checks]), note=note.strip()))
    # C3 sparse parity
    cells = _cells_of(data, "sparse_parity")
    checks = []
    for m in _order(cells):
        iv = cells[m].iv()
        if model_parts(m)["mamba"]:
            checks.append(Check(f"{m} (Mamba stage) learns", above(iv, LEARNED, strict=True), _fmt_iv(iv)))
        else:
            checks.append(Check(f"{m} (attention only) does not learn", below(iv, LEARNED), _fmt_iv(iv)))
    verdicts.append(Verdict("C3", "Sparse parity: Mamba and the Llama-Mamba hybrids learn it; GPT-2 and Llama do not",
                            RULES["C3"], groups_of(cells), checks, combine([c.outcome for c in checks])))
    # C4 MQAR
    cells = _cells_of(data, "mqar")
    attn = [m for m in _order(cells) if model_parts(m)["attention"]]
    free = [m for m in _order(cells) if not model_parts(m)["attention"]]
    checks = [Check(f"{m} solves MQAR", above(cells[m].iv(), SOLVED), _fmt_iv(cells[m].iv())) for m in attn]
    for f in free:
        for a in attn:
            d = welch_interval(cells[a].scores(), cells[f].scores())
            checks.append(Check(f"{f} clearly worse than {a}", above(d, MARGIN, strict=True),
                                f"difference {_fmt_iv(d)}"))
    verdicts.append(Verdict("C4", "MQAR (one query): attention models solve it; Mamba does clearly worse",
                            RULES["C4"], groups_of(cells), checks,
                            combine([c.outcome for c in checks]) if attn and free else "inconclusive at this scale"))
    # C5 decision tree and MLP
    checks, excluded, gs = [], [], set()
    for task in ("decision_tree", "mlp"):
        cells = _cells_of(data, task)
        gs |= set(groups_of(cells))
        for m in _order(cells):
            if not _paper_ok(task, m):
                excluded.append(f"{m} on {task}")
                continue
            iv = cells[m].iv()
            base = cells[m].runs[0].get("baseline") if cells[m].runs else "baseline"
            checks.append(Check(f"{m} on {task} at or above {base}", above(iv, NEAR), _fmt_iv(iv)))
    verdicts.append(Verdict("C5", "Decision tree and 2-layer MLP: models at or above their baselines", RULES["C5"],
                            sorted(gs), checks, combine([c.outcome for c in checks]),
                            note=f"not judged here (below {NEAR} in the paper's Table 3): {', '.join(excluded)}" if excluded else ""))
    # C6 the paper's outliers, both profiles
    for task, m in OUTLIERS.items():
        for profile in ("cleaned", "paper_code"):
            cells = _cells_of(data, task, profile)
            if SIBLING not in cells or m not in cells:
                continue
            d = welch_interval(cells[SIBLING].scores(), cells[m].scores())
            checks = [Check(f"{m} notably worse than {SIBLING} ({profile})", above(d, MARGIN, strict=True),
                            f"{SIBLING} {_fmt_iv(cells[SIBLING].iv())}, {m} {_fmt_iv(cells[m].iv())}, difference "
                            f"{_fmt_iv(d)}; paper {P.paper_value(task, SIBLING):.3f} vs {P.paper_value(task, m):.3f}")]
            verdicts.append(Verdict("C6", f"Outlier on {task.replace('_', ' ')} (model/profile={profile}): "
                                    f"{m} worse than {SIBLING}", RULES["C6"], groups_of(cells), checks,
                                    combine([c.outcome for c in checks])))
    return verdicts


# ---- report ------------------------------------------------------------------------------------------------
def _scale_rows(root: Path, data) -> list[str]:
    rows = ["| group | task | task size | model size | steps | lr | batch | curriculum | runs | Σ run wall (min) | steps/s (mean) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for g in sorted(data):
        cells = data[g]
        runs = [r for c in cells.values() for r in c.runs]
        if not runs:
            continue
        from omegaconf import OmegaConf

        r0 = runs[0]
        cfgp = Path(r0["run_dir"]) / "config.yaml"
        cfgp = cfgp if cfgp.is_file() else next(iter(Path(root, g).glob("*/*/seed*/config.yaml")), None)
        cfg = OmegaConf.to_container(OmegaConf.load(cfgp), resolve=False) if cfgp else {}
        t = cfg.get("task", {})
        tsize = ", ".join(f"{k}={v}" for k, v in t.items() if k not in ("_target_", "baseline", "curriculum_points_start",
                                                                         "curriculum_points_inc"))
        msz = f"d_model={cfg.get('model', {}).get('d_model')}, n_layer={cfg.get('model', {}).get('n_layer')}, " \
              f"n_head={cfg.get('model', {}).get('n_head')}"
        cur = cfg.get("curriculum", {})
        cur_s = "none" if not cur.get("enabled") else (f"dims {cur['dims']['start']}→{cur['dims']['end']}, points "
                                                       f"{cur['points']['start']}→{cur['points']['end']} every {cur['points']['interval']}")
        wall = sum(float(r.get("wall_s") or 0) for r in runs) / 60
        sps = [float(r["steps_per_sec"]) for r in runs if r.get("steps_per_sec")]
        rows.append(f"| {g} | {r0['task']} | {tsize} | {msz} | {r0['max_steps']} | {cfg.get('optim', {}).get('lr')} | "
                    f"{cfg.get('optim', {}).get('batch_size')} | {cur_s} | {len(runs)}/{sum(c.expected for c in cells.values())} | "
                    f"{wall:.1f} | {sum(sps) / len(sps):.1f} |" if sps else "")
    return rows


def _cell_table(data) -> list[str]:
    rows = ["| group | model | profile | baseline | seeds | per-seed scores | mean [95% CI over seeds] | paper |",
            "|---|---|---|---|---|---|---|---|"]
    for g in sorted(data):
        for m in _order(data[g]):
            c = data[g][m]
            base = c.runs[0].get("baseline") if c.runs else "?"
            extra = ""
            if c.task == "sparse_linear" and c.runs:
                extra = f"<br>vs least squares: {_fmt_iv(c.iv('least_squares'))}"
            pv = P.paper_value(c.task, m)
            todo = {s: ("no results.json" if st == "failed" else st) for s, st in c.status.items() if st != "finished"}
            seeds = f"{len(c.runs)}/{c.expected}" + (f" ({', '.join(f'{s} {st}' for s, st in todo.items())})" if todo else "")
            rows.append(f"| {g} | {m} | {c.profile} | {base} | {seeds} | {', '.join(f'{s:.3f}' for s in c.scores())} | "
                        f"{_fmt_iv(c.iv())}{extra} | {'' if pv is None else f'{pv:.3f}'} |")
    return rows


def figures(data, fig_dir: Path) -> dict[str, Path]:
    """One error-vs-context overlay per group (aggregate.overlay_error_curves): fig_dir/<group>.png."""
    from .aggregate import overlay_error_curves

    fig_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for g in sorted(data):
        rs = [r for m in _order(data[g]) for r in data[g][m].runs if r.get("model_errors")]
        if not rs:
            continue
        rs = [r for r in rs if len(r["context_lengths"]) == len(rs[0]["context_lengths"])]
        out[g] = overlay_error_curves(rs, fig_dir / f"{g}.png", title=f"{g}: squared error vs context (mean over seeds)")
    return out


def session_wall(sessions: list[dict]) -> float:
    """Wall time covered by the run sessions (the union of their [started, finished] intervals: sessions that
    ran side by side, e.g. two ``run -j 1 --only ...`` on different groups, are not counted twice)."""
    iv = []
    for s in sessions:
        try:
            a = datetime.fromisoformat(s["started"]).timestamp()
            b = datetime.fromisoformat(s["finished"]).timestamp()
        except (KeyError, ValueError):
            continue
        iv.append((a, b))
    total, end = 0.0, None
    for a, b in sorted(iv):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def not_started(root: Path, data) -> list[str]:
    """Runs of the plan (conf/experiment/replicate_cpu_*.yaml) with no run directory under ``root``."""
    try:
        groups = load_plan(None if Path(root) == Path(DEFAULT_ROOT) else str(root))
    except Exception as e:  # noqa: BLE001 - the plan is a convenience here: never fail the report for it
        print(f"warning: could not compose the plan: {e}", file=sys.stderr)
        return []
    out = []
    for g in groups:
        for j in g.jobs:
            if not Path(j.run_dir).is_dir():
                out.append(f"{g.short}/{j.model}/seed{j.seed}")
    return out


def report(root, doc="docs/replication.md", fig_dir="docs/replication") -> Path:
    root, doc, fig_dir = Path(root), Path(doc), Path(fig_dir)
    data = collect(root)
    verdicts = judge(data)
    figs = figures(data, fig_dir)
    log = json.loads((root / RUN_LOG).read_text()) if (root / RUN_LOG).exists() else {"sessions": []}
    sessions = log.get("sessions", [])
    all_runs = [r for g in data.values() for c in g.values() for r in c.runs]
    n_expected = sum(c.expected for g in data.values() for c in g.values())
    wall_total = session_wall(sessions)
    steps_total = sum(int(r.get("step") or 0) for r in all_runs)
    run_wall = sum(float(r.get("wall_s") or 0) for r in all_runs)
    mach = sessions[-1].get("machine") if sessions else machine()
    rel = os.path.relpath(fig_dir, doc.parent)

    L = ["# Replication at CPU scale (arXiv 2411.03945)", "",
         "Generated by `python -m icl_hybrids.replicate report " + str(root) + "` from the runs' `results.json` "
         "(`make replicate-cpu` = `replicate run` + this report). Do not edit by hand: rerun the report.", "",
         "## Scale and cost", "",
         f"- machine: {mach}; one CPU thread per job; "
         f"{max(2, sum(s.get('n_procs', 1) for s in sessions)) if sessions else 2} jobs side by side at most "
         "(overlapping sessions are counted once in the wall time)",
         f"- wall time of `replicate run`: **{wall_total / 60:.1f} min** over {len(sessions)} session(s)"
         + (" (" + "; ".join(f"{s['started']} → {s['finished']}: {s['wall_s'] / 60:.1f} min, -j {s.get('n_procs')}"
                             + (f", groups {','.join(s['only'])}" if s.get('only') else "") for s in sessions) + ")" if sessions else ""),
         f"- runs finished: {len(all_runs)}/{n_expected}; training steps in all: {steps_total:,}; "
         f"summed per-run wall time {run_wall / 60:.1f} min",
         "- every score is the ICL regression score (paper eq. 1) on 1000 evaluation prompts at the last step; "
         "a cell's interval is the 95% t-interval over its seeds", "",
         *_scale_rows(root, data), "",
         "## Verdict rules", "",
         "A *check* compares an interval with a threshold: **yes** when the whole 95% interval is on the claimed side, "
         "**no** when the whole interval is on the other side, **unclear** otherwise. A claim is **replicated** when every "
         "check is yes, **not replicated** when any check is no, **inconclusive at this scale** otherwise. Cell intervals: "
         "95% t-interval of the mean over seeds; differences of two cells: Welch's 95% interval. Thresholds (fixed in "
         f"`icl_hybrids/replicate.py` before the run): NEAR={NEAR}, LEARNED={LEARNED}, SOLVED={SOLVED}, MARGIN={MARGIN}, "
         f"BEATS={BEATS}.", ""]
    L += ["| claim | rule |", "|---|---|"] + [f"| {k} | {v} |" for k, v in RULES.items()] + [""]
    L += ["## Verdicts", "", "| claim | statement | verdict | checks yes / no / unclear |", "|---|---|---|---|"]
    for v in verdicts:
        oc = [c.outcome for c in v.checks]
        L.append(f"| {v.claim} | {v.title} | **{v.verdict}** | {oc.count('yes')} / {oc.count('no')} / {oc.count('unclear')} |")
    L.append("")
    for v in verdicts:
        L += [f"### {v.claim}: {v.title}", "", f"Rule: {v.rule}. Verdict: **{v.verdict}**.", ""]
        if v.note:
            L += [v.note, ""]
        L += ["| check | outcome | mean [95% CI] |", "|---|---|---|"]
        L += [f"| {c.what} | {c.outcome} | {c.numbers} |" for c in v.checks] + [""]
        for g in v.groups:
            if g in figs:
                L += [f"![{g}]({rel}/{figs[g].name})", ""]
    missing = not_started(root, data)
    L += ["## All cells", "", *_cell_table(data), ""]
    if missing:
        L += [f"Planned but never started ({len(missing)} runs; `replicate run` again resumes): "
              + ", ".join(missing) + ".", ""]
    L += [
          "Paper: the value in the paper's Table 3 (500k steps, paper scale; decision tree and sparse parity there are "
          "scored against trained GPT-2 / Mamba models, here against the greedy tree and the Bayes-optimal estimator). "
          "It is shown for orientation only; the verdicts do not use it except to pick which models C2/C5 expect at ~1.", ""]
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(L) + "\n")
    (fig_dir / "verdicts.json").write_text(json.dumps([{"claim": v.claim, "title": v.title, "verdict": v.verdict,
                                                        "checks": [c.__dict__ for c in v.checks]} for v in verdicts], indent=1))
    return doc


# ---- CLI ---------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m icl_hybrids.replicate", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_plan = sub.add_parser("plan", help="the groups and their jobs (nothing run)")
    p_run = sub.add_parser("run", help="run every group, resumably")
    p_rep = sub.add_parser("report", help="docs/replication.md + figures from a replication directory")
    for p in (p_plan, p_run):
        p.add_argument("--root", default=None, help=f"replication directory (default {DEFAULT_ROOT})")
        p.add_argument("--only", default=None, help="comma-separated groups (c1_linear or replicate_cpu_c1_linear)")
        p.add_argument("overrides", nargs="*", help="Hydra overrides for every group's jobs")
    p_run.add_argument("-j", type=int, default=2, help="(group, model) multiruns side by side (default 2)")
    p_rep.add_argument("root", nargs="?", default=DEFAULT_ROOT)
    p_rep.add_argument("--doc", default="docs/replication.md")
    p_rep.add_argument("--fig-dir", default="docs/replication")
    a = ap.parse_args(argv)
    if a.cmd == "report":
        if not Path(a.root).is_dir():
            print(f"error: {a.root}: no such directory (run `python -m icl_hybrids.replicate run` first)", file=sys.stderr)
            return 2
        print(report(a.root, a.doc, a.fig_dir))
        return 0
    only = a.only.split(",") if a.only else None
    if a.cmd == "plan":
        print(format_plan(load_plan(a.root, a.overrides, only)))
        return 0
    return run(a.j, a.root, a.overrides, only)


if __name__ == "__main__":
    sys.exit(main())
