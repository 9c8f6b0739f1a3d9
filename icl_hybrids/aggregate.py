"""Aggregate a sweep directory into the paper's Table 3: task x model ICL regression scores with 95% CIs,
the paper's values beside ours, missing / failed / unfinished runs marked, hardware totals, and figures.

    python -m icl_hybrids.aggregate multirun_outputs/paper              # table3.md, table3.csv, table3.png
    python -m icl_hybrids.aggregate multirun_outputs/cpu --figures      # + figures/<task>_errors.png overlays
    python -m icl_hybrids.aggregate DIR --out reports/ --per-run        # + one error plot per run

Input: every ``<task>/<name>/seed<k>/`` under DIR (results.json, config.yaml). The expected grid comes from
DIR/multirun.yaml (Hydra's record of the sweep: its sweeper params and command line), so jobs that never
started are listed as ``missing``; a run directory without results.json is ``failed`` (it started and
never evaluated; submitit's job logs say why: DIR/.submitit/), one whose results.json is not finished at
max_steps is ``unfinished``, one whose training stopped on a non-finite loss is ``diverged``.

Cells: one seed -> the score and its 95% bootstrap interval over evaluation prompts (results.json
``icl_score_ci95``); several seeds -> the mean over seeds and a 95% t-interval over seeds (the prompt
intervals, averaged, are in the CSV).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import paper as P

# Table order: the paper's columns and rows first (icl_hybrids.paper), then anything else alphabetically.
TASKS = [*P.TABLE3["gpt2"], "mqar"]
MODELS = list(P.MODEL_IDS)


def task_label(task: str) -> str:
    """The task's own label (``Task.label``), from its config; the name when it has none."""
    from .config import task_class

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
        from .reference import FILE

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


_WARNED: set = set()


def run_status(run_dir: Path) -> tuple[str, dict | None]:
    res_path = run_dir / "results.json"
    if not res_path.exists():
        return "failed", None
    try:
        res = json.loads(res_path.read_text())
    except (OSError, ValueError):
        return "failed", None
    if not isinstance(res, dict):  # e.g. a JSON list: not a results file
        if res_path not in _WARNED:
            _WARNED.add(res_path)
            print(f"warning: {res_path}: not a results object ({type(res).__name__}); counted as failed",
                  file=sys.stderr)
        return "failed", None
    if res.get("status") == "diverged":  # non-finite loss: stopped, never a score
        return "diverged", res
    if res.get("status") == "finished" and res.get("step", 0) >= res.get("max_steps", float("inf")):
        return "finished", res
    return "unfinished", res


_SEED_DIR = re.compile(r"^seed(\d+)$")


def find_runs(sweep_dir: Path) -> list[Run]:
    """Every run directory under ``sweep_dir`` (<task>/<name>/seed<k>/ with a config.yaml or results.json)."""
    runs = {}
    for p in sorted(sweep_dir.rglob("*")):
        if not (p.is_dir() and _SEED_DIR.match(p.name)) or ".submitit" in p.parts:
            continue
        if not ((p / "results.json").exists() or (p / "config.yaml").exists()):
            continue
        status, res = run_status(p)
        task, model, seed = p.parent.parent.name, p.parent.name, int(_SEED_DIR.match(p.name).group(1))
        if res:
            task, model, seed = res.get("task", task), res.get("model", model), int(res.get("seed", seed))
        runs[(task, model, seed)] = Run(task, model, seed, p, res, status)
    return list(runs.values())


def expected_jobs(sweep_dir: Path) -> list[tuple[str, str, int]] | None:
    """(task, name, seed) of every job of the sweep recorded in DIR/multirun.yaml (basic sweeper only)."""
    mr_path = sweep_dir / "multirun.yaml"
    if not mr_path.exists():
        return None
    try:
        from omegaconf import OmegaConf

        from .sweep import grid

        mr = OmegaConf.load(mr_path)
        if "BasicSweeper" not in str(mr.hydra.sweeper.get("_target_", "")):
            return None
        params = mr.hydra.sweeper.get("params") or {}
        args = [f"{k}={params[k]}" for k in params] + list(mr.hydra.overrides.task)
        jobs = grid(args)
        choices = mr.hydra.runtime.choices
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
            out.append((str(task), str(name), int(kv.get("seed", mr.get("seed", 0)))))
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
        runs.setdefault(key, Run(*key))
    cells: dict[tuple[str, str], Cell] = {}
    for r in sorted(runs.values(), key=lambda r: r.seed):
        cells.setdefault((r.task, r.model), Cell(r.task, r.model)).runs.append(r)
    return list(cells.values()), list(runs.values()), expected is not None


