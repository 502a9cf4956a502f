"""A kinematic walking gait to add actions to: the ``gait_prior`` action mode.

With ``no_delta`` actions a fresh policy starts from standing still, and the speed reward alone
must teach it to step forward: measured, the policy learned to survive by stepping in place and
stayed there. With ``gait_prior`` an action is an offset from this gait's motor positions at the
current phase and commanded speed, so a fresh policy already swings its feet forward at the
commanded stride and learns to balance it. Like ``delta`` (the original's reference trajectory),
but computed from the gait clock and the command alone, for any speed, with no recorded file:
the policy node computes the same table from the same config.

The gait, per leg, relative to the pelvis (which moves at the commanded speed ``v``, at a
constant height): in stance the foot stays on the ground and slides back under the pelvis from
``+v·t_stance/2`` to ``−v·t_stance/2``; in swing it comes forward along a cosine profile and
lifts ``step_height`` at mid-swing. Stance and swing follow the clock exactly as the periodic
rewards do (``rewards.swing_share``). Joint angles come from inverse kinematics on the project's
model, closed chains included, with the springs as in standing, the hips unyawed and the feet
level.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import mujoco
import numpy as np

from cassie_sim_ros.config import ConfigError
from cassie_sim_ros.model import MOTOR_QPOS_INDEX, STANDING_QPOS, load_model

if TYPE_CHECKING:  # cassie_env imports this module
    from cassie_rl_ros.envs.cassie_env import GaitConfig

# Shin and heel springs, held at their standing deflection: the gait is kinematic.
_SPRING_JOINTS = ("shin", "heel_spring")
_SIDES = ("left", "right")


@dataclass(frozen=True)
class GaitPriorConfig:
    """The kinematic gait ``gait_prior`` actions are offsets from."""

    step_height: float = 0.08
    """Swing foot lift at mid-swing (m)."""
    pelvis_height: float = 0.95
    """Pelvis height above the soles in stance (m); standing is 1.006."""
    speeds: tuple[float, float] = (0.0, 1.2)
    """Forward speeds the table covers (m/s); commands outside use the nearest end."""
    speed_spacing: float = 0.2
    """Table spacing in speed (m/s); joint angles are interpolated linearly between."""
    phase_points: int = 32
    """Table points per gait cycle."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.step_height <= 0.25:
            raise ConfigError(f"gait_prior.step_height: {self.step_height!r} is not allowed; "
                              "allowed values: 0 to 0.25 m")
        if not 0.7 <= self.pelvis_height <= 1.05:
            raise ConfigError(f"gait_prior.pelvis_height: {self.pelvis_height!r} is not "
                              "allowed; allowed values: 0.7 to 1.05 m")
        low, high = self.speeds
        if not -1.0 <= low <= high <= 2.0:
            raise ConfigError(f"gait_prior.speeds: {self.speeds!r} is not allowed; allowed "
                              "values: low <= high within -1 to 2 m/s")
        if not self.speed_spacing > 0:
            raise ConfigError("gait_prior.speed_spacing: must be > 0")
        if self.phase_points < 8:
            raise ConfigError("gait_prior.phase_points: must be >= 8")


class GaitPrior:
    """Motor positions of the kinematic gait at any phase and forward speed."""

    def __init__(self, gait: GaitConfig, config: GaitPriorConfig):
        self.config = config
        low, high = config.speeds
        count = max(2, int(np.ceil((high - low) / config.speed_spacing - 1e-9)) + 1)
        self.speeds = np.linspace(low, high, count)
        self.qpos = _qpos_table(gait.cycle_seconds, gait.swing_ratio,
                                tuple(gait.leg_phase_offset), config, tuple(self.speeds))
        """(speeds, phase_points, 35) joint positions, the pelvis fixed at the origin."""
        self.table = self.qpos[:, :, MOTOR_QPOS_INDEX]
        """(speeds, phase_points, 10) motor positions."""

    def motor_positions(self, phase: np.ndarray, stride_speed: np.ndarray) -> np.ndarray:
        """(N, 10) motor positions at gait phases (N,) in [0, 1) and speeds (N,) (m/s at
        stepping frequency 1: the commanded speed over the stepping frequency)."""
        return self._interpolate(self.table, phase, stride_speed)

    def joint_positions(self, phase: np.ndarray, stride_speed: np.ndarray) -> np.ndarray:
        """(N, 35) generalised positions likewise, the pelvis at the origin (for the joint
        imitation terms; the pelvis terms have no meaning here)."""
        return self._interpolate(self.qpos, phase, stride_speed)

    def _interpolate(self, table: np.ndarray, phase: np.ndarray,
                     stride_speed: np.ndarray) -> np.ndarray:
        points = self.config.phase_points
        x = np.asarray(phase) * points
        i0 = np.floor(x).astype(np.int64) % points
        i1 = (i0 + 1) % points
        a = (x - np.floor(x))[:, None]
        s = np.interp(stride_speed, self.speeds, np.arange(len(self.speeds)))
        j0 = np.minimum(np.floor(s).astype(np.int64), len(self.speeds) - 2)
        b = (s - j0)[:, None]

        def at(j):
            return (1 - a) * table[j, i0] + a * table[j, i1]

        return (1 - b) * at(j0) + b * at(j0 + 1)


