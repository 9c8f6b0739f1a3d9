"""Evaluation statistics: disjoint train/eval seed spaces, chunked evaluation, the delta-method CI."""
import torch

from icl_hybrids.evaluation import (
    EVAL_SEED_BASE,
    FixedEvaluation,
    eval_chunks,
    eval_prompts,
    format_score,
    summarize,
    summarize_errors,
)
from icl_hybrids.metrics import icl_score_ci, icl_score_ci_delta
from icl_hybrids.tasks import LinearRegression, VectorMQAR


def _train_batch(task, seed, step, b=8):
    """What ICLModule.generator draws at (seed, step) (training seed space)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return task.sample(b, generator=g)


def test_no_evaluation_prompt_is_a_training_prompt():
    """Regression: eval seed seed+1000003 used to equal the training seed of seed=1 at step 0."""
    task = LinearRegression(n_dims=3, n_points=5)
    train = {tuple(x.flatten().tolist()) for s in range(4) for step in range(60)
             for x in _train_batch(task, s, step).xs}
    for s in range(4):
        ev = eval_prompts(task, 64, s + 1000003)
        assert not any(tuple(x.flatten().tolist()) in train for x in ev.xs)
    # the seed spaces are disjoint for every configuration validate() accepts (mt19937 keeps 32 bits)
    assert EVAL_SEED_BASE == 2**31


def test_seeds_outside_the_training_seed_space_are_refused():
    import pytest

    from icl_hybrids.config import ConfigError, compose_config, validate

    validate(compose_config(["experiment=smoke", "seed=2000"]))
    with pytest.raises(ConfigError, match=r"^seed=3000: must be <= "):
        validate(compose_config(["experiment=smoke", "seed=3000", "trainer.max_steps=500000"]))
    with pytest.raises(ConfigError, match=r"^trainer.max_steps=2000000: must be <= 1000003"):
        validate(compose_config(["experiment=smoke", "trainer.max_steps=2000000"]))


def test_chunks_are_one_stream():
    task = LinearRegression(n_dims=3, n_points=5)
    whole = eval_prompts(task, 10, 7)
    parts = list(eval_chunks(task, 10, 7, chunk=4))
    assert [p.xs.shape[0] for p in parts] == [4, 4, 2]
    again = list(eval_chunks(task, 10, 7, chunk=4))
    assert all(torch.equal(a.xs, b.xs) and torch.equal(a.ys, b.ys) for a, b in zip(parts, again))
    # one chunk holding every prompt is exactly eval_prompts (the CPU default: chunk 65536 > n_prompts)
    assert torch.equal(next(eval_chunks(task, 10, 7, chunk=65536)).xs, whole.xs)


def test_fixed_evaluation_chunked_equals_unchunked_on_the_same_prompts():
    """Scoring chunk by chunk gives the summary of the whole set of prompts (here: chunk >= all)."""
    task = VectorMQAR(n_dims=4, n_points=9, n_queries=1)
    task.baseline = "mqar_lookup"
    model = lambda xs, ys: torch.zeros_like(ys) + 0.1  # noqa: E731
    model.eval, model.train, model.training = (lambda: None), (lambda _=True: None), False
    pos = task.scored_positions(9).nonzero().flatten().tolist()
    fe = FixedEvaluation(task, 30, 3, ["mqar_lookup"], pos, chunk=7)
    s = fe.score(model, batch_size=5)
    prompts = list(eval_chunks(task, 30, 3, chunk=7))
    ys = torch.cat([p.ys for p in prompts])
    xs = torch.cat([p.xs for p in prompts])
    from icl_hybrids.baselines import get_baseline

    ref = summarize(model(xs, ys), {"zero": torch.zeros_like(ys), "mqar_lookup": get_baseline("mqar_lookup")(xs, ys)},
                    ys, "mqar_lookup", pos)
    assert s["n_prompts"] == 30 and s["score_positions"] == [8]
    assert abs(s["icl_score"] - ref["icl_score"]) < 1e-6
    assert s["icl_score_ci95"] == ref["icl_score_ci95"]


def test_delta_method_agrees_with_bootstrap():
    g = torch.Generator().manual_seed(0)
    B, N = 4000, 6
    zero = 1 + torch.rand(B, N, generator=g)
    base = 0.2 * zero
    model = 0.3 * zero + 0.1 * torch.rand(B, N, generator=g)
    s_b, lo_b, hi_b = icl_score_ci(model, base, zero, generator=torch.Generator().manual_seed(1), n_boot=2000)
    s_d, lo_d, hi_d = icl_score_ci_delta(model, base, zero)
    assert abs(s_b - s_d) < 1e-12
    assert abs((hi_d - lo_d) / (hi_b - lo_b) - 1) < 0.1  # same width within bootstrap noise
    # large evaluations switch to the delta method, and the method is recorded
    big = summarize_errors(model.repeat(6, 1), {"zero": zero.repeat(6, 1), "b": base.repeat(6, 1)}, "b", list(range(N)))
    assert big["icl_score_ci_method"] == "delta" and big["n_prompts"] == 24000
    assert "+-" in format_score(big) and "24000 prompts" in format_score(big)
