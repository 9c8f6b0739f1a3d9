"""python -m icl_hybrids.aggregate <sweep_dir> [--out D] [--figures | --figures-only] [--per-run] [--no-paper]
[--best-over KEY [--val-seed-offset N] [--val-prompts N]]"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __doc__ as DOC
from .figures import write_figures
from .runs import expected_jobs, find_runs
from .tables import write_tables


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m icl_hybrids.aggregate", description=DOC.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep_dir", help="a sweep directory, e.g. multirun_outputs/paper")
    ap.add_argument("--out", default=None, help="where to write (default: the sweep directory)")
    ap.add_argument("--figures", action="store_true", help="also per-task error-vs-context overlays")
    ap.add_argument("--figures-only", action="store_true", help="only the figures (make figures)")
    ap.add_argument("--per-run", action="store_true", help="with --figures: one error plot per run too")
    ap.add_argument("--no-paper", action="store_true", help="leave the paper's Table 3 values out")
    ap.add_argument("--best-over", metavar="KEY", default=None,
                    help="per task x model cell, the value of the swept KEY (e.g. optim.lr) with the best score on "
                         "validation prompts, and the test score of that choice (best_over_KEY.md/.csv)")
    ap.add_argument("--val-seed-offset", type=int, default=None,
                    help="with --best-over: the validation prompts' seed offset (default 2000006)")
    ap.add_argument("--val-prompts", type=int, default=None,
                    help="with --best-over: validation prompts per run (default: the run's eval.n_prompts)")
    args = ap.parse_args(argv)
    d = Path(args.sweep_dir)
    if not d.is_dir():
        print(f"error: {d}: no such directory", file=sys.stderr)
        return 2
    if not find_runs(d) and expected_jobs(d) is None:
        print(f"error: {d}: no runs found (no <task>/<name>/seed<k>/ with results.json or config.yaml)",
              file=sys.stderr)
        return 2
    if args.best_over:
        from .best import DEFAULT_VAL_SEED_OFFSET, write_best

        out = write_best(d, args.best_over, args.out, args.val_seed_offset or DEFAULT_VAL_SEED_OFFSET,
                         args.val_prompts)
        if not out["rows"]:
            print(f"error: {d}: no run directory varies {args.best_over} (<task>/<name>/{args.best_over}=<v>/seed<k>)",
                  file=sys.stderr)
            return 2
        print(out["md"].read_text())
        print(f"wrote {out['md']}, {out['csv']}")
        return 0
    if not args.figures_only:
        from ..reference import rescore

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
