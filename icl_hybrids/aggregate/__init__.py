"""Aggregate a sweep directory into the paper's Table 3: task x model ICL regression scores with 95% CIs,
the paper's values beside ours, missing / failed / unfinished runs marked, hardware totals, and figures.

    python -m icl_hybrids.aggregate dir=multirun_outputs/paper                # table3.md, table3.csv, table3.png
    python -m icl_hybrids.aggregate dir=multirun_outputs/cpu figures=true     # + figures/<task>_errors.png overlays
    python -m icl_hybrids.aggregate dir=DIR out=reports/ figures=true per_run=true   # + one error plot per run
    python -m icl_hybrids.aggregate dir=DIR best_over=optim.lr                # model selection on validation prompts

Input: every ``<task>/<name>/seed<k>/`` under DIR (results.json, config.yaml). The expected grid comes from
DIR/multirun.yaml (Hydra's record of the sweep: its sweeper params and command line), so jobs that never
started are listed as ``missing``; a run directory without results.json is ``failed`` (it started and
never evaluated; submitit's job logs say why: DIR/.submitit/), one whose results.json is not finished at
max_steps is ``unfinished``, one whose training stopped on a non-finite loss is ``diverged``.

Layout: ``runs`` (discovery, state, cells and their statistics), ``tables`` (markdown / CSV), ``figures``
(heatmap, error overlays), ``__main__`` (the CLI).

Cells: one seed -> the score and its 95% bootstrap interval over evaluation prompts (results.json
``icl_score_ci95``); several seeds -> the mean over seeds and a 95% t-interval over seeds (the prompt
intervals, averaged, are in the CSV).
"""
from __future__ import annotations

from .figures import heatmap, overlay_error_curves, write_figures
from .runs import MODELS, TASKS, Cell, Run, collect, expected_jobs, find_runs, order, run_status, task_label
from .tables import cell_text, hardware, write_tables


def main(argv=None) -> int:
    from .__main__ import main as _main

    return _main(argv)


__all__ = ["MODELS", "TASKS", "Cell", "Run", "cell_text", "collect", "expected_jobs", "find_runs", "hardware",
           "heatmap", "main", "order", "overlay_error_curves", "run_status", "task_label", "write_figures",
           "write_tables"]