def order(items, reference):
    rank = {x: i for i, x in enumerate(reference)}
    return sorted(items, key=lambda x: (rank.get(x, len(rank)), x))


# ---- tables ---------------------------------------------------------------------------------------------
def _fmt(v, nd=3):
    return "" if v is None else f"{v:.{nd}f}"


def cell_text(cell: Cell | None, paper: float | None = None, with_paper: bool = True) -> str:
    if cell is None:
        txt = "—"
    else:
        s = cell.stats()
        if s["score"] is None:
            txt = cell.label() or "no score"
        else:
            lo, hi = (s["seed_ci_lo"], s["seed_ci_hi"]) if s["n_finished"] >= 2 else (s["prompt_ci_lo"], s["prompt_ci_hi"])
            txt = f"{s['score']:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else "")
            if s["n_finished"] >= 2:
                txt += f" n={s['n_finished']}"
            if s["n_finished"] < s["n_seeds"]:
                txt += f" ({cell.label()})"
    if with_paper and paper is not None:
        txt += f" · paper {paper:.3f}"
    return txt


def hardware(runs: list[Run]) -> dict[str, dict]:
    """Per model (and 'total'): runs with results, wall hours, GPU-hours, mean steps/s, tokens/s, peak memory."""
    agg: dict[str, dict] = {}
    for r in runs:
        if not r.results:
            continue
        for key in (r.model, "total"):
            a = agg.setdefault(key, {"runs": 0, "wall_h": 0.0, "gpu_hours": 0.0, "steps": 0, "_sps": [], "_tps": [],
                                     "peak_memory_mb": 0.0, "n_params": None, "devices": set()})
            res = r.results
            a["runs"] += 1
            a["wall_h"] += float(res.get("wall_s") or 0) / 3600
            a["gpu_hours"] += float(res.get("gpu_hours") or 0)
            a["steps"] += int(res.get("step") or 0)
            if _finite(res.get("steps_per_sec")):
                a["_sps"].append(float(res["steps_per_sec"]))
            if _finite(res.get("tokens_per_sec")):
                a["_tps"].append(float(res["tokens_per_sec"]))
            a["peak_memory_mb"] = max(a["peak_memory_mb"], float(res.get("peak_memory_mb") or 0))
            if key != "total":
                a["n_params"] = res.get("n_params") if a["n_params"] is None else a["n_params"]
            if res.get("device"):
                a["devices"].add(str(res["device"]))
    for a in agg.values():
        sps, tps = a.pop("_sps"), a.pop("_tps")
        a["steps_per_sec"] = sum(sps) / len(sps) if sps else None
        a["tokens_per_sec"] = sum(tps) / len(tps) if tps else None
        a["devices"] = ", ".join(sorted(a["devices"]))
    return agg


