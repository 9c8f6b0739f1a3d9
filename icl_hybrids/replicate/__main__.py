"""python -m icl_hybrids.replicate plan|run|report key=value ... (docs/cli.md)"""
from __future__ import annotations

import sys
from pathlib import Path

from . import __doc__ as DOC
from .plan import DEFAULT_ROOT, OPTIONAL, PREFIX, format_plan, group_names, load_plan

PROG = "python -m icl_hybrids.replicate"
#: each sub-command's keys and their defaults; plan and run also take Hydra overrides for every group's jobs
KEYS = {
    "plan": {"dir": DEFAULT_ROOT, "only": None, "optional": False},
    "run": {"jobs": 2, "dir": DEFAULT_ROOT, "only": None, "optional": False},
    "report": {"dir": DEFAULT_ROOT, "doc": "docs/replication.md", "fig_dir": "docs/replication"},
}
WHAT = {"plan": "the groups and their jobs, with their status and sizes (nothing run)",
        "run": "run every group, resumably (rerun: finished runs are skipped, unfinished ones resumed)",
        "report": "docs/replication.md + figures from a replication directory"}
HELP = {"optional": f"also the optional groups ({OPTIONAL}*: the outliers under model/profile=paper_code; "
                    "about 12% more time) when only= is not given",
        "dir": "the replication directory", "only": "comma-separated groups (c1_linear or replicate_cpu_c1_linear)",
        "jobs": "(group, model) multiruns side by side", "doc": "the report to write",
        "fig_dir": "where the figures (and verdicts.json) go"}


def parse(argv: list[str]) -> tuple[str, dict, list[str]] | None:
    """(sub-command, its typed keys, Hydra overrides), or None after --help; bad input raises ConfigError."""
    from ..cli import parse_subcommand
    from ..config import ConfigError

    parsed = parse_subcommand(argv, KEYS, prog=PROG, doc=DOC, what=WHAT, help=HELP, no_overrides=("report",))
    if parsed is None:
        return None
    cmd, a, overrides = parsed
    for k in ("dir", "doc", "fig_dir"):
        if k in a and (a[k] in (None, "")):
            raise ConfigError(f"{k}=: expected a path")
    if "only" in a and a["only"] is not None:
        only = a["only"] if isinstance(a["only"], list) else str(a["only"]).split(",")
        only = [str(g).strip() for g in only if str(g).strip()]
        known = group_names()
        for g in only:
            if g not in known and PREFIX + g not in known:
                raise ConfigError(f"only={g}: unknown group (allowed: {', '.join(n[len(PREFIX):] for n in known)})")
        a["only"] = only or None
    if cmd in ("plan", "run") and a["only"] is None and not a["optional"]:
        a["only"] = [g for g in group_names() if not g[len(PREFIX):].startswith(OPTIONAL)]
    return cmd, a, overrides


def _main(argv: list[str]) -> int:
    from ..config import ConfigError

    parsed = parse(argv)
    if parsed is None:
        return 0
    cmd, a, overrides = parsed
    if cmd == "report":
        if not Path(a["dir"]).is_dir():
            raise ConfigError(f"dir={a['dir']}: no such directory (run `{PROG} run` first)")
        from .report import report

        print(report(a["dir"], a["doc"], a["fig_dir"]))
        return 0
    # the plan's own sweep directories unless dir= names another replication directory
    root = None if Path(a["dir"]) == Path(DEFAULT_ROOT) else a["dir"]
    if cmd == "plan":
        print(format_plan(load_plan(root, overrides, a["only"])))
        return 0
    from .runner import run

    return run(a["jobs"], root, overrides, a["only"])


def main(argv=None) -> int:
    from ..cli import run_tool

    return run_tool(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
