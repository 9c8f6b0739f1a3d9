"""Task samplers: statistics and invariants of every function class (Table 1)."""
import math

import pytest
import torch

from icl_hybrids.config import compose_config
from icl_hybrids.lit import build_task
from icl_hybrids.tasks import (
    DecisionTree,
    LinearRegression,
    MLPRegression,
    SparseLinearRegression,
    SparseParity,
    VectorMQAR,
)

from .conftest import TASKS  # noqa: E402  (derived from conf/)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", TASKS)
def test_paper_defaults_and_shapes(name):
    cfg = compose_config([f"task={name}"])
    task = build_task(cfg.task)
    expected = {"linear": (20, 41), "sparse_linear": (20, 41), "mlp": (20, 101), "decision_tree": (20, 101),
                "sparse_parity": (10, 140), "mqar": (20, 65)}[name]
    assert (task.n_dims, task.n_points) == expected
    b = task.sample(3, generator=gen())
    assert b.xs.shape == (3, task.n_points, task.n_dims)
    assert b.ys.shape == ((3, task.n_points) if task.y_dim == 1 else (3, task.n_points, task.n_dims))
    # seeded: same generator seed, same batch; different seed, different batch
    b2 = task.sample(3, generator=gen())
    assert torch.equal(b.xs, b2.xs) and torch.equal(b.ys, b2.ys)
    assert not torch.equal(b.ys, task.sample(3, generator=gen(1)).ys)


def test_task_specific_paper_hyperparameters():
    assert compose_config(["task=sparse_parity"]).optim.lr == pytest.approx(4e-4)
    assert compose_config(["task=sparse_parity"]).trainer.max_steps == 200_000
    assert compose_config(["task=sparse_parity"]).curriculum.enabled is False
    c = compose_config(["task=mqar"])
    assert (c.model.d_model, c.model.n_layer, c.optim.lr, c.curriculum.enabled) == (128, 2, pytest.approx(2e-4), False)
    c = compose_config(["task=linear"])
    assert (c.model.d_model, c.model.n_layer, c.model.n_head, c.optim.lr, c.optim.batch_size, c.trainer.max_steps) == (
        256, 12, 8, pytest.approx(1e-4), 64, 500_000)
    assert c.curriculum.enabled and c.curriculum.points.start == 11 and c.curriculum.points.inc == 2
    c = compose_config(["task=mlp"])
    assert (c.curriculum.points.start, c.curriculum.points.inc, c.curriculum.points.end) == (26, 5, 101)


def test_linear_is_linear_and_gaussian():
    t = LinearRegression(n_dims=6, n_points=50)
    b = t.sample(2000, generator=gen())
    assert abs(b.xs.mean()) < 0.02 and abs(b.xs.var() - 1) < 0.02
    # y = x.w with w ~ N(0, I): Var(y) = d
    assert abs(b.ys.var() / 6 - 1) < 0.05
    # exactly linear: recover w per prompt from 6 points and predict the rest
    w = torch.linalg.lstsq(b.xs[:5, :6], b.ys[:5, :6, None]).solution
    assert torch.allclose((b.xs[:5] @ w).squeeze(-1), b.ys[:5], atol=1e-3)


def test_curriculum_truncation_zeroes_inactive_dims():
    t = LinearRegression(n_dims=8, n_points=10)
    b = t.sample(4, generator=gen(), n_dims=3, n_points=7)
    assert b.xs.shape == (4, 7, 8) and torch.all(b.xs[..., 3:] == 0) and torch.all(b.xs[..., :3] != 0)


def test_sparse_linear_has_exactly_k_nonzeros():
    t = SparseLinearRegression(n_dims=10, n_points=12, sparsity=3)
    g = gen()
    w = t.draw_w(500, 10, g, "cpu")
    assert torch.all((w != 0).sum(1) == 3)
    # uniform support: every coordinate chosen ~ 3/10 of the time
    freq = (w != 0).float().mean(0)
    assert torch.all((freq - 0.3).abs() < 0.07)
    # under a curriculum the support lies in the active coordinates
    w = t.draw_w(200, 4, g, "cpu")
    assert torch.all(w[:, 4:] == 0) and torch.all((w != 0).sum(1) == 3)


def test_mlp_default_scale_is_the_paper_codes():
    """The paper's code (mlp.py) applies no output scale: E[y^2] = H * E[relu(w.x)^2] = H d / 2."""
    t = MLPRegression(n_dims=20, n_points=30, hidden=100)
    assert t.scale == 1.0 and build_task(compose_config(["task=mlp"]).task).scale == 1.0
    b = t.sample(500, generator=gen())
    assert abs(b.ys.pow(2).mean() / (100 * 20 / 2) - 1) < 0.15


def test_mlp_targets_scale():
    t = MLPRegression(n_dims=20, n_points=30, hidden=100, scale="garg")
    b = t.sample(500, generator=gen())
    # E[y^2] = (2/H) * H * E[relu(w.x)^2] = 2 * d/2 = d (x, w standard normal)
    assert abs(b.ys.pow(2).mean() / 20 - 1) < 0.15
    t1 = MLPRegression(n_dims=20, n_points=30, hidden=100, scale=1.0)
    b1 = t1.sample(500, generator=gen())
    assert torch.allclose(b1.ys * math.sqrt(2 / 100), b.ys, atol=1e-4)


