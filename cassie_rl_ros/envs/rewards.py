"""Reward terms, terminations and reset distributions: named functions a config composes.

A reward term is ``fn(ctx: StepContext, **params) -> (N,)`` in [0, 1], mostly of the form
``exp(-scale · cost)``; the env sums ``weight · term`` over the terms its config names. A
termination is ``fn(ctx, **params) -> (N,) bool``. To add one, write the function and name it in
the config, either registered here by name or as ``package.module:function``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from cassie_rl_ros.envs.observations import quat_yaw, wrap_angle


@dataclass
class StepContext:
    """Everything a reward or termination may look at after a policy step, (N, ...) arrays.

    Ground truth is allowed here: it shapes training, the policy never sees it.
    """

    dt: float  # policy period (s)
    pelvis_pos: np.ndarray  # (N, 3) world
    pelvis_quat: np.ndarray  # (N, 4) w, x, y, z
    pelvis_vel: np.ndarray  # (N, 3) world-frame linear velocity
    pelvis_angvel: np.ndarray  # (N, 3) pelvis-frame angular velocity
    foot_pos: np.ndarray  # (N, 2, 3) world sole centres, left then right
    foot_vel: np.ndarray  # (N, 2, 3) world sole velocities over the last policy step
    foot_force: np.ndarray  # (N, 2, 3) world ground reaction forces
    motor_pos: np.ndarray  # (N, 10) true motor positions
    motor_vel: np.ndarray  # (N, 10)
    motor_torque: np.ndarray  # (N, 10)
    shin_pos: np.ndarray  # (N, 2) shin spring deflection, left and right
    action: np.ndarray  # (N, 10)
    last_action: np.ndarray  # (N, 10)
    phase: np.ndarray  # (N,) gait phase in [0, 1)
    swing_ratio: float  # share of the cycle each foot is in swing
    leg_phase_offset: tuple[float, float]  # per-leg phase shift: (0, 0.5) walks
    command: np.ndarray  # (N, 3) forward speed, lateral speed, yaw rate
    target_heading: np.ndarray  # (N,) rad
    reference_qpos: np.ndarray | None = None  # (N, 35) for imitation rewards
    qpos: np.ndarray | None = None  # (N, 35) true generalised positions

    def heading_frame_velocity(self) -> np.ndarray:
        """Pelvis velocity in the frame of the commanded heading: (forward, lateral, up)."""
        c, s = np.cos(self.target_heading), np.sin(self.target_heading)
        v = self.pelvis_vel
        return np.stack([c * v[:, 0] + s * v[:, 1], -s * v[:, 0] + c * v[:, 1], v[:, 2]], axis=1)

    def swing(self) -> np.ndarray:
        """(N, 2) 1 where a foot should be in the air, 0 in stance (:func:`swing_share`)."""
        return swing_share(self.phase, self.swing_ratio, self.leg_phase_offset)


def swing_share(phase: np.ndarray, swing_ratio: float,
                leg_phase_offset: tuple[float, float]) -> np.ndarray:
    """(N, 2) 1 where a foot should be in the air at gait phases (N,), 0 in stance, ramped near
    the edges.

    Each leg swings in the last ``swing_ratio`` of its own cycle; the ramp (4 % of the cycle)
    keeps the reward continuous in phase.
    """
    leg_phase = (np.asarray(phase)[:, None] + np.asarray(leg_phase_offset)[None]) % 1.0
    start = 1.0 - swing_ratio
    inside = leg_phase >= start
    # Signed distance to the nearest edge of the swing window on the phase circle.
    distance = np.where(inside, np.minimum(leg_phase - start, 1.0 - leg_phase),
                        -np.minimum(start - leg_phase, leg_phase))
    return np.clip(0.5 + distance / 0.04, 0.0, 1.0)


CONTACT_FORCE = 50.0
"""N: a foot pressing on the ground harder than this is in contact (Cassie weighs 327 N)."""


def swing_airborne(swing: np.ndarray, foot_force: np.ndarray) -> np.ndarray:
    """(N, 2) True where the clock has a foot in full swing (``swing`` (N, 2), see
    :func:`swing_share`) and it is off the ground (``foot_force`` (N, 2, 3))."""
    return (swing > 0.99) & (foot_force[..., 2] < CONTACT_FORCE)


RewardFn = Callable[..., np.ndarray]
REWARD_TERMS: dict[str, RewardFn] = {}
TERMINATIONS: dict[str, RewardFn] = {}


def reward_term(fn: RewardFn) -> RewardFn:
    REWARD_TERMS[fn.__name__] = fn
    return fn


def termination(fn: RewardFn) -> RewardFn:
    TERMINATIONS[fn.__name__] = fn
    return fn


def resolve(name: str, registry: dict[str, RewardFn], kind: str) -> RewardFn:
    """A registered function by name, or ``package.module:function``."""
    if name in registry:
        return registry[name]
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"{kind} {name!r} cannot be imported: {err}") from None
    raise ValueError(f"unknown {kind} {name!r}; registered: {', '.join(sorted(registry))} "
                     f"(or give package.module:function)")


# ---------------------------------------------------------------------- survival


@reward_term
def alive(ctx: StepContext) -> np.ndarray:
    """1 per step survived. A negative weight lowers what every step is worth, and with it what
    a fall costs against the reward still to come: a policy that fears falling more than it
    wants the gait terms settles on shuffling with both feet loaded."""
    return np.ones(ctx.pelvis_pos.shape[0])


# ---------------------------------------------------------------------- speed tracking


@reward_term
def forward_velocity(ctx: StepContext, scale: float = 4.0) -> np.ndarray:
    """exp(−scale·|vx − command|), vx along the commanded heading."""
    return np.exp(-scale * np.abs(ctx.heading_frame_velocity()[:, 0] - ctx.command[:, 0]))


@reward_term
def lateral_velocity(ctx: StepContext, scale: float = 4.0) -> np.ndarray:
    """exp(−scale·|vy − command|), vy across the commanded heading."""
    return np.exp(-scale * np.abs(ctx.heading_frame_velocity()[:, 1] - ctx.command[:, 1]))


@reward_term
def yaw_rate(ctx: StepContext, scale: float = 2.0) -> np.ndarray:
    """exp(−scale·|ωz − command|)."""
    return np.exp(-scale * np.abs(ctx.pelvis_angvel[:, 2] - ctx.command[:, 2]))


@reward_term
def heading(ctx: StepContext, scale: float = 3.0) -> np.ndarray:
    """exp(−scale·|yaw − commanded heading|)."""
    return np.exp(-scale * np.abs(wrap_angle(quat_yaw(ctx.pelvis_quat) - ctx.target_heading)))


@reward_term
def upright(ctx: StepContext, scale: float = 5.0) -> np.ndarray:
    """exp(−scale·(1 − cos tilt)): the pelvis z axis against the world's."""
    q = ctx.pelvis_quat
    cos_tilt = 1.0 - 2.0 * (q[:, 1] ** 2 + q[:, 2] ** 2)
    return np.exp(-scale * (1.0 - cos_tilt))


