"""Length generalisation: ``python -m icl_hybrids.evaluate ckpt=... eval.n_points=<2N>`` scores a checkpoint on
prompts twice as long as its training prompts where its positions allow it (RoPE, none, Mamba), refuses with
one line for learned absolute positions, and the error-vs-context figure marks the training length."""
import json

import matplotlib
import pytest

matplotlib.use("Agg")

from icl_hybrids import evaluate  # noqa: E402
from icl_hybrids.config import compose_config  # noqa: E402

N = 11  # experiment=smoke's task.n_points


@pytest.fixture(scope="module", params=["gpt2_rope", "mamba"])
def trained(request, tmp_path_factory):
    """A few training steps of a model whose positions do not stop at the training length."""
    from icl_hybrids.train import run

    root = tmp_path_factory.mktemp(request.param)
    run(compose_config(["experiment=smoke", f"out_root={root}", "task=linear", f"model={request.param}",
                        "trainer.max_steps=4", "trainer.ckpt_every_n_steps=2", "trainer.last_ckpt_every_n_steps=2",
                        "eval.every_n_steps=4", "eval.n_prompts=16"]))
    return root / "linear" / request.param / "seed0"


def test_twice_the_training_length_is_finite_everywhere(trained, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = evaluate.main([f"ckpt={trained / 'checkpoints' / 'last.ckpt'}", f"eval.n_points={2 * N}", "eval.n_prompts=16",
                        f"out={out}"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "results_eval.json").read_text())
    assert res["n_points"] == 2 * N and res["train_n_points"] == N
    assert res["context_lengths"] == list(range(2 * N))
    assert len(res["model_errors"]) == 2 * N and all(e == e and abs(e) != float("inf") for e in res["model_errors"])
    assert res["status"] == "ok" and (out / "error_curves.png").stat().st_size > 10_000


def test_trajectory_at_twice_the_length(trained, tmp_path, capsys):
    rc = evaluate.main([f"ckpt_dir={trained}", f"eval.n_points={2 * N}", "eval.n_prompts=16", f"out={tmp_path}",
                        "plot=false"])
    assert rc == 0, capsys.readouterr().err
    traj = json.loads((tmp_path / "trajectory.json").read_text())
    assert traj["context_lengths"] == list(range(2 * N))
    assert all(len(v) == 2 * N for v in traj["model_errors"].values())


def test_learned_positions_refuse_in_one_line(tiny_run, tmp_path, capsys):
    """tiny_run: GPT-2 (learned absolute positions, a table of 2 x 11 rows) on smoke-size sparse linear."""
    rc = evaluate.main([f"ckpt={tiny_run / 'checkpoints' / 'last.ckpt'}", f"eval.n_points={2 * N}", f"out={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert err == (f"error: eval.n_points={2 * N}: model gpt2 has learned absolute positions for at most {N} points "
                   f"(allowed: <= {N}; RoPE, no positions or a Mamba stage evaluate at any length)")
    assert not (tmp_path / "results_eval.json").exists()
    # within the table: fine (a shorter prompt is a prefix of the training length)
    assert evaluate.main([f"ckpt={tiny_run / 'checkpoints' / 'last.ckpt'}", "eval.n_points=7", "eval.n_prompts=8",
                          f"out={tmp_path}", "plot=false"]) == 0


def test_bad_length_is_one_line(tiny_run, capsys):
    assert evaluate.main([f"ckpt={tiny_run / 'checkpoints' / 'last.ckpt'}", "eval.n_points=0"]) == 2
    assert capsys.readouterr().err.strip() == "error: eval.n_points=0: must be an integer >= 1"


def test_figure_marks_the_training_length():
    import matplotlib.pyplot as plt

    from icl_hybrids.plots import _mark_training_length

    fig, ax = plt.subplots()
    _mark_training_length(ax, N, list(range(2 * N)))
    assert [line.get_xdata()[0] for line in ax.lines] == [N - 1]
    assert [t.get_text().strip() for t in ax.texts] == [f"trained on {N} points"]
    fig2, ax2 = plt.subplots()
    _mark_training_length(ax2, N, list(range(N)))  # inside the training length: no line on the right edge
    assert not ax2.lines and not ax2.texts
    plt.close(fig)
    plt.close(fig2)