def test_decision_tree_matches_explicit_traversal():
    t = DecisionTree(n_dims=5, n_points=30, depth=4)
    g = gen(3)
    b = t.sample(6, generator=g)
    # replay the draws: xs, then feats, then leaves
    g = gen(3)
    xs = t.sample_xs(6, 30, 5, g, "cpu")
    feats = torch.randint(0, 5, (6, 15), generator=g)
    leaves = torch.randn(6, 16, generator=g)
    for i in range(6):
        for j in range(30):
            node = 0
            for _ in range(4):
                node = 2 * node + (2 if xs[i, j, feats[i, node]] > 0 else 1)
            assert b.ys[i, j] == leaves[i, node - 15]
    assert len(torch.unique(b.ys[0])) <= 16


def _first_split_coords(t, n_active, n=4000):
    g = gen(5)
    t.sample_xs(n, 3, n_active, g, "cpu")  # replay the draw order: xs, then the split coordinates
    return torch.randint(0, t.n_dims if t.split_dims == "all" else n_active, (n, 15), generator=g)


def test_decision_tree_splits_over_all_dims_under_curriculum():
    """The paper's code and Garg draw split coordinates over all d, even when the curriculum zeroes some:
    such a split always goes left (0 > 0 is false). split_dims=active is the alternative."""
    t = DecisionTree(n_dims=8, n_points=3, depth=4)
    assert t.split_dims == "all" and build_task(compose_config(["task=decision_tree"]).task).split_dims == "all"
    b = t.sample(4000, generator=gen(5), n_dims=2)
    feats = _first_split_coords(t, 2)
    assert (feats >= 2).float().mean() > 0.6  # 6 of 8 coordinates are inactive
    # root split on an inactive coordinate -> the left subtree only: leaves 0..7 of 16
    g = gen(5)
    t.sample_xs(4000, 3, 2, g, "cpu")
    torch.randint(0, 8, (4000, 15), generator=g)
    leaves = torch.randn(4000, 16, generator=g)
    inactive_root = feats[:, 0] >= 2
    left = (b.ys[inactive_root].unsqueeze(-1) == leaves[inactive_root][:, None, :8]).any(-1)
    assert left.all()
    ta = DecisionTree(n_dims=8, n_points=3, depth=4, split_dims="active")
    ta.sample(4000, generator=gen(5), n_dims=2)
    assert (_first_split_coords(ta, 2) < 2).all()
    with pytest.raises(ValueError, match="split_dims"):
        DecisionTree(n_dims=8, n_points=3, split_dims="some")


def test_sparse_parity_labels_and_subset():
    t = SparseParity(n_dims=10, n_points=140, sparsity=2)
    b = t.sample(64, generator=gen())
    assert set(b.xs.unique().tolist()) == {-1.0, 1.0}
    assert set(b.ys.unique().tolist()) <= {-1.0, 1.0}
    # exactly one pair (i, j) explains each prompt's labels (140 points make it unique w.h.p.)
    for p in range(8):
        x, y = b.xs[p], b.ys[p]
        hits = [(i, j) for i in range(10) for j in range(i + 1, 10) if torch.equal(x[:, i] * x[:, j], y)]
        assert len(hits) == 1


def test_mqar_default_is_the_paper_codes_single_query():
    """retrieval.py: 64 pairs, then ONE query (a copy of a shown pair), trained and scored alone."""
    cfg = compose_config(["task=mqar"])
    t = build_task(cfg.task)
    assert (t.n_pairs, t.n_queries, t.n_points) == (64, 1, 65)
    assert t.scored_positions(65).nonzero().flatten().tolist() == [64]
    b = t.sample(64, generator=gen())
    assert torch.allclose(b.xs.norm(dim=-1), torch.full((64, 65), math.sqrt(20)), atol=1e-4)
    assert torch.allclose(b.ys.norm(dim=-1), torch.full((64, 65), math.sqrt(20)), atol=1e-4)
    hit = []
    for p in range(64):
        match = [k for k in range(64) if torch.equal(b.xs[p, k], b.xs[p, 64])]
        assert len(match) == 1 and torch.equal(b.ys[p, match[0]], b.ys[p, 64])
        hit.append(match[0])
    assert len(set(hit)) > 30  # the queried pair is uniform over the 64, not fixed
    # the 64 shown keys are distinct and independent of the values
    assert all(len({tuple(r.tolist()) for r in b.xs[p, :64]}) == 64 for p in range(4))


def test_mqar_multi_query_variant_distinct_keys():
    t = VectorMQAR(n_dims=8, n_points=16, n_queries=6)
    assert t.n_pairs == 10
    b = t.sample(32, generator=gen())
    for p in range(32):
        shown = []
        for q in range(10, 16):
            match = [k for k in range(10) if torch.equal(b.xs[p, k], b.xs[p, q])]
            assert len(match) == 1 and torch.equal(b.ys[p, match[0]], b.ys[p, q])
            shown.append(match[0])
        assert len(set(shown)) == 6  # distinct keys queried (no repeats)
    assert t.scored_positions(16).tolist() == [False] * 10 + [True] * 6
    for bad in (0, 9):
        with pytest.raises(ValueError, match="task.n_queries"):
            VectorMQAR(n_dims=8, n_points=16, n_queries=bad)
