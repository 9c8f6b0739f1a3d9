"""python -m icl_hybrids.aggregate dir=<sweep_dir> [out=D] [figures=true | figures_only=true] [per_run=true]
[paper=false] [best_over=KEY [val_seed_offset=N] [val_prompts=N]]  (docs/cli.md)"""
from __future__ import annotations

import sys
from pathlib import Path

from . import __doc__ as DOC
from .best import DEFAULT_VAL_SEED_OFFSET

PROG = "python -m icl_hybrids.aggregate"
DEFAULTS = {"dir": None, "out": None, "figures": False, "figures_only": False, "per_run": False, "paper": True,
            "best_over": None, "val_seed_offset": DEFAULT_VAL_SEED_OFFSET, "val_prompts": None}
HELP = {"dir": "a sweep directory, e.g. multirun_outputs/paper (required)",
        "out": "where to write (default: the sweep directory)",
        "figures": "also per-task error-vs-context overlays",
        "figures_only": "only the figures (make figures)",
        "per_run": "with figures: one error plot per run too",
        "paper": "false: leave the paper's Table 3 values out",
        "best_over": "per task x model cell, the value of the swept KEY (e.g. optim.lr) with the best score on "
                     "validation prompts, and the test score of that choice (best_over_KEY.md/.csv)",
        "val_seed_offset": "with best_over: the validation prompts' seed offset",
        "val_prompts": "with best_over: validation prompts per run (default: the run's eval.n_prompts)"}


def parse(argv) -> dict | None:
    """The typed arguments (None after --help); bad input raises ConfigError (one line)."""
    from ..cli import parse_kv
    from ..config import ConfigError

    a = parse_kv(list(argv), DEFAULTS, prog=PROG, doc=DOC, help=HELP)
    if a is None:
        return None
    if a["dir"] in (None, ""):
        raise ConfigError(f"dir=: a sweep directory is required, e.g. {PROG} dir=multirun_outputs/cpu")
    for k in ("dir", "out", "best_over"):
        if a[k] is not None and not isinstance(a[k], str):
            a[k] = str(a[k])
    if a["val_prompts"] is not None and (isinstance(a["val_prompts"], bool) or not isinstance(a["val_prompts"], int)
                                         or a["val_prompts"] < 1):
        raise ConfigError(f"val_prompts={a['val_prompts']}: expected a positive integer or null")
    return a


def main(argv=None) -> int:
    from ..config import ConfigError

    try:
        a = parse(sys.argv[1:] if argv is None else argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a is None:
        return 0
    from .figures import write_figures
    from .runs import expected_jobs, find_runs
    from .tables import write_tables

    d = Path(a["dir"])
    if not d.is_dir():
        print(f"error: dir={d}: no such directory", file=sys.stderr)
        return 2
    if not find_runs(d) and expected_jobs(d) is None:
        print(f"error: dir={d}: no runs found (no <task>/<name>/seed<k>/ with results.json or config.yaml)",
              file=sys.stderr)
        return 2
    if a["best_over"]:
        from .best import write_best

        key = a["best_over"]
        out = write_best(d, key, a["out"], a["val_seed_offset"], a["val_prompts"])
        if not out["rows"]:
            print(f"error: best_over={key}: no run directory under {d} varies it (<task>/<name>/{key}=<v>/seed<k>)",
                  file=sys.stderr)
            return 2
        print(out["md"].read_text())
        print(f"wrote {out['md']}, {out['csv']}")
        return 0
    if not a["figures_only"]:
        from ..reference import rescore

        rescore(d)  # decision tree / sparse parity vs the sweep's trained GPT-2 / Mamba (idempotent)
        out = write_tables(d, a["out"], paper=a["paper"])
        print(out["md"].read_text())
        print(f"wrote {out['md']}, {out['csv']}, {out['hardware_csv']}, {out['png']}")
    if a["figures"] or a["figures_only"]:
        figs = write_figures(d, a["out"], per_run=a["per_run"])
        print(f"wrote {len(figs)} figure(s) under {(Path(a['out']) if a['out'] else d) / 'figures'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
