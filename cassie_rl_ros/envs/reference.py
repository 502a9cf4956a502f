"""Reference trajectories in the original library's ``.bin`` format.

Each row is 98 little-endian float64 values sampled at 2 kHz: time 1, qpos 35, qvel 32, torque 10,
motor position 10, motor velocity 10. The original Cassie model and this project's share the
generalised-coordinate layout (pelvis free joint, then per leg hip roll, yaw, pitch, achilles ball,
knee, shin, tarsus, heel spring, foot crank, plantar rod, foot), so qpos and qvel map one to one;
``check_layout`` verifies that against the compiled model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from cassie_sim_ros import constants as C
from cassie_sim_ros.model import MOTOR_QPOS_INDEX, MOTOR_QVEL_INDEX

COLUMNS = 98
SHIN_QPOS_INDEX = [15, 29]
TARSUS_QPOS_INDEX = [16, 30]


class ReferenceError(ValueError):
    """A reference trajectory file is missing, truncated or malformed."""


@dataclass(frozen=True)
class ReferenceTrajectory:
    time: np.ndarray  # (T,)
    qpos: np.ndarray  # (T, 35)
    qvel: np.ndarray  # (T, 32)
    torque: np.ndarray  # (T, 10)
    motor_pos: np.ndarray  # (T, 10)
    motor_vel: np.ndarray  # (T, 10)

    @property
    def num_samples(self) -> int:
        return self.time.shape[0]

    @property
    def cycle_advance(self) -> float:
        """Forward distance the pelvis covers in one pass through the trajectory (m)."""
        return float(self.qpos[-1, 0] - self.qpos[0, 0])

    def index(self, phase: np.ndarray) -> np.ndarray:
        """Sample index of gait phases in [0, 1)."""
        return np.minimum((np.asarray(phase) * self.num_samples).astype(np.int64),
                          self.num_samples - 1)


def load_reference(path: str | Path) -> ReferenceTrajectory:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ReferenceError(f"cannot read reference trajectory {path}: {err.strerror}") from None
    row_bytes = COLUMNS * 8
    if len(raw) == 0 or len(raw) % row_bytes:
        raise ReferenceError(f"{path}: {len(raw)} bytes is not a whole number of {COLUMNS}-column "
                             f"float64 rows ({row_bytes} bytes each): truncated or not a "
                             f"reference trajectory")
    data = np.frombuffer(raw, dtype="<f8").reshape(-1, COLUMNS)
    if not np.all(np.isfinite(data)):
        raise ReferenceError(f"{path}: contains non-finite values")
    quat_norm = np.linalg.norm(data[:, 4:8], axis=1)
    if not np.allclose(quat_norm, 1.0, atol=1e-3):
        raise ReferenceError(f"{path}: pelvis quaternions (columns 4-7) are not unit length; "
                             f"not a Cassie reference trajectory")
    return ReferenceTrajectory(time=data[:, 0].copy(), qpos=data[:, 1:36].copy(),
                               qvel=data[:, 36:68].copy(), torque=data[:, 68:78].copy(),
                               motor_pos=data[:, 78:88].copy(), motor_vel=data[:, 88:98].copy())


def save_reference(path: str | Path, trajectory: ReferenceTrajectory) -> None:
    rows = np.concatenate([trajectory.time[:, None], trajectory.qpos, trajectory.qvel,
                           trajectory.torque, trajectory.motor_pos, trajectory.motor_vel], axis=1)
    Path(path).write_bytes(rows.astype("<f8").tobytes())


def check_layout(model: mujoco.MjModel) -> None:
    """Raise if the model's motor coordinates are not where the original format has them."""
    qadr = [int(model.jnt_qposadr[model.joint(n).id]) for n in C.MOTOR_NAMES]
    dadr = [int(model.jnt_dofadr[model.joint(n).id]) for n in C.MOTOR_NAMES]
    if qadr != MOTOR_QPOS_INDEX or dadr != MOTOR_QVEL_INDEX or model.nq != 35 or model.nv != 32:
        raise ReferenceError("the model's coordinate layout differs from the reference format")
