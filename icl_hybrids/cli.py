"""Shared Hydra entry point: one-line errors for bad input (no traceback, exit 2) and for runs that cannot
go on (``RunFailed``: diverged, no disk space; exit 1)."""
from __future__ import annotations

import importlib
import sys

from hydra.errors import CompactHydraException

from .config import CONF_DIR, ConfigError, check_group_choices


class RunFailed(RuntimeError):
    """A run that cannot go on (diverged, disk full, ...): one line on stderr, exit status 1."""

    exit_code = 1


def fail(msg: str, code: int = 2):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def job_failed(msg: str, code: int = 2):
    """``fail`` for the job of a Hydra entry point. In a multirun the job must not exit the process: that ends
    the sweep with the basic launcher and takes the neighbouring jobs' joblib workers down with it. There the
    one line is printed and the job raises ``JobFailed``: Hydra records the job as failed, the other jobs go
    on, and at the end the sweep prints the first failure's line (a ``CompactHydraException``: no traceback)
    and exits 1."""
    if not _in_multirun():
        fail(msg, code)
    print(f"error: {msg}", file=sys.stderr, flush=True)
    raise JobFailed(msg)


class JobFailed(CompactHydraException):
    """A multirun job stopped on a one-line error (``job_failed``); its str is what the sweep prints last."""

    def __init__(self, msg: str):
        super().__init__(f"error: {msg} (a job of this multirun; the others ran: rerun the sweep once it is "
                         "fixed, finished runs are skipped)")
        self.msg = msg

    def __reduce__(self):  # joblib / submitit send it back from the worker
        return (type(self), (self.msg,))


