"""Tables: table3.md / table3.csv / hardware.csv, the paper's value only beside comparable cells."""
from __future__ import annotations

import csv
from pathlib import Path

from .. import paper as P
from .runs import MODELS, TASKS, Cell, Run, _finite, collect, order, task_label


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
             + ("" if grid_known else " (the sweep's job grid is not recorded — no basic-sweeper multirun.yaml — "
                                      "so only runs found on disk are listed)"), ""]
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
    from .figures import heatmap

    png_path = heatmap(cells, tasks, models, out_dir / "table3.png", paper=paper, title=str(sweep_dir))
    return {"md": md_path, "csv": csv_path, "hardware_csv": hw_path, "png": png_path, "cells": cells, "runs": runs}


