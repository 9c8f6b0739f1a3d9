"""Figures: the task x model heatmap and per-task error-vs-context overlays."""
from __future__ import annotations

from pathlib import Path

from .. import paper as P
from .runs import MODELS, TASKS, Cell, collect, order, task_label


# ---- figures --------------------------------------------------------------------------------------------
def heatmap(cells: list[Cell], tasks: list[str], models: list[str], png, paper: bool = True, title: str = "") -> Path:
    """Task x model heatmap of the scores, every cell annotated (score, CI half-width, paper value);
    missing / failed / unfinished cells hatched and labelled."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..plots import PAPER_RC

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
                    seeds = s["n_finished"] >= 2
                    lo, hi = (s["seed_ci_lo"], s["seed_ci_hi"]) if seeds else (s["prompt_ci_lo"], s["prompt_ci_hi"])
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

    from ..plots import PAPER_RC, baseline_display, error_scale

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
                ax.plot(k, [v / d for v in e], label=baseline_display(name), **style)
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
        from ..plots import error_curves

        for r in done:
            p = fig_dir / "runs" / r.task / f"{r.model}_seed{r.seed}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            out.append(error_curves(r.results, p))
    return out