def parse_kv(argv: list[str], defaults: dict, *, prog: str, doc: str, help: dict | None = None) -> dict | None:
    """The tools' shared argument style (docs/cli.md): ``key=value`` over ``defaults``, values parsed like Hydra's
    (``true``, ``3``, ``1e-4``, ``[a,b]``, ``null``) and typed by the default (a ``None`` default takes anything;
    a string or ``None`` key whose value Hydra cannot parse, e.g. a path with ``=`` in it, takes the text as given).
    ``-h``/``--help`` prints ``doc`` and the keys and returns None; bad input raises ``ConfigError``, one line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if any(a in ("-h", "--help") for a in argv):
        print(doc.strip() + "\n\nkeys (key=value; default):")
        for k, v in defaults.items():
            print(f"  {k}={'null' if v is None else str(v).lower() if isinstance(v, bool) else v}"
                  + (f"    {help[k]}" if help and k in help else ""))
        return None
    out, allowed = dict(defaults), ", ".join(defaults)
    parser = OverridesParser.create()
    for a in argv:
        key, eq, raw = a.partition("=")
        if not defaults:
            raise ConfigError(f"{a}: {prog} takes no arguments (see {prog} --help)")
        if not eq or key not in defaults:
            raise ConfigError(f"{a}: expected key=value with key one of: {allowed} (see {prog} --help)")
        want = defaults[key]
        try:
            ov = parser.parse_overrides([f"{key}={raw}"])[0] if raw != "" else None
            value = "" if ov is None else raw if ov.is_sweep_override() else ov.value()  # a,b: a plain string
        except Exception as e:  # noqa: BLE001 - Hydra's parse error, or a plain one from its lexer on some input
            if not (want is None or isinstance(want, str)):
                raise ConfigError(f"{a}: {_first_line(e)}") from None
            value = raw  # a string key (a path such as a/optim.lr=0.1 or ~/x): the text as given
        ok = (want is None or (isinstance(want, bool) and isinstance(value, bool))
              or (not isinstance(want, bool) and isinstance(want, int) and isinstance(value, int)
                  and not isinstance(value, bool))
              or (isinstance(want, float) and isinstance(value, (int, float)) and not isinstance(value, bool))
              or (isinstance(want, str) and isinstance(value, (str, int, float)) and not isinstance(value, bool)))
        if not ok:
            raise ConfigError(f"{key}={raw}: expected {type(want).__name__}")
        out[key] = str(value) if isinstance(want, str) else value
    return out


def parse_subcommand(argv: list[str], keys: dict[str, dict], *, prog: str, doc: str, what: dict[str, str],
                     help: dict | None = None, default: str | None = None,
                     no_overrides: tuple[str, ...] = ()) -> tuple[str, dict, list[str]] | None:
    """A tool with sub-commands (docs/cli.md): ``<sub-command> key=value ...``. Each sub-command's own keys
    (``keys[cmd]``, typed by their defaults through :func:`parse_kv`) are taken out; every other
    ``key=value`` is returned as a Hydra override (a sub-command in ``no_overrides`` takes none). ``default``:
    the sub-command when the first word is not one. Returns ``(cmd, typed keys, overrides)``, or None after
    ``--help``; bad input raises ``ConfigError`` (one line)."""
    listing = "\n\nsub-commands (" + prog + " <sub-command> --help lists its keys):\n" + "\n".join(
        f"  {c:<7} {w}" for c, w in what.items())
    if argv[:1] in (["-h"], ["--help"]) or (default is None and not argv):
        if argv:
            print(doc.strip() + listing)
            return None
        raise ConfigError(f"no sub-command: expected one of: {', '.join(keys)} (see {prog} --help)")
    if argv[0] in keys:
        cmd, rest = argv[0], list(argv[1:])
    elif default is not None:
        cmd, rest = default, list(argv)
    else:
        raise ConfigError(f"{argv[0]}: expected a sub-command, one of: {', '.join(keys)} (see {prog} --help)")
    own_keys = keys[cmd]
    own = [a for a in rest if a in ("-h", "--help") or a.partition("=")[0] in own_keys or cmd in no_overrides]
    overrides = [a for a in rest if a not in own and a not in ("-m", "--multirun")]
    for o in overrides:
        if o.startswith("-") or ("=" not in o and not o.startswith("~")):
            raise ConfigError(f"{o}: expected key=value with key one of: {', '.join(own_keys)}, or a Hydra override "
                              f"(see {prog} {cmd} --help)")
    sub_doc = f"{prog} {cmd}: {what[cmd]}." + ("" if cmd in no_overrides else
                                                "\n\nAny other key=value is a Hydra override (of every job).")
    a = parse_kv(own, own_keys, prog=f"{prog} {cmd}", doc=sub_doc, help=help)
    if a is None:
        return None
    if "jobs" in a and a["jobs"] < 1:
        raise ConfigError(f"jobs={a['jobs']}: expected an integer >= 1")
    return cmd, a, overrides


def run_tool(body, argv) -> int:
    """``body(argv)`` with the tools' error convention: a ``ConfigError`` is one line on stderr, exit 2."""
    try:
        return body(list(sys.argv[1:] if argv is None else argv))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def _check_sweep_syntax(overrides: list[str], multirun: bool) -> None:
    """Parse the overrides once: a lexer error (e.g. an unquoted non-ASCII path) is one line, and a sweep
    (``model=gpt2,llama``) without ``-m`` says to add it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for ov in overrides:
        try:
            (parsed,) = parser.parse_overrides([ov])
        except HydraException as e:
            raise ConfigError(f"{ov}: cannot parse ({_first_line(e)}); quote values with special or non-ASCII "
                              f"characters, e.g. 'out_root=\"/data/ré sults\"'") from None
        except Exception as e:  # noqa: BLE001 - the lexer raises plain exceptions on some input
            raise ConfigError(f"{ov}: cannot parse ({type(e).__name__}); quote values with special or non-ASCII "
                              f"characters, e.g. 'out_root=\"/data/ré sults\"'") from None
        if parsed.is_sweep_override() and not multirun:
            raise ConfigError(f"{ov}: several values sweep; add -m (python -m icl_hybrids -m {ov} ...)")


def _precheck(config_name: str, overrides: list[str], check=None) -> None:
    """Compose once before Hydra runs so unknown groups/keys become one-line errors; with ``check``, the
    whole run configuration is validated too, before Hydra creates the run directory."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from .config import add_config_dirs, searchpath_override, user_dirs_from_argv

    multirun = any(o in ("-m", "--multirun") for o in sys.argv[1:])
    _check_sweep_syntax(overrides, multirun)
    add_config_dirs(user_dirs_from_argv(sys.argv[1:]))  # a user's own config directory: its groups count
    if not any(o.lstrip("+").startswith("hydra.searchpath=") for o in overrides):
        overrides = [*overrides, *searchpath_override()]
    check_group_choices(overrides)
    if multirun:
        return  # sweeps: every job is validated when it starts
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            compose(config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_first_line(e)) from None
    if check is not None:
        from .config import compose_config

        mod, fn = check.split(":")
        getattr(importlib.import_module(mod), fn)(compose_config(overrides, config_name))


_VALUE_FLAGS = ("--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp", "--info", "-i")


def _overrides(argv: list[str]) -> list[str]:
    """The key=value overrides of a Hydra command line (flags and their values left out)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in _VALUE_FLAGS:
            skip = True
        elif not a.startswith("-"):
            out.append(a)
    return out


def hydra_entry(config_name: str, target: str, check: str | None = None):
    import hydra

    from .config import normalize_overrides

    sys.argv = [sys.argv[0], *normalize_overrides(sys.argv[1:])]  # baseline.<name>.<key>=v needs Hydra's ++
    overrides = _overrides(sys.argv[1:])
    if "--help" not in sys.argv and "-h" not in sys.argv and "--cfg" not in sys.argv:
        try:
            _precheck(config_name, overrides, check)
        except ConfigError as e:
            fail(str(e))
        except RunFailed as e:
            fail(str(e), RunFailed.exit_code)
    mod, fn = target.split(":")

    @hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")
    def _main(cfg):
        func = getattr(importlib.import_module(mod), fn)
        try:
            return func(cfg)
        except ConfigError as e:
            job_failed(str(e))
        except RunFailed as e:
            job_failed(str(e), RunFailed.exit_code)

    _main()
