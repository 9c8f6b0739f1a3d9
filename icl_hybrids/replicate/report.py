"""The report: docs/replication.md (scale and cost, the verdict rules, the verdicts with their checks, every
cell) and one error-vs-context figure per group, from a replication directory."""
from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path

from .. import paper as P
from .judge import BEATS, LEARNED, MARGIN, NEAR, RULES, SOLVED, _fmt_iv, _order, collect, judge
from .plan import DEFAULT_ROOT, RUN_LOG, load_plan
from .runner import machine


def _scale_rows(root: Path, data) -> list[str]:
    rows = ["| group | task | task size | model size | steps | lr | batch | curriculum | runs | Σ run wall (min) "
            "| steps/s (mean) |",
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
        cur_s = "none" if not cur.get("enabled") else (
            f"dims {cur['dims']['start']}→{cur['dims']['end']}, points "
            f"{cur['points']['start']}→{cur['points']['end']} every {cur['points']['interval']}")
        wall = sum(float(r.get("wall_s") or 0) for r in runs) / 60
        sps = [float(r["steps_per_sec"]) for r in runs if r.get("steps_per_sec")]
        n_exp = sum(c.expected for c in cells.values())
        rows.append(f"| {g} | {r0['task']} | {tsize} | {msz} | {r0['max_steps']} | {cfg.get('optim', {}).get('lr')} | "
                    f"{cfg.get('optim', {}).get('batch_size')} | {cur_s} | {len(runs)}/{n_exp} | "
                    f"{wall:.1f} | {sum(sps) / len(sps):.1f} |" if sps else "")
    return rows


def _pilot_notes(groups) -> list[str]:
    """The header comment of each group's experiment file (conf/experiment/replicate_cpu_<group>.yaml): why
    that size, from the pilot runs. Written once, in the config beside the sizes it explains."""
    from ..config import CONF_DIR

    out = []
    for g in groups:
        f = Path(CONF_DIR) / "experiment" / f"replicate_cpu_{g}.yaml"
        if not f.is_file():
            continue
        lines = f.read_text().splitlines()
        body = []
        for x in lines[1:]:
            if not x.startswith("#"):
                break
            body.append(x[1:].strip())
        if body:
            out += [f"- **{g}**: " + " ".join(body)]
    return out


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
    from ..aggregate import overlay_error_curves

    fig_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for g in sorted(data):
        rs = [r for m in _order(data[g]) for r in data[g][m].runs if r.get("model_errors")]
        if not rs:
            continue
        rs = [r for r in rs if len(r["context_lengths"]) == len(rs[0]["context_lengths"])]
        out[g] = overlay_error_curves(rs, fig_dir / f"{g}.png", title=f"{g}: squared error vs context (mean over seeds)")
    return out


def _intervals(sessions: list[dict]) -> list[tuple[float, float, dict]]:
    """(started, finished, session) in seconds for every session of the run log with both times readable."""
    out = []
    for s in sessions:
        try:
            a = datetime.fromisoformat(s["started"]).timestamp()
            b = datetime.fromisoformat(s["finished"]).timestamp()
        except (KeyError, ValueError):
            continue
        out.append((a, b, s))
    return out


def session_wall(sessions: list[dict]) -> float:
    """Wall time covered by the run sessions (the union of their [started, finished] intervals: sessions that
    ran side by side, e.g. two ``run jobs=1 only=...`` on different groups, are not counted twice)."""
    total, end = 0.0, None
    for a, b, _ in sorted(_intervals(sessions), key=lambda iv: iv[:2]):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def max_side_by_side(sessions: list[dict]) -> int:
    """Most jobs that ran at once: the largest sum of ``n_procs`` over sessions whose [started, finished]
    intervals overlap (sessions one after the other count one at a time)."""
    ev = []
    for a, b, s in _intervals(sessions):
        n = int(s.get("n_procs") or 1)
        ev += [(a, n), (b, -n)]
    best = cur = 0
    for _, d in sorted(ev):  # at the same instant an end (-n) sorts before a start
        cur += d
        best = max(best, cur)
    return best


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
         "Generated by `python -m icl_hybrids.replicate report dir=" + str(root) + "` from the runs' `results.json` "
         "(`make replicate-cpu` = `replicate run` + this report). Do not edit by hand: rerun the report.", "",
         "## Scale and cost", "",
         f"- machine: {mach}; one CPU thread per job; "
         f"{max_side_by_side(sessions) or 2} jobs side by side at most "
         "(overlapping sessions are counted once in the wall time)",
         f"- wall time of `replicate run`: **{wall_total / 60:.1f} min** over {len(sessions)} session(s)"
         + (" (" + "; ".join(f"{s['started']} → {s['finished']}: {s['wall_s'] / 60:.1f} min, jobs={s.get('n_procs')}"
                             + (f", groups {','.join(s['only'])}" if s.get('only') else "")
                             for s in sessions) + ")" if sessions else ""),
         f"- runs finished: {len(all_runs)}/{n_expected}; training steps in all: {steps_total:,}; "
         f"summed per-run wall time {run_wall / 60:.1f} min",
         "- every score is the ICL regression score (paper eq. 1) on 1000 evaluation prompts at the last step; "
         "a cell's interval is the 95% t-interval over its seeds", "",
         *_scale_rows(root, data), "",
         "How each size was chosen (the pilot runs, from the header of `conf/experiment/replicate_cpu_<group>.yaml`):", "",
         *_pilot_notes(sorted(data)), "",
         "## Verdict rules", "",
         "A *check* compares an interval with a threshold: **yes** when the whole 95% interval is on the claimed side, "
         "**no** when the whole interval is on the other side, **unclear** otherwise. A claim is **replicated** when every "
         "check is yes, **not replicated** when any check is no, **inconclusive at this scale** otherwise. Cell intervals: "
         "95% t-interval of the mean over seeds; differences of two cells: Welch's 95% interval. Thresholds (fixed in "
         f"`icl_hybrids/replicate/judge.py` before the run): NEAR={NEAR}, LEARNED={LEARNED}, SOLVED={SOLVED}, MARGIN={MARGIN}, "
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

