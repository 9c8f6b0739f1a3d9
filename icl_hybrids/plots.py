"""Paper-style figures (matplotlib, PNG + the plotted data as CSV)."""
from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PAPER_RC = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 7.5,
            "xtick.labelsize": 8, "ytick.labelsize": 8, "figure.dpi": 150, "savefig.dpi": 200,
            "axes.spines.top": False, "axes.spines.right": False}


def baseline_display(name: str) -> str:
    """A baseline's display name (its config's ``_label_``; baselines.baseline_label)."""
    from .baselines import baseline_label

    return baseline_label(name)


def _write_csv(path: Path, header: list[str], rows) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def error_curves(results: dict, out_png, title: str | None = None, normalize: bool = True) -> Path:
    """Squared error vs context length for the model and every baseline, with 99% bands.
    ``normalize`` divides by the task's input dimension (Garg et al.'s convention for regression tasks)."""
    out_png = Path(out_png)
    d = error_scale(results, normalize)
    k = results["context_lengths"]
    curves = [(f"{results.get('model', 'model')} (ICL score {results['icl_score']:.3f})", results["model_errors"],
               results.get("model_errors_ci99"))]
    for name, e in results["baseline_errors"].items():
        curves.append((baseline_display(name), e, results.get("baseline_errors_ci99", {}).get(name)))
    with plt.rc_context(PAPER_RC):
        fig, ax = plt.subplots(figsize=(3.6, 2.6))
        for i, (label, mean, ci) in enumerate(curves):
            y = [v / d for v in mean]
            style = dict(lw=1.8, color="C0") if i == 0 else dict(lw=1.1, ls="--", color=f"C{i}")
            ax.plot(k, y, label=label, **style)
            if ci:
                ax.fill_between(k, [v / d for v in ci[0]], [v / d for v in ci[1]], alpha=0.2, color=style["color"], lw=0)
        _mark_training_length(ax, results.get("train_n_points"), k)
        ax.set_xlabel("in-context examples")
        ax.set_ylabel("squared error" + (f" / d (d={d})" if d != 1 else ""))
        ax.set_title(title or f"{results.get('task')} — step {results.get('step')}")
        # keep the informative range: estimators that blow up at tiny contexts (averaging, min-norm LS
        # near k = d) would otherwise flatten every other curve; the CSV keeps the full data
        zero = results["baseline_errors"].get("zero")
        top = 1.3 * max(max(zero or [0]), max(results["model_errors"])) / d
        ax.set_ylim(0, top if top > 0 else None)
        ax.legend(frameon=False)
        fig.tight_layout()
        fig.savefig(out_png)
        plt.close(fig)
    header = ["context_length"] + [c[0] for c in curves] + [f"{c[0]} lo99" for c in curves] + [f"{c[0]} hi99" for c in curves]
    rows = [[kk] + [c[1][j] for c in curves] + [(c[2][0][j] if c[2] else "") for c in curves]
            + [(c[2][1][j] if c[2] else "") for c in curves] for j, kk in enumerate(k)]
    _write_csv(out_png.with_suffix(".csv"), header, rows)
    return out_png


def _mark_training_length(ax, n_train, k) -> None:
    """Length generalisation (evaluate eval.n_points beyond training): a vertical line at the last position a
    training prompt of ``n_train`` points has (n_train - 1 in-context examples). Nothing when the curve stays
    inside the training length (the line would sit on the right edge)."""
    if not n_train or not k or max(k) <= int(n_train) - 1:
        return
    x = int(n_train) - 1
    ax.axvline(x, color="0.35", lw=0.9, ls=":", zorder=0)
    ax.text(x, 0.97, f" trained on {int(n_train)} points", transform=ax.get_xaxis_transform(), ha="left", va="top",
            fontsize="x-small", color="0.35")


# ---- evaluation figures (icl_hybrids.evaluate) -------------------------------------------------------
def error_scale(results: dict, normalize: bool = True) -> float:
    """What the task divides squared errors by in figures (``Task.error_scale``, recorded in results.json's
    ``task_config``): d for the Gaussian regression tasks (Garg's normalisation), 1 for sparse parity and
    MQAR. Results written before it was recorded: derived from the task class the same way."""
    if not normalize:
        return 1
    tc = results.get("task_config") or {}
    if tc.get("error_scale") is not None:
        return float(tc["error_scale"])
    try:
        from .config import task_class

        cls = task_class(str(results.get("task")))
        gaussian = cls.x_distribution == "gaussian" and int(tc.get("y_dim", 1)) == 1
    except Exception:  # noqa: BLE001 - an unknown task: no normalisation
        gaussian = False
    return float(tc.get("n_dims", 1) or 1) if gaussian else 1.0


def _band(ax, k, ci, d, color, alpha=0.18):
    if ci:
        ax.fill_between(k, [v / d for v in ci[0]], [v / d for v in ci[1]], alpha=alpha, color=color, lw=0)


