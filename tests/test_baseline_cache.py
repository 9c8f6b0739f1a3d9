import torch

from icl_hybrids import evaluation
from icl_hybrids.tasks import LinearRegression


def test_baseline_cache_hits_and_is_keyed_by_content(tmp_path, monkeypatch):
    task = LinearRegression(n_dims=3, n_points=6)
    batch = evaluation.eval_prompts(task, 8, seed=1)
    first = evaluation.baseline_predictions(task, ["least_squares"], batch, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("least_squares-*.pt"))) == 1
    calls = []
    real = evaluation.get_baseline
    monkeypatch.setattr(evaluation, "get_baseline", lambda n, **kw: calls.append(n) or real(n, **kw))
    again = evaluation.baseline_predictions(task, ["least_squares"], batch, cache_dir=tmp_path)
    assert calls == ["zero"] and torch.equal(first["least_squares"], again["least_squares"])
    other = evaluation.eval_prompts(task, 8, seed=2)  # different prompts: a new entry, not a stale hit
    evaluation.baseline_predictions(task, ["least_squares"], other, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("least_squares-*.pt"))) == 2