def write_tables(sweep_dir, out_dir=None, paper: bool = True) -> dict:
    """table3.md, table3.csv, hardware.csv and table3.png in ``out_dir`` (default: the sweep directory)."""
    sweep_dir = Path(sweep_dir)
    out_dir = Path(out_dir) if out_dir else sweep_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    cells, runs, grid_known = collect(sweep_dir)
    by = {(c.task, c.model): c for c in cells}
    tasks = order({c.task for c in cells}, TASKS)
    models = order({c.model for c in cells}, MODELS)

    # CSV: one row per cell
    rows = []
    for m in models:
        for t in tasks:
            c = by.get((t, m))
            if c is None:
                continue
            s = c.stats()
            why = c.not_comparable()
            pv = P.paper_value(t, m) if not why else None
            rows.append({"task": t, "model": m, "paper_id": P.MODEL_IDS.get(m, ""), **s,
                         "status": "finished" if s["n_finished"] == s["n_seeds"] and s["score"] is not None
                         else (c.label() or "incomplete"),
                         "paper_score": pv, "paper_ci95": P.CI95.get(t) if pv is not None else None,
                         "diff_vs_paper": (s["score"] - pv) if (pv is not None and s["score"] is not None) else None,
                         "not_comparable": "; ".join(why),
                         "seeds": " ".join(str(r.seed) for r in c.runs),
                         "steps": " ".join(str((r.results or {}).get("step", "")) for r in c.runs),
                         "run_dirs": " ".join(str(r.run_dir or "") for r in c.runs)})
    csv_path = out_dir / "table3.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["task", "model"])
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in r.items()})

    hw = hardware(runs)
    hw_path = out_dir / "hardware.csv"
    with open(hw_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "n_params", "runs", "steps", "wall_h", "gpu_hours", "mean_steps_per_sec",
                    "mean_tokens_per_sec", "max_peak_memory_mb", "devices"])
        for m in [*order([k for k in hw if k != "total"], MODELS), "total"]:
            if m in hw:
                a = hw[m]
                w.writerow([m, a["n_params"] or "", a["runs"], a["steps"], f"{a['wall_h']:.4f}", f"{a['gpu_hours']:.4f}",
                            _fmt(a["steps_per_sec"], 2), _fmt(a["tokens_per_sec"], 0), f"{a['peak_memory_mb']:.0f}",
                            a["devices"]])

    # Markdown
    n_status = {}
    for r in runs:
        n_status[r.status] = n_status.get(r.status, 0) + 1
    lines = [f"# ICL regression scores: `{sweep_dir}`", "",
             "Cells: score [95% CI] — one seed: bootstrap over evaluation prompts; n=k: mean and t-interval over k "
             "seeds." + (" `paper`: arXiv 2411.03945 Table 3 (500k steps; sparse parity 200k)." if paper else "")
             + " 1 = as good as the task's baseline estimator, 0 = the zero estimator.", "",
             "Runs: " + ", ".join(f"{v} {k}" for k, v in sorted(n_status.items()))
             + ("" if grid_known else " (the sweep's job grid is not recorded — no basic-sweeper multirun.yaml — so only runs found on disk are listed)"), ""]
    head = ["id", "model"] + [task_label(t) + (f" (paper ±{P.CI95[t]})" if paper and P.CI95.get(t) else "")
                              for t in tasks]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes: dict[str, int] = {}  # reason -> footnote number
    for m in models:
        cells_txt = []
        for t in tasks:
            c = by.get((t, m))
            txt = cell_text(c, None)
            if paper and c is not None and P.paper_value(t, m) is not None:
                why = c.not_comparable()
                if why:  # the paper's number would not be like for like: say why instead
                    k = notes.setdefault("; ".join(why), len(notes) + 1)
                    txt += f" · paper n/c[^{k}]"
                else:
                    txt += f" · paper {P.paper_value(t, m):.3f}"
            cells_txt.append(txt)
        lines.append(f"| {P.MODEL_IDS.get(m, '')} | {m} | " + " | ".join(cells_txt) + " |")
    if notes:
        lines += ["", "`paper n/c`: not comparable with Table 3, so its value is not shown; the paper's value appears only "
                  "where task definition, baseline, profile (paper_code), size and steps match the paper's "
                  "(icl_hybrids/paper.py)."]
        lines += [""] + [f"[^{k}]: {why}" for why, k in notes.items()]
    bad = [r for r in runs if not r.finished]
    if bad:
        lines += ["", "## Runs without a final score", "", "| task | model | seed | status | step | run dir |",
                  "|---|---|---|---|---|---|"]
        for r in sorted(bad, key=lambda r: (r.status, r.task, r.model, r.seed)):
            step = f"{r.results.get('step')}/{r.results.get('max_steps')}" if r.results else ""
            lines.append(f"| {r.task} | {r.model} | {r.seed} | {r.status} | {step} | {r.run_dir or ''} |")
    if "total" in hw:
        t = hw["total"]
        lines += ["", "## Hardware", "",
                  f"{t['runs']} runs with results, {t['steps']} optimiser steps, wall time {t['wall_h']:.3f} h "
                  f"(sum over runs), {t['gpu_hours']:.3f} GPU-hours; devices: {t['devices'] or '?'}.", "",
                  "| model | params | runs | wall h | GPU-h | mean steps/s | mean tokens/s | max peak MB |",
                  "|---|---|---|---|---|---|---|---|"]
        for m in order([k for k in hw if k != "total"], MODELS):
            a = hw[m]
            lines.append(f"| {m} | {a['n_params'] or ''} | {a['runs']} | {a['wall_h']:.3f} | {a['gpu_hours']:.3f} | "
                         f"{_fmt(a['steps_per_sec'], 1)} | {_fmt(a['tokens_per_sec'], 0)} | {a['peak_memory_mb']:.0f} |")
    md_path = out_dir / "table3.md"
    md_path.write_text("\n".join(lines) + "\n")
    png_path = heatmap(cells, tasks, models, out_dir / "table3.png", paper=paper, title=str(sweep_dir))
    return {"md": md_path, "csv": csv_path, "hardware_csv": hw_path, "png": png_path, "cells": cells, "runs": runs}


