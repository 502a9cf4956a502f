"""Observations and their mirror images: the one function both the training env and the policy
node use to turn what the robot reports into the policy's input.

Layouts (``ObservationConfig.state``):

- ``sensors``: only what the robot's own sensors give, so a policy runs on hardware unchanged:
  gravity in the pelvis frame (3, from the IMU orientation), heading error (1, IMU yaw minus the
  commanded heading), gyro (3), motor positions (10), motor velocities (10), passive joint
  positions (6) and velocities (6).
- ``true_state``: the original library's 40 values of simulator ground truth (qpos without
  pelvis x, and qvel without the achilles, heel-spring and plantar-rod joints).
- ``state_est``: the original library's 46 values of the state estimator's output
  (``cassie_sim_ros.estimator.observation_46``): pelvis height above terrain, orientation,
  world-frame velocities and acceleration, motor and joint states.

Then the task inputs: the reference trajectory's next state (reference envs), the clock
``[sin 2πφ, cos 2πφ]`` (clock envs), the speed command (forward, and lateral and yaw rate when
commanded) and the stepping frequency when observed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from cassie_sim_ros import constants as C
from cassie_sim_ros.sim import SensorReadings

# Leg joints of the original 40-value state, per leg, in qpos order.
_TRUE_STATE_LEG_JOINTS = ("hip_roll", "hip_yaw", "hip_pitch", "knee", "shin", "tarsus", "foot")
TASK_INPUTS = frozenset({"clock_sin", "clock_cos", "cmd_vx", "cmd_vy", "cmd_yaw_rate",
                         "step_frequency"})
"""Observations that say what to do, not what the robot measures (their scale is known)."""


@dataclass(frozen=True)
class ObservationConfig:
    """What the policy sees."""

    state: Literal["sensors", "true_state", "state_est"] = "sensors"
    """Robot state source: robot sensors, simulator ground truth, or the state estimator."""
    clock: bool = True
    """Append [sin 2πφ, cos 2πφ] of the gait phase φ."""
    reference: bool = False
    """Append the reference trajectory's state at the next phase (40 values, true_state layout)."""
    command: Literal["forward", "full"] = "forward"
    """forward: the forward speed command; full: forward, lateral speed and yaw rate."""
    step_frequency: bool = True
    """Append the stepping frequency (phase increment multiplier)."""
    noise_scale: float = 0.0
    """Multiplier on ``noise_std`` of the added Gaussian observation noise (0: none)."""


@dataclass
class TaskInputs:
    """Per-env task state that enters the observation, (N, ...) arrays."""

    phase: np.ndarray  # (N,) gait phase in [0, 1)
    command: np.ndarray  # (N, 3) forward speed, lateral speed (m/s), yaw rate (rad/s)
    step_frequency: np.ndarray  # (N,)
    target_heading: np.ndarray  # (N,) rad, world yaw the robot should face


def quat_yaw(quat: np.ndarray) -> np.ndarray:
    """Yaw (rad) of quaternions w, x, y, z, (N, 4)."""
    w, x, y, z = quat[:, 0], quat[:, 1], quat[:, 2], quat[:, 3]
    return np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def gravity_in_frame(quat: np.ndarray) -> np.ndarray:
    """Unit gravity direction (0, 0, -1) expressed in the frame of orientation ``quat``."""
    w, x, y, z = quat[:, 0], quat[:, 1], quat[:, 2], quat[:, 3]
    # Third row of R(q), negated: R^T (0, 0, -1).
    return -np.stack([2.0 * (x * z - w * y), 2.0 * (y * z + w * x),
                      1.0 - 2.0 * (x * x + y * y)], axis=1)


def wrap_angle(angle: np.ndarray) -> np.ndarray:
    return (angle + np.pi) % (2.0 * np.pi) - np.pi


def _true_state_indices(model_joint_qadr, model_joint_dadr) -> tuple[list[int], list[int]]:
    qpos = [1, 2, 3, 4, 5, 6]  # pelvis y, z, quaternion
    qvel = [0, 1, 2, 3, 4, 5]
    for side in C.SIDES:
        for joint in _TRUE_STATE_LEG_JOINTS:
            qpos.append(model_joint_qadr[f"{side}_{joint}"])
            qvel.append(model_joint_dadr[f"{side}_{joint}"])
    return qpos, qvel


