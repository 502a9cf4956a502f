"""Actions to motor targets, and the gait clock: the code the training env and the policy node
share, so that both turn the same policy output into the same PD targets and advance the same
phase.

- :func:`clip_actions`: non-finite entries to 0 (the neutral pose), then clip to ±action_clip.
- :class:`ActionOrigin`: the pose an action is added to: the neutral standing pose
  (``no_delta``), the reference trajectory's motor positions at the current phase (``delta``), or
  the kinematic gait's at the current phase and commanded speed (``gait_prior``).
- :func:`motor_targets`: the PD position targets of clipped actions, the origin plus the action
  within each motor's joint range (a target past the stop only pushes against it, and a driver
  refuses targets far outside the range: the robot would fall back to damping mid-gait).
- :func:`advance_phase` / :func:`advance_clock`: one policy step of the gait clock,
  φ ← (φ + f · dt / T) mod 1, and of the commanded heading, ψ* ← wrap(ψ* + ω_cmd · dt).
- :func:`reference_state`: the reference trajectory's state at the next step's phase (what
  reference-observing policies see).

Everything takes and returns (N, ...) arrays; a robot is N = 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cassie_rl_ros.envs.gait_prior import GaitPrior
from cassie_rl_ros.envs.observations import TaskInputs, wrap_angle
from cassie_rl_ros.envs.reference import MOTOR_QPOS_INDEX, ReferenceTrajectory
from cassie_sim_ros import constants as C
from cassie_sim_ros.model import MOTOR_RANGE

if TYPE_CHECKING:  # cassie_env imports this module
    from cassie_rl_ros.envs.cassie_env import CassieEnvConfig


def clip_actions(actions: np.ndarray, action_clip: float) -> np.ndarray:
    """(N, 10) float64 actions: a non-finite action never reaches a motor (it becomes 0, the
    neutral pose), the rest are clipped to ±action_clip rad."""
    actions = np.asarray(actions, dtype=np.float64)
    actions = np.where(np.isfinite(actions), actions, 0.0)
    return np.clip(actions, -action_clip, action_clip)


class ActionOrigin:
    """The motor positions (N, 10) an action is an offset from, by ``config.action``."""

    def __init__(self, config: CassieEnvConfig, reference: ReferenceTrajectory | None = None):
        self.mode = config.action
        self.reference = reference
        self.gait_prior = None
        if self.mode == "delta" and reference is None:
            raise ValueError("delta actions need the reference trajectory")
        if self.mode == "gait_prior":
            self.gait_prior = GaitPrior(config.gait, config.gait_prior)

    def pose(self, task: TaskInputs) -> np.ndarray:
        """(N, 10) motor positions for the task's phase (and command)."""
        n = task.phase.shape[0]
        if self.mode == "no_delta":
            return np.broadcast_to(C.NEUTRAL_MOTOR_OFFSET, (n, C.NUM_MOTORS))
        if self.mode == "delta":
            return self.reference.qpos[self.reference.index(task.phase)][:, MOTOR_QPOS_INDEX]
        return self.gait_prior.motor_positions(task.phase, self.stride_speed(task))

    @staticmethod
    def stride_speed(task: TaskInputs) -> np.ndarray:
        """(N,) the gait prior's speed: its stride per cycle is the commanded speed times the
        cycle, which stepping frequency f makes f times shorter."""
        return task.command[:, 0] / task.step_frequency


def motor_targets(actions: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """(N, 10) motor position targets (rad, motor order) of clipped actions (N, 10) added to
    the origin pose (N, 10) (:meth:`ActionOrigin.pose`), within the motors' joint ranges."""
    return np.clip(origin + actions, MOTOR_RANGE[:, 0], MOTOR_RANGE[:, 1])


def advance_phase(phase: np.ndarray, step_frequency: np.ndarray, dt: float,
                  cycle_seconds: float) -> np.ndarray:
    """The gait phase ``dt`` seconds later: (φ + f · dt / T) mod 1."""
    increment = step_frequency * dt / cycle_seconds
    return (phase + increment) % 1.0


def advance_clock(task: TaskInputs, dt: float, cycle_seconds: float) -> None:
    """One policy step of ``dt`` seconds: advance the phase and turn the target heading by the
    commanded yaw rate (replaces ``task.phase`` and ``task.target_heading``)."""
    task.phase = advance_phase(task.phase, task.step_frequency, dt, cycle_seconds)
    task.target_heading = wrap_angle(task.target_heading + task.command[:, 2] * dt)


def reference_state(reference: ReferenceTrajectory, task: TaskInputs, dt: float,
                    cycle_seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """The reference trajectory's qpos (N, 35) and qvel (N, 32) at the next policy step's
    phase: what reference-observing policies see."""
    index = reference.index(advance_phase(task.phase, task.step_frequency, dt, cycle_seconds))
    return reference.qpos[index], reference.qvel[index]


__all__ = ["ActionOrigin", "advance_clock", "advance_phase", "clip_actions", "motor_targets",
           "reference_state"]