@reward_term
def pelvis_height(ctx: StepContext, target: float = 0.95, scale: float = 20.0) -> np.ndarray:
    """exp(−scale·|z − target|)."""
    return np.exp(-scale * np.abs(ctx.pelvis_pos[:, 2] - target))


@reward_term
def pelvis_still(ctx: StepContext, scale: float = 2.0) -> np.ndarray:
    """exp(−scale·(|v| + 0.3|ω|)): no drift and no rocking while standing."""
    return np.exp(-scale * (np.linalg.norm(ctx.pelvis_vel, axis=1)
                            + 0.3 * np.linalg.norm(ctx.pelvis_angvel, axis=1)))


@reward_term
def capture_point(ctx: StepContext, scale: float = 10.0) -> np.ndarray:
    """exp(−scale·|c − f|) in the ground plane: c the pelvis's capture point x + v·√(z/g)
    (Pratt et al. 2006), f the midpoint of the feet. Standing over the feet scores 1; after a
    push c runs ahead, and a step towards it, not only a stiffer stance, wins the score back."""
    time_constant = np.sqrt(np.maximum(ctx.pelvis_pos[:, 2], 0.0) / 9.81)
    capture = ctx.pelvis_pos[:, :2] + ctx.pelvis_vel[:, :2] * time_constant[:, None]
    miss = capture - ctx.foot_pos[:, :, :2].mean(axis=1)
    return np.exp(-scale * np.linalg.norm(miss, axis=1))


@reward_term
def lateral_position(ctx: StepContext, scale: float = 1.0) -> np.ndarray:
    """exp(−scale·|y|), y across the commanded heading (RSS-2020): stay on the line it started
    on. Episodes start at the world origin, so that line runs through it along the heading;
    the evaluation's lateral drift is this y at the end."""
    c, s = np.cos(ctx.target_heading), np.sin(ctx.target_heading)
    return np.exp(-scale * np.abs(-s * ctx.pelvis_pos[:, 0] + c * ctx.pelvis_pos[:, 1]))


@reward_term
def torque(ctx: StepContext, scale: float = 0.02) -> np.ndarray:
    """exp(−scale·mean|τ|)."""
    return np.exp(-scale * np.abs(ctx.motor_torque).mean(axis=1))


@reward_term
def action_rate(ctx: StepContext, scale: float = 5.0) -> np.ndarray:
    """exp(−scale·mean|Δa|): smooth targets."""
    return np.exp(-scale * np.abs(ctx.action - ctx.last_action).mean(axis=1))


