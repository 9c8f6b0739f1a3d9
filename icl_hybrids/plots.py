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
LABELS = {"zero": "zero estimator", "averaging": "averaging", "knn": "3-NN", "least_squares": "least squares",
          "ridge": "ridge", "lasso": "Lasso (α=0.001)", "two_layer_nn": "2-layer NN (GD)",
          "decision_tree": "greedy tree", "gradient_boosting": "gradient boosting",
          "sparse_parity_bayes": "Bayes-optimal", "mqar_lookup": "exact lookup"}


def _write_csv(path: Path, header: list[str], rows) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def error_curves(results: dict, out_png, title: str | None = None, normalize: bool = True) -> Path:
    """Squared error vs context length for the model and every baseline, with 99% bands.
    ``normalize`` divides by the task's input dimension (Garg et al.'s convention for regression tasks)."""
    out_png = Path(out_png)
    d = results.get("task_config", {}).get("n_dims", 1) if normalize and results.get("task") not in ("sparse_parity",) else 1
    k = results["context_lengths"]
    curves = [(f"{results.get('model', 'model')} (ICL score {results['icl_score']:.3f})", results["model_errors"],
               results.get("model_errors_ci99"))]
    for name, e in results["baseline_errors"].items():
        curves.append((LABELS.get(name, name), e, results.get("baseline_errors_ci99", {}).get(name)))
    with plt.rc_context(PAPER_RC):
        fig, ax = plt.subplots(figsize=(3.6, 2.6))
        for i, (label, mean, ci) in enumerate(curves):
            y = [v / d for v in mean]
            style = dict(lw=1.8, color="C0") if i == 0 else dict(lw=1.1, ls="--", color=f"C{i}")
            ax.plot(k, y, label=label, **style)
            if ci:
                ax.fill_between(k, [v / d for v in ci[0]], [v / d for v in ci[1]], alpha=0.2, color=style["color"], lw=0)
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