def _ylim(ax, curves: list[list[float]], d: float) -> None:
    """Clip the y range to 1.3x the largest *typical* curve (see error_curves); the CSV keeps everything."""
    tops = [max(c) for c in curves if c]
    if tops:
        top = 1.3 * max(tops) / d
        ax.set_ylim(0, top if top > 0 else None)


def trajectory(traj: dict, out_png, title: str | None = None, normalize: bool = True,
               baselines: list[str] | None = None) -> Path:
    """Error vs context length for every checkpoint of a run (paper Figs. 4a, 5, 6) plus the baselines, with
    99% bands, and the ICL score vs training step beside it.

    ``traj``: {"task", "model", "task_config", "context_lengths", "steps": [k...],
    "model_errors": {str(k): [...]}, "model_errors_ci99": {str(k): [lo, hi]}, "icl_scores": {str(k): s},
    "icl_score_ci95": {str(k): [lo, hi]}, "baseline_errors": {name: [...]}, "baseline_errors_ci99": {...}}.
    Writes ``out_png``, ``<stem>.csv`` (the curves) and ``<stem>_scores.csv`` (score per step)."""
    out_png = Path(out_png)
    d = error_scale(traj, normalize)
    k = traj["context_lengths"]
    steps = [str(s) for s in traj["steps"]]
    names = [b for b in (baselines or traj["baseline_errors"]) if b in traj["baseline_errors"]]
    cmap = plt.get_cmap("viridis")
    with plt.rc_context(PAPER_RC):
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(7.0, 2.7), gridspec_kw={"width_ratios": [1.6, 1]})
        for j, s in enumerate(steps):
            color = cmap(0.9 * j / max(len(steps) - 1, 1))
            ax.plot(k, [v / d for v in traj["model_errors"][s]], color=color, lw=1.5, label=f"step {s}")
            _band(ax, k, traj.get("model_errors_ci99", {}).get(s), d, color)
        for i, name in enumerate(names):
            color = f"C{(i + 1) % 10}"
            ax.plot(k, [v / d for v in traj["baseline_errors"][name]], ls="--", lw=1.0, color=color,
                    label=baseline_display(name))
            _band(ax, k, traj.get("baseline_errors_ci99", {}).get(name), d, color, alpha=0.12)
        ax.set_xlabel("in-context examples")
        ax.set_ylabel("squared error" + (f" / d (d={d})" if d != 1 else ""))
        ax.set_title(title or f"{traj.get('model', 'model')} on {traj.get('task')}"
                     + (f" ({traj['shift']})" if traj.get("shift") else ""))
        typical = [traj["baseline_errors"].get("zero", [])] + [traj["model_errors"][s] for s in steps]
        _ylim(ax, typical, d)
        ax.legend(frameon=False, ncol=2 if len(steps) + len(names) > 7 else 1, fontsize=6.5)

        xs = [int(s) for s in steps]
        ys = [traj["icl_scores"][s] for s in steps]
        ax2.plot(xs, ys, "o-", color="C0", lw=1.5, ms=3)
        ci = traj.get("icl_score_ci95") or {}
        if all(s in ci for s in steps):
            ax2.fill_between(xs, [ci[s][0] for s in steps], [ci[s][1] for s in steps], color="C0", alpha=0.2, lw=0)
        ax2.axhline(1.0, color="gray", lw=0.8, ls="--")
        ax2.axhline(0.0, color="gray", lw=0.8, ls=":")
        ax2.set_xlabel("training step")
        ax2.set_ylabel(f"ICL score (vs {baseline_display(traj.get('baseline', 'baseline'))})")
        ax2.set_title("ICL regression score")
        fig.tight_layout()
        fig.savefig(out_png)
        plt.close(fig)
    cols = [(f"step {s}", traj["model_errors"][s], traj.get("model_errors_ci99", {}).get(s)) for s in steps]
    cols += [(baseline_display(n), traj["baseline_errors"][n], traj.get("baseline_errors_ci99", {}).get(n)) for n in names]
    header = ["context_length"] + [c[0] for c in cols] + [f"{c[0]} lo99" for c in cols] + [f"{c[0]} hi99" for c in cols]
    rows = [[kk] + [c[1][j] for c in cols] + [(c[2][0][j] if c[2] else "") for c in cols]
            + [(c[2][1][j] if c[2] else "") for c in cols] for j, kk in enumerate(k)]
    _write_csv(out_png.with_suffix(".csv"), header, rows)
    _write_csv(out_png.with_name(out_png.stem + "_scores.csv"), ["step", "icl_score", "ci95_lo", "ci95_hi"],
               [[s, traj["icl_scores"][s], *(ci.get(s) or ["", ""])] for s in steps])
    return out_png


