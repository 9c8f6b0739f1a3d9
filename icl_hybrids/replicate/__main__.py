"""python -m icl_hybrids.replicate plan|run|report key=value ... (docs/cli.md)"""
from __future__ import annotations

import sys
from pathlib import Path

from . import __doc__ as DOC
from .plan import DEFAULT_ROOT, PREFIX, format_plan, group_names, load_plan

PROG = "python -m icl_hybrids.replicate"
#: each sub-command's keys and their defaults; plan and run also take Hydra overrides for every group's jobs
KEYS = {
    "plan": {"dir": DEFAULT_ROOT, "only": None},
    "run": {"jobs": 2, "dir": DEFAULT_ROOT, "only": None},
    "report": {"dir": DEFAULT_ROOT, "doc": "docs/replication.md", "fig_dir": "docs/replication"},
}
WHAT = {"plan": "the groups and their jobs, with their status and sizes (nothing run)",
        "run": "run every group, resumably (rerun: finished runs are skipped, unfinished ones resumed)",
        "report": "docs/replication.md + figures from a replication directory"}
HELP = {"dir": "the replication directory", "only": "comma-separated groups (c1_linear or replicate_cpu_c1_linear)",
        "jobs": "(group, model) multiruns side by side", "doc": "the report to write",
        "fig_dir": "where the figures (and verdicts.json) go"}
OVERRIDES = "\n\nAny other key=value (e.g. trainer.max_steps=100, seed=0): a Hydra override for every group's jobs."


def _usage(msg: str) -> str:
    return f"{msg}: expected a sub-command, one of: {', '.join(KEYS)} (see {PROG} --help)"


def parse(argv: list[str]) -> tuple[str, dict, list[str]] | None:
    """(sub-command, its typed keys, Hydra overrides), or None after --help; bad input raises ConfigError."""
    from ..cli import parse_kv
    from ..config import ConfigError

    if not argv or argv[0] in ("-h", "--help"):
        if argv:
            print(DOC.strip() + "\n\nsub-commands (" + PROG + " <sub-command> --help lists its keys):")
            for c, w in WHAT.items():
                print(f"  {c:<7} {w}")
            return None
        raise ConfigError(_usage("no sub-command"))
    cmd, rest = argv[0], list(argv[1:])
    if cmd not in KEYS:
        raise ConfigError(_usage(cmd))
    keys = KEYS[cmd]
    own = [a for a in rest if a in ("-h", "--help") or a.partition("=")[0] in keys or cmd == "report"]
    overrides = [a for a in rest if a not in own]
    for o in overrides:
        if o.startswith("-") or ("=" not in o and not o.startswith("~")):
            raise ConfigError(f"{o}: expected key=value with key one of: {', '.join(keys)}, or a Hydra override "
                              f"(see {PROG} {cmd} --help)")
    doc = f"{PROG} {cmd}: {WHAT[cmd]}." + (OVERRIDES if cmd != "report" else "")
    a = parse_kv(own, keys, prog=f"{PROG} {cmd}", doc=doc, help=HELP)
    if a is None:
        return None
    for k in ("dir", "doc", "fig_dir"):
        if k in a and (a[k] in (None, "")):
            raise ConfigError(f"{k}=: expected a path")
    if "jobs" in a and a["jobs"] < 1:
        raise ConfigError(f"jobs={a['jobs']}: expected an integer >= 1")
    if "only" in a and a["only"] is not None:
        only = a["only"] if isinstance(a["only"], list) else str(a["only"]).split(",")
        only = [str(g).strip() for g in only if str(g).strip()]
        known = group_names()
        for g in only:
            if g not in known and PREFIX + g not in known:
                raise ConfigError(f"only={g}: unknown group (allowed: {', '.join(n[len(PREFIX):] for n in known)})")
        a["only"] = only or None
    return cmd, a, overrides


def main(argv=None) -> int:
    from ..config import ConfigError

    try:
        parsed = parse(list(sys.argv[1:] if argv is None else argv))
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
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