# ---- figures --------------------------------------------------------------------------------------------
def heatmap(cells: list[Cell], tasks: list[str], models: list[str], png, paper: bool = True, title: str = "") -> Path:
    """Task x model heatmap of the scores, every cell annotated (score, CI half-width, paper value);
    missing / failed / unfinished cells hatched and labelled."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import PAPER_RC

    by = {(c.task, c.model): c for c in cells}
    vals = np.full((len(models), len(tasks)), np.nan)
    with plt.rc_context(PAPER_RC):
        ylab = max((len(m) for m in models), default=4) + 6
        fig_w = 1.2 + 0.055 * ylab + 1.05 * max(len(tasks), 1)
        fig_h = 0.9 + 0.36 * max(len(models), 1)
        fig, ax = plt.subplots(figsize=(fig_w, fig_h))
        for i, m in enumerate(models):
            for j, t in enumerate(tasks):
                c = by.get((t, m))
                if c is not None and c.stats()["score"] is not None:
                    vals[i, j] = c.stats()["score"]
        cmap = plt.get_cmap("viridis").with_extremes(bad="#eeeeee")
        im = ax.imshow(np.ma.masked_invalid(vals), cmap=cmap, vmin=0.0, vmax=1.2, aspect="auto")
        for i, m in enumerate(models):
            for j, t in enumerate(tasks):
                c = by.get((t, m))
                pv = P.paper_value(t, m) if paper and c is not None and not c.not_comparable() else None
                if c is None or np.isnan(vals[i, j]):
                    lab = "—" if c is None else (c.label() or "no score")
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", ec="#bbbbbb", lw=0))
                    txt, color = lab.replace("unfinished ", "unfin.\n"), "#aa0000" if c is not None else "#777777"
                else:
                    s = c.stats()
                    lo, hi = (s["seed_ci_lo"], s["seed_ci_hi"]) if s["n_finished"] >= 2 else (s["prompt_ci_lo"], s["prompt_ci_hi"])
                    txt = f"{vals[i, j]:.2f}" + (f"±{(hi - lo) / 2:.2f}" if lo is not None else "")
                    color = "white" if vals[i, j] < 0.75 else "black"
                if pv is not None:
                    txt += f"\n({pv:.2f})"
                ax.text(j, i, txt, ha="center", va="center", fontsize=6.5, color=color, linespacing=0.95)
        ax.set_xticks(range(len(tasks)), [task_label(t) for t in tasks], rotation=20, ha="right")
        ax.set_yticks(range(len(models)), [f"{m} ({P.MODEL_IDS[m]})" if m in P.MODEL_IDS else m for m in models])
        ax.tick_params(length=0)
        for sp in ax.spines.values():
            sp.set_visible(False)
        cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
        cb.set_label("ICL regression score")
        ax.set_title(("ICL regression score (paper Table 3 in parentheses)" if paper else "ICL regression score")
                     + (f"\n{title}" if title else ""), fontsize=8)
        fig.tight_layout()
        fig.savefig(png)
        plt.close(fig)
    return Path(png)


def overlay_error_curves(results: list[dict], png, title: str | None = None, normalize: bool = True) -> Path:
    """Several models on one task: squared error vs context length, one line per model (mean over its seeds'
    ``model_errors``), the task's baseline and the zero estimator dashed (from the first run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import LABELS, PAPER_RC, error_scale

    png = Path(png)
    if not results:
        raise ValueError("no results to plot")
    first = results[0]
    task = first.get("task")
    d = error_scale(first, normalize)
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(str(r.get("model")), []).append(r)
    names = order(groups, MODELS)
    k = first["context_lengths"]
    with plt.rc_context(PAPER_RC):
        fig, ax = plt.subplots(figsize=(6.8, 3.0))
        cmap = plt.get_cmap("tab20")
        for i, name in enumerate(names):
            rs = groups[name]
            errs = [sum(r["model_errors"][j] for r in rs) / len(rs) for j in range(len(k))]
            score = sum(float(r["icl_score"]) for r in rs) / len(rs)
            color = cmap((2 * i) % 20 + (2 * i) // 20 % 2)  # tab20: dark shades first, then the light ones
            ax.plot(k, [e / d for e in errs], lw=1.3, color=color, ls="-" if i < 10 else "-.",
                    label=f"{name} ({score:.2f})" + (f" n={len(rs)}" if len(rs) > 1 else ""))
        base = first.get("baseline")
        for name, style in ((base, dict(color="black", ls="--", lw=1.2)), ("zero", dict(color="grey", ls=":", lw=1.2))):
            e = first.get("baseline_errors", {}).get(name)
            if e:
                ax.plot(k, [v / d for v in e], label=LABELS.get(name, name), **style)
        scored = first.get("score_positions")
        if scored and len(scored) < len(k):
            ax.axvspan(min(scored) - 0.5, max(scored) + 0.5, color="#f3f3f3", zorder=0, lw=0)
        ax.set_xlabel("in-context examples")
        ax.set_ylabel("squared error" + (f" / d (d={d})" if d != 1 else ""))
        ax.set_title(title or f"{task_label(task)} — ICL score in parentheses")
        ax.set_ylim(bottom=0)
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=1)
        fig.tight_layout()
        fig.savefig(png)
        plt.close(fig)
    return png