@reward_term
def spring(ctx: StepContext, scale: float = 1000.0) -> np.ndarray:
    """exp(−scale·Σ shin deflection²) (RSS-2020's spring term against a zero reference)."""
    return np.exp(-scale * (ctx.shin_pos ** 2).sum(axis=1))


# ---------------------------------------------------------------------- periodic gait


@reward_term
def swing_foot_force(ctx: StepContext, scale: float = 0.01) -> np.ndarray:
    """exp(−scale·Σ swing·|F|): no ground force on a foot that should be in the air."""
    force = np.linalg.norm(ctx.foot_force, axis=2)
    return np.exp(-scale * (ctx.swing() * force).sum(axis=1))


@reward_term
def stance_foot_speed(ctx: StepContext, scale: float = 2.0) -> np.ndarray:
    """exp(−scale·Σ stance·|v|): a foot that should be on the ground does not slide or lift."""
    speed = np.linalg.norm(ctx.foot_vel, axis=2)
    return np.exp(-scale * ((1.0 - ctx.swing()) * speed).sum(axis=1))


@reward_term
def swing_foot_velocity(ctx: StepContext, scale: float = 1.0) -> np.ndarray:
    """exp(−scale·Σ swing·|v_foot − v_cmd / swing_ratio|), planar, in the commanded heading's
    frame: a swing foot covers a whole stride while in the air, so it must move at the commanded
    velocity over the swing ratio. Shaping that leads from stepping in place to walking: the
    foot is rewarded for heading forward before the pelvis follows."""
    c, s = np.cos(ctx.target_heading)[:, None], np.sin(ctx.target_heading)[:, None]
    v = ctx.foot_vel
    forward = c * v[:, :, 0] + s * v[:, :, 1]
    lateral = -s * v[:, :, 0] + c * v[:, :, 1]
    wanted = ctx.command[:, :2] / ctx.swing_ratio
    error = np.hypot(forward - wanted[:, :1], lateral - wanted[:, 1:2])
    return np.exp(-scale * (ctx.swing() * error).sum(axis=1))


@reward_term
def swing_foot_height(ctx: StepContext, target: float = 0.12, scale: float = 20.0) -> np.ndarray:
    """exp(−scale·Σ swing·max(0, target − z)): lift the swing foot clear of the ground."""
    shortfall = np.maximum(0.0, target - ctx.foot_pos[:, :, 2])
    return np.exp(-scale * (ctx.swing() * shortfall).sum(axis=1))


# ---------------------------------------------------------------------- imitation


_IMITATION_JOINT_WEIGHTS = np.array([0.15, 0.15, 0.1, 0.05, 0.05] * 2)


@reward_term
def imitation_joints(ctx: StepContext, scale: float = 30.0) -> np.ndarray:
    """exp(−Σ scale·w·(q_ref − q)²) over the motors (the original's joint term)."""
    from cassie_rl_ros.envs.reference import MOTOR_QPOS_INDEX
    ref = ctx.reference_qpos[:, MOTOR_QPOS_INDEX]
    err = (scale * _IMITATION_JOINT_WEIGHTS * (ref - ctx.motor_pos) ** 2).sum(axis=1)
    return np.exp(-err)


@reward_term
def imitation_com(ctx: StepContext) -> np.ndarray:
    """exp(−Σxyz (ref − pos)²) of the pelvis."""
    return np.exp(-((ctx.reference_qpos[:, :3] - ctx.pelvis_pos) ** 2).sum(axis=1))


@reward_term
def imitation_orientation(ctx: StepContext) -> np.ndarray:
    """exp(−Σ (q_ref − q)²) of the pelvis quaternion."""
    return np.exp(-((ctx.reference_qpos[:, 3:7] - ctx.pelvis_quat) ** 2).sum(axis=1))


@reward_term
def imitation_spring(ctx: StepContext, scale: float = 1000.0) -> np.ndarray:
    """exp(−Σ scale·(ref − shin)²)."""
    from cassie_rl_ros.envs.reference import SHIN_QPOS_INDEX
    return np.exp(-(scale * (ctx.reference_qpos[:, SHIN_QPOS_INDEX] - ctx.shin_pos) ** 2)
                  .sum(axis=1))


# ---------------------------------------------------------------------- terminations


@termination
def fallen(ctx: StepContext, min_height: float = 0.6, max_height: float = 3.0) -> np.ndarray:
    """The pelvis left (min_height, max_height)."""
    z = ctx.pelvis_pos[:, 2]
    return (z < min_height) | (z > max_height)


@termination
def tilted(ctx: StepContext, max_tilt: float = 1.0) -> np.ndarray:
    """The pelvis tilted more than ``max_tilt`` rad from upright."""
    q = ctx.pelvis_quat
    return 1.0 - 2.0 * (q[:, 1] ** 2 + q[:, 2] ** 2) < np.cos(max_tilt)
