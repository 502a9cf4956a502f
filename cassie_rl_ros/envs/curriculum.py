"""A forward-speed command curriculum (legged_gym's, by episode success).

A policy asked for 1 m/s from the start learns that standing still loses little reward and
falling loses all of it, and settles on stepping in place. Asked first for slow speeds, which it
can reach with a lean and longer steps, it learns to walk, and the range widens as it tracks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cassie_sim_ros.config import ConfigError


@dataclass(frozen=True)
class SpeedCurriculumConfig:
    """Forward commands are drawn up to a limit that starts at ``start`` and grows by ``step``
    (up to the command range's top) whenever, of at least ``min_episodes`` frontier episodes
    ended since the last change, a ``success_rate`` share ran to the time limit with a mean
    |vx − command| under ``tolerance``. Frontier episodes are those commanded within ``step``
    of the limit: slower ones (and standing) a robot that does not walk can pass too."""

    enabled: bool = False
    start: float = 0.3
    """Initial upper limit of the forward command (m/s)."""
    step: float = 0.1
    """Raise of the limit per success (m/s)."""
    tolerance: float = 0.15
    """Mean forward speed error of a successful episode (m/s)."""
    success_rate: float = 0.5
    """Share of successful episodes that earns a raise."""
    min_episodes: int = 32
    """Frontier episodes that must end between two raises."""

    def __post_init__(self) -> None:
        for name in ("start", "step", "tolerance"):
            if not getattr(self, name) > 0.0:
                raise ConfigError(f"{name}: {getattr(self, name)!r} is not allowed; allowed "
                                  "values: > 0")
        if not 0.0 < self.success_rate <= 1.0:
            raise ConfigError(f"success_rate: {self.success_rate!r} is not allowed; allowed "
                              "values: in (0, 1]")
        if self.min_episodes < 1:
            raise ConfigError(f"min_episodes: {self.min_episodes!r} is not allowed; allowed "
                              "values: >= 1")


class SpeedCurriculum:
    """The current upper limit of forward speed commands, and the episode record behind it."""

    def __init__(self, config: SpeedCurriculumConfig, top: float, num_envs: int):
        self.config, self.top = config, float(top)
        self.limit = min(config.start, self.top) if config.enabled else self.top
        self.error_sum = np.zeros(num_envs)
        self.ended = self.successes = 0

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def record(self, speed_error: np.ndarray) -> None:
        """One policy step's |vx − command| per env."""
        self.error_sum += speed_error

    def episodes_ended(self, ids: np.ndarray, steps: np.ndarray, timed_out: np.ndarray,
                       commands: np.ndarray) -> None:
        """Score the frontier episodes among ``ids`` (their step counts, whether they reached
        the time limit, their forward commands), raise the limit when earned, and start the
        sums of all of them afresh."""
        cfg = self.config
        frontier = commands >= self.limit - cfg.step - 1e-9
        mean_error = self.error_sum[ids] / np.maximum(steps, 1)
        self.ended += int(frontier.sum())
        self.successes += int((frontier & timed_out & (mean_error < cfg.tolerance)).sum())
        self.error_sum[ids] = 0.0
        if self.ended >= cfg.min_episodes:
            if self.successes >= cfg.success_rate * self.ended and self.limit < self.top:
                self.limit = min(self.limit + cfg.step, self.top)
            self.ended = self.successes = 0

    def get_state(self) -> dict:
        return {"limit": self.limit, "error_sum": self.error_sum.copy(), "ended": self.ended,
                "successes": self.successes}

    def set_state(self, state: dict) -> None:
        self.limit = float(state["limit"])
        self.error_sum = np.array(state["error_sum"], dtype=float)
        self.ended, self.successes = int(state["ended"]), int(state["successes"])

    def set_stage(self, state: dict) -> None:
        """Only the limit and the episodes judged at it from :meth:`get_state` (the running
        episodes' error sums belong to envs that are not there any more)."""
        self.limit = float(state["limit"])
        self.ended, self.successes = int(state["ended"]), int(state["successes"])


__all__ = ["SpeedCurriculum", "SpeedCurriculumConfig"]