class ObservationBuilder:
    """Builds observations of one layout and knows their size, names and mirror matrix."""

    def __init__(self, config: ObservationConfig, joint_qadr: dict[str, int] | None = None,
                 joint_dadr: dict[str, int] | None = None):
        self.config = config
        if config.state == "true_state" or config.reference:
            if joint_qadr is None or joint_dadr is None:
                raise ValueError("true_state and reference layouts need the model's joint "
                                 "addresses")
            self._qpos_idx, self._qvel_idx = _true_state_indices(joint_qadr, joint_dadr)
        self.names = self._names()
        self.size = len(self.names)
        self.task_indices = tuple(i for i, name in enumerate(self.names) if name in TASK_INPUTS)
        """Where the clock, command and stepping frequency are: inputs on a fixed scale."""
        self.mirror = self._mirror_matrix()
        self.noise_std = self._noise_std()

    # ------------------------------------------------------------------ layout

    def _state_names(self, state: str) -> list[str]:
        if state == "state_est":
            return (["est_height", "est_qw", "est_qx", "est_qy", "est_qz"]
                    + [f"{m}_pos" for m in C.MOTOR_NAMES]
                    + ["est_vx", "est_vy", "est_vz", "est_wx", "est_wy", "est_wz"]
                    + [f"{m}_vel" for m in C.MOTOR_NAMES] + ["est_ax", "est_ay", "est_az"]
                    + [f"{j}_pos" for j in C.PASSIVE_JOINT_NAMES]
                    + [f"{j}_vel" for j in C.PASSIVE_JOINT_NAMES])
        if state == "sensors":
            return (["gravity_x", "gravity_y", "gravity_z", "heading_error",
                     "gyro_x", "gyro_y", "gyro_z"]
                    + [f"{m}_pos" for m in C.MOTOR_NAMES] + [f"{m}_vel" for m in C.MOTOR_NAMES]
                    + [f"{j}_pos" for j in C.PASSIVE_JOINT_NAMES]
                    + [f"{j}_vel" for j in C.PASSIVE_JOINT_NAMES])
        legs = [f"{s}_{j}" for s in C.SIDES for j in _TRUE_STATE_LEG_JOINTS]
        return (["pelvis_y", "pelvis_z", "pelvis_qw", "pelvis_qx", "pelvis_qy", "pelvis_qz"]
                + [f"{j}_pos" for j in legs]
                + ["pelvis_vx", "pelvis_vy", "pelvis_vz", "pelvis_wx", "pelvis_wy", "pelvis_wz"]
                + [f"{j}_vel" for j in legs])

    def _names(self) -> list[str]:
        names = self._state_names(self.config.state)
        if self.config.reference:
            names += [f"ref_{name}" for name in self._state_names("true_state")]
        if self.config.clock:
            names += ["clock_sin", "clock_cos"]
        names += ["cmd_vx"] if self.config.command == "forward" else ["cmd_vx", "cmd_vy",
                                                                       "cmd_yaw_rate"]
        if self.config.step_frequency:
            names.append("step_frequency")
        return names

    def _mirror_matrix(self) -> np.ndarray:
        """Signed permutation mapping an observation to that of the mirrored robot."""
        index = {name: i for i, name in enumerate(self.names)}
        negate = {"gravity_y", "heading_error", "gyro_x", "gyro_z", "pelvis_y", "pelvis_qx",
                  # apex's corrected estimator list: quaternion x and z, lateral velocity, roll
                  # and yaw rates, lateral acceleration
                  "est_qx", "est_qz", "est_vy", "est_wx", "est_wz", "est_ay",
                  "pelvis_qz", "pelvis_vy", "pelvis_wx", "pelvis_wz", "cmd_vy", "cmd_yaw_rate",
                  # half a gait cycle later the legs have swapped roles
                  "clock_sin", "clock_cos"}
        mirror = np.zeros((self.size, self.size), dtype=np.float32)
        for name, i in index.items():
            prefix = "ref_" if name.startswith("ref_") else ""
            base = name[len(prefix):]
            source = base
            sign = -1.0 if base in negate else 1.0
            for a, b in (("left_", "right_"), ("right_", "left_")):
                if base.startswith(a):
                    source = b + base[len(a):]
                    if "hip_roll" in base or "hip_yaw" in base:
                        sign = -1.0
            mirror[i, index[prefix + source]] = sign
        return mirror

    def _noise_std(self) -> np.ndarray:
        """Per-entry observation noise (before ``noise_scale``): what the sensors add."""
        std = np.zeros(self.size, dtype=np.float32)
        for i, name in enumerate(self.names):
            if name.startswith(("gyro", "pelvis_w", "est_w", "est_a")):
                std[i] = 0.05
            elif name.startswith(("gravity", "pelvis_q", "est_q", "est_height")) or (
                    name == "heading_error"):
                std[i] = 0.02
            elif name.startswith("est_v"):
                std[i] = 0.05
            elif name.endswith("_pos") and not name.startswith("cmd"):
                std[i] = 0.01
            elif name.endswith("_vel") or name.startswith("pelvis_v"):
                std[i] = 0.1
        return std

    # ------------------------------------------------------------------ values

    def build(self, sensors: SensorReadings, task: TaskInputs, qpos: np.ndarray | None = None,
              qvel: np.ndarray | None = None, rng: np.random.Generator | None = None,
              reference: tuple[np.ndarray, np.ndarray] | None = None,
              estimate=None) -> np.ndarray:
        """Observations (N, size) float32 from sensor readings (ground truth qpos and qvel for
        ``true_state``, the estimator's ``EstimatorState`` for ``state_est``, the reference
        trajectory's (qpos, qvel) for reference envs)."""
        if self.config.state == "sensors":
            quat = sensors.imu_orientation
            heading_error = wrap_angle(quat_yaw(quat) - task.target_heading)
            parts = [gravity_in_frame(quat), heading_error[:, None], sensors.imu_angular_velocity,
                     sensors.motor_position, sensors.motor_velocity, sensors.joint_position,
                     sensors.joint_velocity]
        elif self.config.state == "state_est":
            if estimate is None:
                raise ValueError("the state_est layout needs the state estimator's output")
            from cassie_sim_ros.estimator import observation_46
            parts = [observation_46(estimate)]
        else:
            if qpos is None or qvel is None:
                raise ValueError("the true_state layout needs qpos and qvel")
            parts = [qpos[:, self._qpos_idx], qvel[:, self._qvel_idx]]
        if self.config.reference:
            if reference is None:
                raise ValueError("reference observations need the reference state")
            parts += [reference[0][:, self._qpos_idx], reference[1][:, self._qvel_idx]]
        if self.config.clock:
            angle = 2.0 * np.pi * task.phase
            parts += [np.sin(angle)[:, None], np.cos(angle)[:, None]]
        parts.append(task.command[:, :1] if self.config.command == "forward" else task.command)
        if self.config.step_frequency:
            parts.append(task.step_frequency[:, None])
        obs = np.concatenate(parts, axis=1).astype(np.float32)
        if self.config.noise_scale > 0.0 and rng is not None:
            obs += (rng.standard_normal(obs.shape) * self.noise_std
                    * self.config.noise_scale).astype(np.float32)
        return obs


def action_mirror_matrix() -> np.ndarray:
    """Signed permutation mirroring a 10-motor action: swap legs, negate hip roll and yaw."""
    mirror = np.zeros((C.NUM_MOTORS, C.NUM_MOTORS), dtype=np.float32)
    per_leg = len(C.LEG_MOTORS)
    for i in range(C.NUM_MOTORS):
        j = (i + per_leg) % C.NUM_MOTORS
        mirror[i, j] = -1.0 if C.LEG_MOTORS[i % per_leg] in ("hip_roll", "hip_yaw") else 1.0
    return mirror