def foot_offset(leg_phase: np.ndarray, speed: float, cycle_seconds: float,
                swing_ratio: float, step_height: float) -> tuple[np.ndarray, np.ndarray]:
    """Forward and upward offsets (m) of a foot from its standing spot under the pelvis, at leg
    phases in [0, 1): stance first, swing in the last ``swing_ratio`` of the cycle."""
    leg_phase = np.asarray(leg_phase, dtype=float)
    half_stride = speed * (1.0 - swing_ratio) * cycle_seconds / 2.0
    stance = leg_phase < 1.0 - swing_ratio
    s_stance = leg_phase / (1.0 - swing_ratio)
    s_swing = (leg_phase - (1.0 - swing_ratio)) / swing_ratio
    forward = np.where(stance, half_stride * (1.0 - 2.0 * s_stance),
                       half_stride * (-np.cos(np.pi * s_swing)))
    up = np.where(stance, 0.0, step_height * np.sin(np.pi * s_swing))
    return forward, up


@functools.lru_cache(maxsize=8)
def _qpos_table(cycle_seconds: float, swing_ratio: float, leg_phase_offset: tuple[float, float],
                config: GaitPriorConfig, speeds: tuple[float, ...]) -> np.ndarray:
    solver = LegSolver()
    phases = np.arange(config.phase_points) / config.phase_points
    drop = STANDING_QPOS[2] - config.pelvis_height
    table = np.zeros((len(speeds), len(phases), len(STANDING_QPOS)))
    for j, speed in enumerate(speeds):
        qpos = STANDING_QPOS.copy()
        # Twice round the cycle: the first pass only warms the solver up to this speed's pose.
        for sweep in range(2):
            for i, phase in enumerate(phases):
                targets = []
                for side, offset in enumerate(leg_phase_offset):
                    forward, up = foot_offset((phase + offset) % 1.0, speed, cycle_seconds,
                                              swing_ratio, config.step_height)
                    targets.append(solver.standing_feet[side] + [forward, 0.0, up - drop])
                qpos = solver.solve(qpos, targets)
                table[j, i] = qpos
    table.setflags(write=False)
    return table


class LegSolver:
    """Damped least-squares inverse kinematics of both legs, the pelvis fixed where the
    standing pose has it: ``standing_feet`` are the soles' world positions there."""

    def __init__(self):
        self.model = model = load_model()
        self.data = mujoco.MjData(model)
        fixed = set(range(6))  # the pelvis
        for side in _SIDES:
            fixed.add(int(model.jnt_dofadr[model.joint(f"{side}_hip_yaw").id]))
            for name in _SPRING_JOINTS:
                fixed.add(int(model.jnt_dofadr[model.joint(f"{side}_{name}").id]))
        self.free = np.array([i for i in range(model.nv) if i not in fixed])
        self.sites = [model.site(f"{side}_foot").id for side in _SIDES]
        self.feet = [model.body(f"{side}_foot").id for side in _SIDES]
        self.data.qpos[:] = STANDING_QPOS
        mujoco.mj_forward(model, self.data)
        self.standing_feet = [self.data.site_xpos[s].copy() for s in self.sites]
        self.level_feet = [self.data.xmat[b].reshape(3, 3).copy() for b in self.feet]

    def solve(self, qpos: np.ndarray, foot_targets: list[np.ndarray], iterations: int = 50,
              tolerance: float = 1e-6) -> np.ndarray:
        """Joint positions from ``qpos`` on that put the soles at ``foot_targets`` (world);
        stops when a step moves no joint by more than ``tolerance`` rad (a level foot is not
        always reachable, so the error itself need not vanish)."""
        m, d = self.model, self.data
        qpos = qpos.copy()
        jac_pos, jac_rot = np.zeros((3, m.nv)), np.zeros((3, m.nv))
        quat, rotation_error = np.zeros(4), np.zeros(3)
        for _ in range(iterations):
            d.qpos[:] = qpos
            mujoco.mj_forward(m, d)
            rows, errors = [], []
            for side in range(2):
                mujoco.mj_jacSite(m, d, jac_pos, None, self.sites[side])
                rows.append(jac_pos.copy())
                errors.append(foot_targets[side] - d.site_xpos[self.sites[side]])
                # Level feet, weighted below position: the ankle cannot always reach both.
                mujoco.mju_mat2Quat(quat, (self.level_feet[side]
                                           @ d.xmat[self.feet[side]].reshape(3, 3).T).ravel())
                mujoco.mju_quat2Vel(rotation_error, quat, 1.0)
                mujoco.mj_jacBody(m, d, None, jac_rot, self.feet[side])
                rows.append(0.3 * jac_rot)
                errors.append(0.3 * rotation_error)
            # The closed chains (achilles and plantar rods) as hard-weighted rows.
            equality = d.efc_type[:d.nefc] == mujoco.mjtConstraint.mjCNSTR_EQUALITY
            rows.append(10.0 * d.efc_J.reshape(-1, m.nv)[:d.nefc][equality])
            errors.append(-10.0 * d.efc_pos[:d.nefc][equality])
            jac = np.vstack(rows)[:, self.free]
            error = np.concatenate(errors)
            step = np.linalg.solve(jac.T @ jac + 1e-4 * np.eye(len(self.free)), jac.T @ error)
            dq = np.zeros(m.nv)
            dq[self.free] = step
            mujoco.mj_integratePos(m, qpos, dq, 1.0)
            if np.abs(step).max() < tolerance:
                break
        return qpos


__all__ = ["GaitPrior", "GaitPriorConfig", "LegSolver", "foot_offset"]
