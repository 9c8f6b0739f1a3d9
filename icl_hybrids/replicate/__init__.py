"""A reduced-scale replication of the findings of arXiv 2411.03945 on a 2-core CPU (``make replicate-cpu``).

    python -m icl_hybrids.replicate plan [dir=D] [only=G1,G2] [key=value ...]   # groups, jobs, status, cost
    python -m icl_hybrids.replicate run [jobs=2] [dir=D] [only=G1,G2] [optional=true] [key=value ...]
    python -m icl_hybrids.replicate report [dir=D] [doc=docs/replication.md] [fig_dir=docs/replication]

**Plan.** Every claim group is a Hydra experiment, ``conf/experiment/replicate_cpu_<group>.yaml`` (which
includes ``replicate_cpu.yaml``, the shared settings): its ``hydra.sweeper.params`` are the grid (task, models,
seeds), its body the sizes. Nothing here lists models: the jobs come from ``sweep.plan`` on each group, and
the roles a claim needs (attention-only vs Mamba-containing models, the paper's outliers) are read from the
model configs (``conf/model``) and from the paper's Table 3 (``icl_hybrids.paper``).

**Optional groups.** ``c6_*`` (the paper's outliers under ``model/profile=paper_code``) run only with
``optional=true`` (``make replicate-cpu OPTIONAL=true``) or when ``only=`` names them: the issue's budget is
75 minutes for the claims C1-C5, and the outlier question is "if the budget allows".

**Run.** Each (group, model) pair is one Hydra multirun over the group's seeds, started through the sweep
runner (``icl_hybrids.sweep.run_parallel`` over ``experiment=<group> model=<model>``, one process); ``jobs`` of
them run side by side (longest first), one CPU thread per job. Rerunning skips finished runs and resumes
unfinished ones (the training run's own resume); pairs whose runs are all finished are not started at all.
Wall time per pair and per session is appended to ``DIR/replicate_run.json``.

**Report.** ``report`` reads every run's ``results.json``, scores each run against the baselines a claim
needs (from the per-position errors in results.json), and decides each claim by the rules in ``RULES``
(``judge``): a cell's interval is the 95% t-interval of its mean over seeds (Welch's interval for a difference
of two cells); a check is *yes* when the whole interval is on the claimed side of its threshold, *no* when the
whole interval is on the other side, *unclear* otherwise; a claim is **replicated** when all its checks are yes,
**not replicated** when any is no, **inconclusive at this scale** otherwise (or with fewer than 2 finished
seeds in a cell). The thresholds are fixed constants, stated in the report.

Layout: ``plan`` (groups, jobs, model parts, cost), ``runner`` (the resumable runner), ``stats`` (scores,
intervals, checks), ``judge`` (thresholds, cells, verdicts), ``report`` (docs/replication.md and figures),
``__main__`` (the CLI).
"""
from __future__ import annotations

from .judge import BEATS, LEARNED, MARGIN, NEAR, OUTLIERS, RULES, SIBLING, SOLVED, CellData, Check, Verdict, collect, judge
from .plan import DEFAULT_ROOT, OPTIONAL, PREFIX, RUN_LOG, Group, format_plan, group_names, load_plan, model_parts, unit_cost
from .report import figures, max_side_by_side, not_started, report, session_wall
from .runner import machine, run
from .stats import CONF, above, baseline_score, below, combine, score_against, t_interval, welch_interval


def main(argv=None) -> int:
    from .__main__ import main as _main

    return _main(argv)


__all__ = ["BEATS", "CONF", "DEFAULT_ROOT", "LEARNED", "MARGIN", "NEAR", "OPTIONAL", "OUTLIERS", "PREFIX", "RULES",
           "RUN_LOG", "SIBLING", "SOLVED", "CellData", "Check", "Group", "Verdict", "above", "baseline_score", "below",
           "collect", "combine", "figures", "format_plan", "group_names", "judge", "load_plan", "machine", "main",
           "max_side_by_side", "model_parts", "not_started", "report", "run", "score_against", "session_wall",
           "t_interval", "unit_cost", "welch_interval"]
