"""Garg et al.'s curriculum: every ``interval`` steps the active dims and prompt points grow by ``inc``
until they reach the task's size. State is (step, dims, points); it is saved in checkpoints and is a
pure function of the step, so a resumed run continues exactly where it stopped."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Schedule:
    start: int
    end: int
    inc: int
    interval: int

    def at(self, step: int) -> int:
        if self.inc == 0:
            return self.start
        return min(self.end, self.start + self.inc * (step // self.interval))


class Curriculum:
    def __init__(self, dims: Schedule, points: Schedule, enabled: bool = True):
        self.dims_schedule, self.points_schedule, self.enabled = dims, points, enabled
        self.step = 0
        self.update(0)

    @classmethod
    def from_config(cls, cfg, n_dims: int, n_points: int) -> "Curriculum":
        if not cfg.enabled:
            full = lambda v: Schedule(v, v, 0, 1)  # noqa: E731
            return cls(full(n_dims), full(n_points), enabled=False)
        return cls(Schedule(**cfg.dims), Schedule(**cfg.points), enabled=True)

    def update(self, step: int) -> tuple[int, int]:
        self.step = step
        self.n_dims = self.dims_schedule.at(step)
        self.n_points = self.points_schedule.at(step)
        return self.n_dims, self.n_points

    def state_dict(self) -> dict:
        return {"step": self.step, "n_dims": self.n_dims, "n_points": self.n_points}

    def load_state_dict(self, state: dict) -> None:
        self.update(int(state["step"]))
        if (self.n_dims, self.n_points) != (state["n_dims"], state["n_points"]):
            raise ValueError(
                f"curriculum in checkpoint (dims={state['n_dims']}, points={state['n_points']} at step "
                f"{state['step']}) does not match this config's schedule ({self.n_dims}, {self.n_points})")