def cross_task(results: dict, out_png, title: str | None = None, normalize: bool = True) -> Path:
    """A model on a task it was not trained on (paper Fig. 4b): its error on the evaluation task against that
    task's baselines (99% bands), and, when ``results["train_task_model_errors"]`` is present, the same model on
    its own training task (dotted). Writes ``out_png`` and the curves as ``<stem>.csv``."""
    out_png = Path(out_png)
    d = error_scale(results, normalize)
    k = results["context_lengths"]
    model = results.get("model", "model")
    curves = [(f"{model} on {results.get('task')} (score {results['icl_score']:.3f})", results["model_errors"],
               results.get("model_errors_ci99"), dict(lw=1.8, color="C0"))]
    for i, (name, e) in enumerate(results["baseline_errors"].items()):
        curves.append((f"{baseline_display(name)} on {results.get('task')}", e,
                       results.get("baseline_errors_ci99", {}).get(name), dict(lw=1.1, ls="--", color=f"C{i + 1}")))
    own = results.get("train_task_model_errors")
    if own:
        ko = results.get("train_task_context_lengths", list(range(len(own))))
        sc = results.get("train_task_icl_score")
        lab = f"{model} on {results.get('train_task')} (trained" + (f", score {sc:.3f})" if sc is not None else ")")
        do = (results.get("train_task_config", {}).get("n_dims", d) if d != 1 else 1) or 1
        curves.append((lab, own, results.get("train_task_model_errors_ci99"), dict(lw=1.4, ls=":", color="0.3"), ko, do))
    with plt.rc_context(PAPER_RC):
        fig, ax = plt.subplots(figsize=(3.8, 2.7))
        for c in curves:
            label, mean, ci, style = c[:4]
            kk, dd = (c[4], c[5]) if len(c) > 4 else (k, d)
            ax.plot(kk, [v / dd for v in mean], label=label, **style)
            _band(ax, kk, ci, dd, style["color"])
        ax.set_xlabel("in-context examples")
        ax.set_ylabel("squared error" + (f" / d (d={d})" if d != 1 else ""))
        ax.set_title(title or f"trained on {results.get('train_task')}, evaluated on {results.get('task')}")
        _ylim(ax, [results["baseline_errors"].get("zero", []), results["model_errors"]], d)
        ax.legend(frameon=False, fontsize=6.5)
        fig.tight_layout()
        fig.savefig(out_png)
        plt.close(fig)
    n = max(len(c[1]) for c in curves)
    header = ["context_length"] + [c[0] for c in curves] + [f"{c[0]} lo99" for c in curves] + [f"{c[0]} hi99" for c in curves]

    def at(seq, j):
        return seq[j] if seq is not None and j < len(seq) else ""

    rows = [[j] + [at(c[1], j) for c in curves] + [at(c[2][0] if c[2] else None, j) for c in curves]
            + [at(c[2][1] if c[2] else None, j) for c in curves] for j in range(n)]
    _write_csv(out_png.with_suffix(".csv"), header, rows)
    return out_png


def heatmap(scores: dict, tasks: list[str], models: list[str], png, title: str | None = None) -> Path:
    """ICL regression scores as a model x task matrix (rows: ``models``, columns: ``tasks``, like the paper's
    Table 3), each cell annotated; missing pairs are grey "–". ``scores[(task, model)] = score``.
    Writes ``png`` and ``<stem>.csv`` (one row per model, one column per task; empty = missing)."""
    import numpy as np

    png = Path(png)
    m = np.full((len(models), len(tasks)), np.nan)
    for i, model in enumerate(models):
        for j, task in enumerate(tasks):
            v = scores.get((task, model))
            if v is not None:
                m[i, j] = float(v)
    finite = m[np.isfinite(m)]
    vmin = min(0.0, float(finite.min())) if finite.size else 0.0
    vmax = max(1.0, float(finite.max())) if finite.size else 1.0
    with plt.rc_context(PAPER_RC):
        fig, ax = plt.subplots(figsize=(1.2 + 0.85 * len(tasks), 0.9 + 0.32 * len(models)))
        cmap = plt.get_cmap("viridis").with_extremes(bad="0.85")
        im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
        ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
        ax.set_yticks(range(len(models)), models)
        for i in range(len(models)):
            for j in range(len(tasks)):
                v = m[i, j]
                txt = "–" if not np.isfinite(v) else f"{v:.2f}"
                light = np.isfinite(v) and (v - vmin) / (vmax - vmin or 1) < 0.55
                ax.text(j, i, txt, ha="center", va="center", fontsize=7, color="white" if light else "black")
        ax.spines[:].set_visible(False)
        fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="ICL regression score")
        ax.set_title(title or "ICL regression score")
        fig.tight_layout()
        fig.savefig(png)
        plt.close(fig)
    rows = [[model] + [("" if not np.isfinite(m[i, j]) else m[i, j]) for j in range(len(tasks))]
            for i, model in enumerate(models)]
    _write_csv(png.with_suffix(".csv"), ["model", *tasks], rows)
    return png