def write_figures(sweep_dir, out_dir=None, per_run: bool = False) -> list[Path]:
    """figures/<task>_errors.png (all models of the task overlaid) and, with ``per_run``,
    figures/runs/<task>/<model>_seed<k>.png (plots.error_curves with the run's baselines and 99% bands)."""
    sweep_dir = Path(sweep_dir)
    fig_dir = (Path(out_dir) if out_dir else sweep_dir) / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    _, runs, _ = collect(sweep_dir)
    done = [r for r in runs if r.finished and r.results.get("model_errors")]
    out = []
    for task in order({r.task for r in done}, TASKS):
        rs = [r.results for r in done if r.task == task]
        # a task evaluated at different sizes (several experiments in one directory) cannot share an axis
        rs = [r for r in rs if len(r["context_lengths"]) == len(rs[0]["context_lengths"])]
        out.append(overlay_error_curves(rs, fig_dir / f"{task}_errors.png"))
    if per_run:
        from .plots import error_curves

        for r in done:
            p = fig_dir / "runs" / r.task / f"{r.model}_seed{r.seed}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            out.append(error_curves(r.results, p))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m icl_hybrids.aggregate", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep_dir", help="a sweep directory, e.g. multirun_outputs/paper")
    ap.add_argument("--out", default=None, help="where to write (default: the sweep directory)")
    ap.add_argument("--figures", action="store_true", help="also per-task error-vs-context overlays")
    ap.add_argument("--figures-only", action="store_true", help="only the figures (make figures)")
    ap.add_argument("--per-run", action="store_true", help="with --figures: one error plot per run too")
    ap.add_argument("--no-paper", action="store_true", help="leave the paper's Table 3 values out")
    args = ap.parse_args(argv)
    d = Path(args.sweep_dir)
    if not d.is_dir():
        print(f"error: {d}: no such directory", file=sys.stderr)
        return 2
    if not find_runs(d) and expected_jobs(d) is None:
        print(f"error: {d}: no runs found (no <task>/<name>/seed<k>/ with results.json or config.yaml)",
              file=sys.stderr)
        return 2
    if not args.figures_only:
        from .reference import rescore

        rescore(d)  # decision tree / sparse parity vs the sweep's trained GPT-2 / Mamba (idempotent)
        out = write_tables(d, args.out, paper=not args.no_paper)
        print(out["md"].read_text())
        print(f"wrote {out['md']}, {out['csv']}, {out['hardware_csv']}, {out['png']}")
    if args.figures or args.figures_only:
        figs = write_figures(d, args.out, per_run=args.per_run)
        print(f"wrote {len(figs)} figure(s) under {(Path(args.out) if args.out else d) / 'figures'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
