"""The one command-line convention (docs/cli.md), in-process: every tool answers --help with its keys, takes
key=value typed by the defaults, and rejects bad input with one line naming the key, exit status 2."""
import pytest

from icl_hybrids import doctor, sweep
from icl_hybrids import replicate as R
from icl_hybrids.aggregate.__main__ import main as aggregate_main
from icl_hybrids.cli import parse_kv, parse_subcommand
from icl_hybrids.config import ConfigError
from icl_hybrids.models.__main__ import main as models_main

KEYS = {"plan": {"status": False, "n": 3}, "run": {"jobs": 2}, "report": {"dir": "x"}}
WHAT = {"plan": "list", "run": "run", "report": "report"}


def sub(argv, **kw):
    return parse_subcommand(argv, KEYS, prog="tool", doc="the tool", what=WHAT, **kw)


def test_parse_kv_types_and_errors():
    d = {"n": 1, "x": 0.5, "flag": False, "name": "a", "any": None}
    assert parse_kv(["n=3", "x=1e-4", "flag=true", "name=b", "any=[1,2]"], d, prog="t", doc="") == \
        {"n": 3, "x": 1e-4, "flag": True, "name": "b", "any": [1, 2]}
    assert parse_kv(["x=2"], d, prog="t", doc="")["x"] == 2  # an int where a float is expected
    assert parse_kv(["name=a/optim.lr=0.1"], d, prog="t", doc="")["name"] == "a/optim.lr=0.1"  # path-like text
    for bad, word in (["n=1.5"], "n=1.5"), (["flag=3"], "flag=3"), (["nope=1"], "nope=1"), (["n"], "n"):
        with pytest.raises(ConfigError, match=word) as e:
            parse_kv(bad, d, prog="t", doc="")
        assert "\n" not in str(e.value)


def test_parse_subcommand():
    assert sub(["plan", "status=true", "task=linear"]) == ("plan", {"status": True, "n": 3}, ["task=linear"])
    assert sub(["status=true"], default="plan")[0] == "plan"
    assert sub(["run", "jobs=4", "-m", "seed=0,1"]) == ("run", {"jobs": 4}, ["seed=0,1"])
    assert sub(["report", "dir=y"], no_overrides=("report",)) == ("report", {"dir": "y"}, [])
    for argv, word in (([], "no sub-command"), (["bogus"], "bogus"), (["run", "jobs=0"], "jobs=0"),
                       (["run", "--fast"], "--fast"), (["run", "word"], "word"), (["plan", "n=x"], "n=x")):
        with pytest.raises(ConfigError, match=word):
            sub(argv)
    with pytest.raises(ConfigError, match="zzz"):  # a report takes no overrides: its own keys only
        sub(["report", "zzz=1"], no_overrides=("report",))


def test_sub_command_help_lists_keys(capsys):
    assert sub(["--help"]) is None and "plan" in capsys.readouterr().out
    assert sub(["plan", "--help"]) is None
    out = capsys.readouterr().out
    assert "status=false" in out and "n=3" in out


@pytest.mark.parametrize("main,argv", [
    (sweep.main, ["--help"]), (sweep.main, ["run", "--help"]), (R.main, ["--help"]), (R.main, ["report", "--help"]),
    (aggregate_main, ["--help"]), (doctor.main, ["--help"]), (models_main, ["--help"]),
])
def test_every_tool_answers_help(main, argv, capsys):
    assert main(argv) == 0
    assert "=" in capsys.readouterr().out or main is models_main


@pytest.mark.parametrize("main,argv,word", [
    (sweep.main, ["--status"], "--status"), (sweep.main, ["run", "jobs=x"], "jobs=x"),
    (R.main, ["run", "jobs=0"], "jobs=0"), (R.main, ["plan", "only=nope"], "only=nope"),
    (aggregate_main, [], "dir="), (aggregate_main, ["dir=/no/such/dir"], "dir=/no/such/dir"),
    (doctor.main, ["json=maybe"], "json=maybe"), (models_main, ["x=1"], "x=1"),
])
def test_every_tool_one_line_error(main, argv, word, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and word in err and err.count("\n") == 1 and "Traceback" not in err


def test_sweep_plan_count_in_process(capsys):
    assert sweep.main(["task=linear", "model=gpt2,llama", "count=true"]) == 0
    assert capsys.readouterr().out.strip() == "2"
