import pytest

from icl_hybrids.config import compose_config
from icl_hybrids.curriculum import Curriculum, Schedule


def test_garg_schedule_41_points():
    cfg = compose_config(["task=linear"])
    c = Curriculum.from_config(cfg.curriculum, 20, 41)
    assert c.update(0) == (5, 11)
    assert c.update(1999) == (5, 11)
    assert c.update(2000) == (6, 13)
    assert c.update(2000 * 15) == (20, 41)
    assert c.update(10**6) == (20, 41)


def test_garg_schedule_101_points():
    cfg = compose_config(["task=decision_tree"])
    c = Curriculum.from_config(cfg.curriculum, 20, 101)
    assert c.update(0) == (5, 26)
    assert c.update(4000) == (7, 36)
    assert c.update(2000 * 15) == (20, 101)


def test_no_curriculum_for_parity_and_mqar():
    for task, size in (("sparse_parity", (10, 140)), ("mqar", (20, 128))):
        cfg = compose_config([f"task={task}"])
        c = Curriculum.from_config(cfg.curriculum, *size)
        assert c.update(0) == size and c.update(123456) == size


def test_state_round_trip_and_mismatch():
    c = Curriculum(Schedule(5, 20, 1, 10), Schedule(11, 41, 2, 10))
    c.update(35)
    state = c.state_dict()
    d = Curriculum(Schedule(5, 20, 1, 10), Schedule(11, 41, 2, 10))
    d.load_state_dict(state)
    assert (d.step, d.n_dims, d.n_points) == (35, 8, 17)
    e = Curriculum(Schedule(5, 20, 2, 10), Schedule(11, 41, 2, 10))
    with pytest.raises(ValueError, match="curriculum in checkpoint"):
        e.load_state_dict(state)
