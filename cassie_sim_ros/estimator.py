"""``CassieEstimator``: a contact-aided invariant EKF for N Cassies, from the robot's own sensors.

The open counterpart of the robot's closed estimator (``state_out_t``): what a ``state_est``
policy sees instead of the true MuJoCo state. It follows Hartley et al., "Contact-aided invariant
extended Kalman filtering for robot state estimation" (IJRR 2020, tested on Cassie):

- State: the IMU's orientation ``R``, velocity ``v`` and position ``p`` in the world, the two
  foot contact points ``d_l``, ``d_r``, and optionally gyro and accelerometer biases. ``R, v, p,
  d_l, d_r`` form the group SE_4(3); the error is right-invariant (``η = X̂ X⁻¹``), so with
  biases off the error dynamics do not depend on the estimate.
- Propagation: the mean with gyro and accelerometer at every update (the robot's 2 kHz); the
  covariance, over the time since the last correction, when corrections run (every
  ``correction_every`` updates, 250 Hz by default). A foot point stays put up to a process noise.
  Readings of every robot at once wait and are propagated together at the next correction or
  read (``state()``), to the bit as one by one: at N = 1 numpy's per-call overhead is the cost.
- Corrections: leg kinematics (the contact point from the IMU, by the encoders) for each foot in
  steady contact; the roll and pitch of the IMU's own orientation output (an AHRS: its yaw
  drifts on a real robot and is not used); and zero velocity when no foot is in contact and the
  IMU has been still (lying on the ground, hanging). The contact points are fixed-size state: a
  foot out of contact is re-seated at ``p + R·h`` with the covariance of that expression (the
  fixed-size form of Hartley's state augmentation), so touchdown needs no special case.
- Leg kinematics: in this model the foot motor turns the foot joint itself and the foot crank is
  the passive joint, so the chain pelvis → hip roll → hip yaw → hip pitch → knee → shin → tarsus
  → foot is serial in measured angles (motor encoders, shin and tarsus encoders). The closed
  chains (achilles rod, plantar rod) only decide where the passive joints come to rest, which is
  measured. Body offsets, frames and joint axes are read from the compiled MuJoCo model, so the
  forward kinematics is MuJoCo's own (to 1e-15 m), vectorised over robots in numpy.
- Contact: shin-spring deflection with hysteresis. The sole is a capsule: a level foot touches
  with its centre, a pitched one with its heel or toe end (a change re-seats the foot), and a
  foot in contact rolls (its axis point moves by Δφ × r·e_z) and, on soft ground (the
  simulator's; ``contact_creep``), creeps against the horizontal force it carries (half as fast
  flat, on both sole ends), that force taken as the robot's mass times the IMU's horizontal
  acceleration, shared by load. A foot whose innovation exceeds a gate (1 mm + 0.5 m/s × Δt)
  is slipping: it leaves that correction and is re-seated.
- Bad inputs: a non-finite value, a value outside the sensor's range, or a one-update jump that
  the physics cannot make, in any input of a robot, rejects that robot's whole update: its state
  is left untouched and ``rejected_updates`` counts it. The next accepted update integrates over
  the skipped time.

Everything is vectorised over robots; one robot is N = 1 and gives bit-identical results to the
same robot inside a batch. No rclpy.

Frames: world z up, gravity ``-9.81 z``. Orientations are quaternions w, x, y, z.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import mujoco
import numpy as np

from cassie_sim_ros import constants as C
from cassie_sim_ros.model import load_model

GRAVITY = np.array([0.0, 0.0, -9.81])

# Error-state layout: rotation, velocity, position, left and right contact, gyro and accel bias.
_R, _V, _P, _DL, _DR, _BG, _BA = (slice(3 * i, 3 * i + 3) for i in range(7))
_DIM = 21
_FOOT = (_DL, _DR)
_SIDES = np.array([0, 1])

# Order of the leg joints in the serial chain, and where each angle comes from: ("m", k) is motor
# k of the leg (hip roll, hip yaw, hip pitch, knee, foot), ("j", k) passive joint k (shin, tarsus).
_CHAIN = (("hip_roll", "m", 0), ("hip_yaw", "m", 1), ("hip_pitch", "m", 2), ("knee", "m", 3),
          ("shin", "j", 0), ("tarsus", "j", 1), ("foot", "m", 4))


# ------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class InputLimits:
    """What counts as a bad input. ``*_max`` bound the magnitude of each value; ``*_jump`` bound
    the change from one update to the next at 2 kHz (scaled up for a longer ``dt``). A value past
    its jump bound relative to both the last accepted and the last received reading is a spike;
    a step that persists is accepted on its second sample."""

    encoder_max: float = 2.0 * math.pi
    """Motor and joint positions (rad)."""
    encoder_jump: float = 0.2
    motor_velocity_max: float = 100.0
    """Motor velocities (rad/s)."""
    motor_velocity_jump: float = 30.0
    joint_velocity_max: float = 300.0
    """Shin, tarsus and foot-crank velocities (rad/s): impacts make them large."""
    joint_velocity_jump: float = 200.0
    torque_max: float = 1000.0
    """Motor torques (N·m); only passed through, so only the magnitude is checked."""
    gyro_max: float = 35.0
    """Angular velocity (rad/s): a VectorNav VN-100's ±2000 °/s."""
    gyro_jump: float = 10.0
    accel_max: float = 1000.0
    """Linear acceleration (m/s²). A real IMU saturates near ±16 g, but a stiff simulated impact
    is briefer and larger, and rejecting it would lose its velocity change."""
    accel_jump: float = 1000.0
    orientation_norm_tolerance: float = 0.1
    """The IMU quaternion's norm must be within this of 1."""
    orientation_jump: float = 0.2
    """Rotation (rad) between consecutive orientation readings."""


SIMULATED_CONTACT_CREEP = 6e-4
"""``EstimatorConfig.contact_creep`` of this project's MuJoCo model: its friction regularisation
(solref 0.005) lets Cassie's sole end spheres creep at 0.61 mm/s per N (least squares over
``bench/estimator.py``'s stances, R² 0.75-0.99 with rolling; both ends touching: 0.33)."""


@dataclass(frozen=True)
class EstimatorConfig:
    """Noise model, contact detection and output filtering of ``CassieEstimator``.

    Noise densities are continuous-time (per √Hz); standard deviations are per update.
    """

    gyro_noise: float = 2e-3
    """Gyro white noise (rad/s/√Hz)."""
    accel_noise: float = 2e-2
    """Accelerometer white noise (m/s²/√Hz)."""
    estimate_bias: bool = True
    """Estimate gyro and accelerometer biases (the "imperfect" InEKF); off keeps them at zero."""
    gyro_bias_walk: float = 1e-4
    """Gyro bias random walk (rad/s²/√Hz)."""
    accel_bias_walk: float = 1e-3
    """Accelerometer bias random walk (m/s³/√Hz)."""
    contact_noise: float = 0.01
    """Foot contact point random walk (m/s/√Hz): slip, rolling of the round sole, compliance."""
    kinematics_std: float = 0.004
    """Leg kinematics measurement noise per correction (m per axis): encoder noise, model error
    and contact compliance together."""
    use_ahrs_tilt: bool = True
    """Correct roll and pitch with the IMU's own orientation output (its yaw is never used)."""
    tilt_std: float = 0.02
    """Noise of the AHRS gravity direction per correction (rad), taken as white: at 250 Hz the
    effective weight is still high, so roll and pitch follow the AHRS's slowly varying error
    rather than its jitter."""
    slip_floor: float = 0.001
    """A foot whose kinematic innovation at a correction exceeds ``slip_floor + slip_speed·Δt``
    (Δt since the last correction) is slipping: it leaves that correction and is re-seated. A
    foot in steady contact shows innovations under 1 mm (99th percentile) ..."""
    slip_speed: float = 0.5
    """... and the gate grows with the foot's allowed speed (m/s): 3 mm at 250 Hz."""
    contact_on: float = -0.012
    """Shin deflection (rad, negative = loaded) below which a foot touches down."""
    contact_off: float = -0.006
    """Shin deflection above which a foot in contact lifts off (hysteresis)."""
    roll_on_deg: float = 2.0
    """Sole pitch (deg) past which the foot is taken to rest on its heel or toe end rather than
    its centre: the contact point moves there (and the foot is re-seated)."""
    roll_off_deg: float = 1.0
    """Sole pitch below which a foot on its heel or toe is flat again (hysteresis)."""
    contact_creep: float = 0.0
    """Creep of a foot resting on its heel or toe end (m/s per N of horizontal force on it; a
    flat foot rests on both ends and creeps half as fast): a soft contact slides slowly,
    against the force it carries, well inside its friction cone. The force is the robot's mass
    times the IMU's horizontal acceleration over the last correction interval (no external
    force), shared by the feet in contact in proportion to their shin deflection. 0: a rigid
    contact, the default (a real robot's ground, until measured). The simulator's own estimate
    uses ``SIMULATED_CONTACT_CREEP``."""
    zero_velocity: bool = True
    """With no foot in contact and the IMU still (lying, hanging), measure zero velocity."""
    zero_velocity_std: float = 0.01
    """Noise of that pseudo-measurement per correction (m/s)."""
    still_gyro: float = 0.1
    """Still: low-passed angular speed below this (rad/s) ..."""
    still_accel: float = 1.0
    """... and low-passed deviation of the specific force from 1 g below this (m/s²)."""
    still_tau: float = 0.05
    """Time constant (s) of the stillness low-pass."""
    terrain_tau: float = 0.05
    """Time constant (s) of the terrain height under the robot, from the feet in steady
    contact (not slipping, not just touched down)."""
    joint_velocity_tau: float = 0.001
    """Time constant (s) of the low-pass on joint (shin, tarsus, crank) velocities; 0 = none."""
    init_tilt_std: float = 0.02
    """Initial roll and pitch uncertainty (rad)."""
    init_yaw_std: float = 1e-3
    """Initial yaw uncertainty (rad): yaw is unobservable, so this only sets its reference."""
    init_velocity_std: float = 0.1
    init_position_std: float = 1e-3
    init_gyro_bias_std: float = 5e-3
    init_accel_bias_std: float = 0.1
    correction_every: int = 8
    """Covariance propagation and the corrections run every this many updates (the mean is
    propagated with the IMU at every update): 8 is 250 Hz at the robot's 2 kHz. In
    ``bench/estimator.py`` 1, 2, 4 and 8 give the same accuracy to within 10 %; the cost of the
    corrections falls in proportion."""
    max_missed_updates: int = 20
    """After rejected updates, the next accepted one integrates over at most this many steps."""
    limits: InputLimits = field(default_factory=InputLimits)

    def __post_init__(self):
        for name in ("gyro_noise", "accel_noise", "gyro_bias_walk", "accel_bias_walk",
                     "contact_noise", "kinematics_std", "tilt_std", "slip_floor", "slip_speed",
                     "roll_on_deg",
                     "zero_velocity_std", "still_gyro", "still_accel",
                     "init_tilt_std", "init_yaw_std", "init_velocity_std", "init_position_std",
                     "init_gyro_bias_std", "init_accel_bias_std"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"estimator.{name} must be finite and > 0, got {value!r}")
        if not self.contact_on < self.contact_off:
            raise ValueError("estimator.contact_on must be below contact_off (hysteresis)")
        if not (np.isfinite(self.contact_creep) and self.contact_creep >= 0):
            raise ValueError("estimator.contact_creep must be finite and >= 0")
        if not 0 <= self.roll_off_deg < self.roll_on_deg:
            raise ValueError("estimator.roll_off_deg must be in [0, roll_on_deg) (hysteresis)")
        if self.correction_every < 1:
            raise ValueError("estimator.correction_every must be >= 1")
        if (self.terrain_tau < 0 or self.joint_velocity_tau < 0 or self.still_tau < 0
                or self.max_missed_updates < 0):
            raise ValueError("estimator time constants and max_missed_updates must be >= 0")


# ------------------------------------------------------------------------------------ outputs


@dataclass
class EstimatorState:
    """The estimate for every robot (leading axis N): the fields of ``state_out_t`` a policy
    uses. Pelvis quantities refer to the pelvis body origin."""

    pelvis_position: np.ndarray  # (N, 3) world (x, y from the start pose; drifts slowly)
    pelvis_orientation: np.ndarray  # (N, 4) w, x, y, z, pelvis in world (yaw drifts slowly)
    pelvis_rotational_velocity: np.ndarray  # (N, 3) rad/s, pelvis frame (gyro less bias)
    pelvis_translational_velocity: np.ndarray  # (N, 3) m/s, world frame
    pelvis_translational_acceleration: np.ndarray  # (N, 3) m/s², world, gravity removed, at IMU
    pelvis_height: np.ndarray  # (N,) m, pelvis above the terrain under the robot
    terrain_height: np.ndarray  # (N,) m, world z of the ground under the feet
    foot_position: np.ndarray  # (N, 2, 3) world, left and right sole centre
    foot_contact: np.ndarray  # (N, 2) bool
    motor_position: np.ndarray  # (N, 10) rad
    motor_velocity: np.ndarray  # (N, 10) rad/s
    motor_torque: np.ndarray  # (N, 10) N·m
    joint_position: np.ndarray  # (N, 6) rad: shin, tarsus, foot crank per leg
    joint_velocity: np.ndarray  # (N, 6) rad/s, low-passed
    gyro_bias: np.ndarray  # (N, 3) rad/s
    accel_bias: np.ndarray  # (N, 3) m/s²
    valid: np.ndarray  # (N,) bool: initialised since the last reset
    rejected_updates: np.ndarray  # (N,) int: updates rejected for bad inputs since construction
    consecutive_rejections: np.ndarray  # (N,) int


OBSERVATION_46_LAYOUT = (("pelvis_height", 1), ("pelvis_orientation", 4), ("motor_position", 10),
                         ("pelvis_translational_velocity", 3),
                         ("pelvis_rotational_velocity", 3), ("motor_velocity", 10),
                         ("pelvis_translational_acceleration", 3), ("joint_position", 6),
                         ("joint_velocity", 6))
"""The original library's 46-value estimator observation, in order (cassie_facts.md §4)."""


def observation_46(state: EstimatorState) -> np.ndarray:
    """(N, 46): pelvis height above terrain 1, orientation 4, motor position 10, translational
    velocity 3, rotational velocity 3, motor velocity 10, translational acceleration 3, joint
    position 6, joint velocity 6."""
    parts = [np.asarray(getattr(state, name)).reshape(len(state.valid), size)
             for name, size in OBSERVATION_46_LAYOUT]
    return np.concatenate(parts, axis=1)


# ------------------------------------------------------------------------------------ math


# w ↦ [w]× as one matrix product (a single numpy call matters at N = 1).
_SKEW_MAP = np.zeros((3, 9))
_SKEW_MAP[2, 1], _SKEW_MAP[1, 2], _SKEW_MAP[2, 3] = -1.0, 1.0, 1.0
_SKEW_MAP[0, 5], _SKEW_MAP[1, 6], _SKEW_MAP[0, 7] = -1.0, -1.0, 1.0


def _skew(w: np.ndarray) -> np.ndarray:
    """(..., 3) → (..., 3, 3) cross-product matrices."""
    return (w @ _SKEW_MAP).reshape(w.shape[:-1] + (3, 3))


def _exp_so3(phi: np.ndarray, jacobian: bool = False):
    """Rodrigues: Exp(φ), and with ``jacobian`` the left Jacobian J_l(φ), for (..., 3) vectors.

    Written without cancellation ((1 − cos θ)/θ² as ½ sinc²(θ/2)), so one formula serves every
    angle; below 1e-6 rad the coefficients are their limits to far under rounding error.
    """
    theta = np.sqrt((phi * phi).sum(-1))
    t = np.maximum(theta, 1e-6)[..., None, None]
    sin_t = np.sin(t)
    half = np.sin(0.5 * t) / (0.5 * t)
    K = _skew(phi)
    K2 = K @ K
    R = _EYE3 + (sin_t / t) * K + (0.5 * half * half) * K2
    if not jacobian:
        return R
    J = _EYE3 + (0.5 * half * half) * K + ((t - sin_t) / (t * t * t)) * K2
    return R, J


_EYE3 = np.eye(3)


def _exp_so3_small(phi: np.ndarray, jacobian: bool = False):
    """Exp(φ) ≈ I + K + ½K², and with ``jacobian`` J_l(φ) ≈ I + ½K + ⅙K², for the small rotations
    of one propagation step or correction (θ = |φ| ≲ 0.01 rad): the angle comes out short by
    θ³/6 (a scale error of θ²/6, 4e-6 at 10 rad/s over 0.5 ms) and orthonormality is lost by
    θ⁴/4, which ``CassieEstimator`` removes periodically."""
    K = _skew(phi)
    K2 = K @ K
    E = _EYE3 + K + 0.5 * K2
    return (E, _EYE3 + 0.5 * K + K2 * (1.0 / 6.0)) if jacobian else E


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """(..., 4) w, x, y, z (normalised here) → (..., 3, 3)."""
    q = q / np.sqrt((q * q).sum(-1))[..., None]
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    out = np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                    2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                    2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)
    return out.reshape(q.shape[:-1] + (3, 3))


def _gravity_map() -> np.ndarray:
    """Linear map from q·qᵀ (flattened) to |q|²·Rᵀe_z, the third row of R(q) times |q|²."""
    B = np.zeros((4, 4, 3))
    w, x, y, z = range(4)
    for (i, j), coef in {(x, z): (2, 0), (w, y): (-2, 0), (y, z): (2, 1), (w, x): (2, 1)}.items():
        B[i, j, coef[1]] += coef[0]
    for i, sign in ((w, 1), (x, -1), (y, -1), (z, 1)):
        B[i, i, 2] = sign
    return B.reshape(16, 3)


_GRAVITY_B = _gravity_map()


def _gravity_direction(q: np.ndarray) -> np.ndarray:
    """(k, 4) → (k, 3): the world's z axis in the body frame, Rᵀ e_z (third row of R(q))."""
    return (((q[:, :, None] * q[:, None, :]).reshape(-1, 16) @ _GRAVITY_B)
            / np.add.reduce(q * q, 1)[:, None])


def _quat_outer_map() -> tuple[np.ndarray, np.ndarray]:
    """Linear map from a flattened rotation matrix to 4·q·qᵀ (flattened 4x4), q = (w, x, y, z)."""
    B, c = np.zeros((9, 16)), np.zeros(16)
    m = lambda i, j: 3 * i + j  # noqa: E731
    for (r, col), terms in {
        (0, 0): [(+1, m(0, 0)), (+1, m(1, 1)), (+1, m(2, 2))],
        (1, 1): [(+1, m(0, 0)), (-1, m(1, 1)), (-1, m(2, 2))],
        (2, 2): [(-1, m(0, 0)), (+1, m(1, 1)), (-1, m(2, 2))],
        (3, 3): [(-1, m(0, 0)), (-1, m(1, 1)), (+1, m(2, 2))],
        (0, 1): [(+1, m(2, 1)), (-1, m(1, 2))],
        (0, 2): [(+1, m(0, 2)), (-1, m(2, 0))],
        (0, 3): [(+1, m(1, 0)), (-1, m(0, 1))],
        (1, 2): [(+1, m(0, 1)), (+1, m(1, 0))],
        (1, 3): [(+1, m(0, 2)), (+1, m(2, 0))],
        (2, 3): [(+1, m(1, 2)), (+1, m(2, 1))],
    }.items():
        for sign, k in terms:
            B[k, 4 * r + col] += sign
            if r != col:
                B[k, 4 * col + r] += sign
        if r == col:
            c[4 * r + col] = 1.0
    return B, c


_QUAT_B, _QUAT_C = _quat_outer_map()


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation → (..., 4) w, x, y, z with w >= 0 (Shepperd's method, vectorised:
    the row of 4·q·qᵀ with the largest diagonal entry is q times a well-conditioned factor)."""
    flat = R.reshape(-1, 9)
    Q = (flat @ _QUAT_B + _QUAT_C).reshape(-1, 4, 4)
    # (np.diagonal and integer rows: a few µs where fancy diagonals and take_along_axis cost
    # tens, and the estimator converts its orientation at every read)
    row = Q[np.arange(len(Q)), np.diagonal(Q, axis1=1, axis2=2).argmax(1)]
    row *= (np.copysign(1.0, row[:, :1]) / np.sqrt(np.add.reduce(row * row, 1))[:, None])
    return row.reshape(R.shape[:-2] + (4,))


# ------------------------------------------------------------------------------------ kinematics


class LegKinematics:
    """Foot positions relative to the pelvis from encoder readings, vectorised over robots.

    Reads each leg's serial chain (body offsets and frames, hinge axes, reference angles) and the
    foot and IMU sites from the compiled MuJoCo model, so the result is MuJoCo's forward
    kinematics of the same angles to rounding error.
    """

    def __init__(self, model: mujoco.MjModel | None = None):
        m = model if model is not None else load_model()
        self.imu_position = m.site("imu").pos.copy()
        if not np.allclose(m.site("imu").quat, [1, 0, 0, 0]):
            raise NotImplementedError("the IMU site must be aligned with the pelvis")
        # One homogeneous transform per chain link, and an identity to make 8: (8, 2 sides, 4, 4).
        # Link i maps its body frame into its parent's: x_parent = pos + R_body · Rz(q - q0) · x.
        template = np.broadcast_to(np.eye(4), (len(_CHAIN) + 1, 2, 4, 4)).copy()
        qref = np.zeros((len(_CHAIN), 2))
        for i, (name, _, _) in enumerate(_CHAIN):
            for s, side in enumerate(C.SIDES):
                body, joint = m.body(f"{side}_{name}"), m.joint(f"{side}_{name}")
                if (joint.type[0] != mujoco.mjtJoint.mjJNT_HINGE or np.any(joint.pos != 0)
                        or not np.allclose(joint.axis, [0, 0, 1])):
                    raise NotImplementedError(f"{side}_{name}: expected a hinge about local z "
                                              "at the body origin")
                R_body = np.empty(9)
                mujoco.mju_quat2Mat(R_body, body.quat)
                template[i, s, :3, :3] = R_body.reshape(3, 3)
                template[i, s, :3, 3] = body.pos
                qref[i, s] = m.qpos0[joint.qposadr[0]]
        # The sole: a capsule whose axis runs heel to toe through the foot site. Its points in
        # the foot frame, homogeneous columns: centre, heel end, toe end (the heel is the end
        # further back in the standing pose).
        points = np.zeros((2, 4, 3))
        for s, side in enumerate(C.SIDES):
            site = m.site(f"{side}_foot")
            geom = [g for g in range(m.ngeom) if m.geom_bodyid[g] == site.bodyid[0]
                    and m.geom_type[g] == mujoco.mjtGeom.mjGEOM_CAPSULE][0]
            R_geom = np.empty(9)
            mujoco.mju_quat2Mat(R_geom, m.geom_quat[geom])
            half = R_geom.reshape(3, 3)[:, 2] * m.geom_size[geom, 1]
            points[s, :3] = np.stack([site.pos, site.pos - half, site.pos + half], axis=1)
            points[s, 3] = 1.0
            self.sole_radius = float(m.geom_size[geom, 0])
        self._points = points
        self.total_mass = float(m.body_mass.sum())
        self._template = template
        self._col0 = template[:-1, :, :3, 0].copy()  # R_body columns x and y, (7, 2, 3)
        self._col1 = template[:-1, :, :3, 1].copy()
        self._qref = qref
        # Column of each chain angle in [motor_position (10) | joint_position (6)], per side.
        cols = []
        for side in range(2):
            cols.append([side * 5 + k if src == "m" else 10 + side * 3 + k
                         for _, src, k in _CHAIN])
        self._cols = np.array(cols).T  # (7, 2)

    def chain_angles(self, motor_position: np.ndarray, joint_position: np.ndarray) -> np.ndarray:
        """(N, 7, 2) chain angles per joint and side from (N, 10) motor and (N, 6) joint angles."""
        both = np.concatenate([motor_position, joint_position], axis=-1)
        return both[:, self._cols]

    def foot_frames(self, motor_position: np.ndarray, joint_position: np.ndarray):
        """Sole points (N, 2 sides, 3 points, 3) — centre, heel end and toe end of the sole
        capsule's axis — and foot orientations (N, 2, 3, 3), in the pelvis frame."""
        q = self.chain_angles(motor_position, joint_position) - self._qref
        c, s = np.cos(q)[..., None], np.sin(q)[..., None]
        T = np.empty((q.shape[0],) + self._template.shape)
        T[:] = self._template
        # R_body · Rz(q): columns x' = c·x + s·y and y' = c·y − s·x; z and the offset unchanged.
        T[:, :-1, :, :3, 0] = c * self._col0 + s * self._col1
        T[:, :-1, :, :3, 1] = c * self._col1 - s * self._col0
        # Product of the 8 transforms by pairs: 8 → 4 → 2 → 1.
        while T.shape[1] > 1:
            T = T[:, 0::2] @ T[:, 1::2]
        return (T[:, 0, :, :3] @ self._points).transpose(0, 1, 3, 2), T[:, 0, :, :3, :3]

    def foot_points(self, motor_position: np.ndarray, joint_position: np.ndarray) -> np.ndarray:
        """(N, 2 sides, 3 points, 3) sole centre, heel end and toe end in the pelvis frame."""
        return self.foot_frames(motor_position, joint_position)[0]

    def foot_positions(self, motor_position: np.ndarray, joint_position: np.ndarray) -> np.ndarray:
        """(N, 2, 3) left and right sole centres (the foot sites) in the pelvis frame."""
        return self.foot_points(motor_position, joint_position)[:, :, 0]


# ------------------------------------------------------------------------------------ IMU errors


@dataclass(frozen=True)
class ImuErrorConfig:
    """Errors the simulator's IMU does not have, for benchmarks and ``state_est`` training: the
    orientation output of a real AHRS (tilt offset, yaw drift, jitter) and gyro and
    accelerometer biases. Figures roughly a VectorNav VN-100's."""

    tilt_bias_std: float = math.radians(0.3)
    """Constant roll and pitch offset per robot (rad), drawn at reset."""
    tilt_noise_std: float = math.radians(0.05)
    """White noise on roll and pitch per reading (rad)."""
    yaw_drift_std: float = math.radians(0.5)
    """Random-walk yaw drift (rad/√s)."""
    gyro_bias_std: float = 1e-3
    """Constant gyro bias per axis (rad/s), drawn at reset."""
    accel_bias_std: float = 0.05
    """Constant accelerometer bias per axis (m/s²), drawn at reset."""


class ImuErrors:
    """Adds ``ImuErrorConfig``'s errors to ``SensorReadings`` of N robots (in place)."""

    def __init__(self, num_robots: int, dt: float, config: ImuErrorConfig | None = None,
                 seed: int = 0):
        self.config = config or ImuErrorConfig()
        self.dt = dt
        self._rng = np.random.default_rng(seed)
        n = num_robots
        self.tilt_bias = np.zeros((n, 2))
        self.yaw = np.zeros(n)
        self.gyro_bias = np.zeros((n, 3))
        self.accel_bias = np.zeros((n, 3))
        self.reset()

    def reset(self, ids=None):
        ids = np.arange(len(self.yaw)) if ids is None else np.atleast_1d(ids)
        c, rng, k = self.config, self._rng, len(ids)
        self.tilt_bias[ids] = rng.normal(0.0, c.tilt_bias_std, (k, 2))
        self.yaw[ids] = 0.0
        self.gyro_bias[ids] = rng.normal(0.0, c.gyro_bias_std, (k, 3))
        self.accel_bias[ids] = rng.normal(0.0, c.accel_bias_std, (k, 3))

    def apply(self, readings, ids=None):
        """Corrupt ``readings`` (rows = robots ``ids``, all by default) and return them."""
        ids = np.arange(len(self.yaw)) if ids is None else np.atleast_1d(ids)
        c, rng, k = self.config, self._rng, len(ids)
        self.yaw[ids] += rng.normal(0.0, c.yaw_drift_std * np.sqrt(self.dt), k)
        tilt = self.tilt_bias[ids] + rng.normal(0.0, c.tilt_noise_std, (k, 2))
        # Error rotation in the world frame: yaw about z after roll/pitch about x and y.
        err = np.stack([tilt[:, 0], tilt[:, 1], np.zeros(k)], -1)
        R_err = (_exp_so3(np.stack([np.zeros(k), np.zeros(k), self.yaw[ids]], -1))
                 @ _exp_so3(err))
        R = quat_to_matrix(readings.imu_orientation)
        readings.imu_orientation = matrix_to_quat(R_err @ R)
        readings.imu_angular_velocity = readings.imu_angular_velocity + self.gyro_bias[ids]
        readings.imu_linear_acceleration = readings.imu_linear_acceleration + self.accel_bias[ids]
        return readings


# ------------------------------------------------------------------------------------ estimator


class CassieEstimator:
    """Contact-aided invariant EKF for ``num_robots`` Cassies, one update per sensor reading.

    ``dt`` is the time between updates (the robot's 0.0005 s). Use::

        est = CassieEstimator(num_robots, dt)
        est.reset(ids, position=..., orientation=...)   # optional: defaults come from sensors
        state = est.update(sim.sensors())               # (N, ...) arrays
        obs = observation_46(state)

    A robot initialises on its first accepted update after a reset: orientation from the IMU
    (or ``reset``'s), position x, y from ``reset`` (default 0) and height so that its lower foot
    rests on terrain at z = 0 (or ``reset``'s position).

    Filter state per robot: ``R`` (3, 3) IMU orientation; ``X`` (4, 3) IMU velocity, IMU
    position, left and right contact point (world); ``b`` (6,) gyro and accel bias; ``P`` (21, 21)
    covariance of the error [rotation, velocity, position, left, right, gyro bias, accel bias].
    A contact point is the sole capsule's centre, or its heel or toe end when the foot is pitched
    (``foot_mode`` 0, 1, 2), on the capsule's axis, one sole radius above the ground.
    """

    # Input matrix columns: motor q 10, motor qd 10, joint q 6, joint qd 6, gyro 3, accel 3,
    # quaternion 4, motor torque 10.
    _INPUT_WIDTH = 52
    _GYRO, _ACC, _QUAT = slice(32, 35), slice(35, 38), slice(38, 42)
    _SHIN = slice(20, 24, 3)  # left and right shin encoders (slices index faster than lists)

    def __init__(self, num_robots: int, dt: float = 0.0005, config: EstimatorConfig | None = None,
                 model: mujoco.MjModel | None = None):
        if num_robots < 1:
            raise ValueError(f"num_robots must be >= 1, got {num_robots}")
        if not (np.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be finite and > 0, got {dt!r}")
        self.num_robots = n = num_robots
        self.dt = float(dt)
        self.config = cfg = config or EstimatorConfig()
        self.kinematics = kin = LegKinematics(model)
        self._r_imu = kin.imu_position
        self._radius = kin.sole_radius
        self._creep = cfg.contact_creep * kin.total_mass  # creep per IMU velocity change (s)

        self.R = np.broadcast_to(np.eye(3), (n, 3, 3)).copy()
        self.X = np.zeros((n, 4, 3))
        self.b = np.zeros((n, 6))
        self.P = np.zeros((n, _DIM, _DIM))
        self.contact = np.zeros((n, 2), dtype=bool)
        self.foot_mode = np.zeros((n, 2), dtype=np.int64)
        self.initialized = np.zeros(n, dtype=bool)
        self.terrain = np.zeros(n)
        self.rejected_updates = np.zeros(n, dtype=np.int64)
        self.consecutive_rejections = np.zeros(n, dtype=np.int64)
        self._reseat = np.ones((n, 2), dtype=bool)
        self._corrections = np.zeros(n, dtype=np.int64)
        self._correction_interval = (cfg.correction_every - 0.5) * self.dt
        self._all_ids = np.arange(n)
        self._dt_all = np.full(n, self.dt)
        self._missed = False  # some robot has rejected updates not yet integrated over
        self._all_initialized = False
        self._pending = np.zeros(n)  # time (s) propagated since the last correction
        # Readings accepted but not yet propagated (see ``update``), and the time since the last
        # correction including them (all robots alike while readings wait).
        self._waiting = np.zeros((min(cfg.correction_every, 32) + 1, n, self._INPUT_WIDTH))
        self._num_waiting = 0
        self._waiting_pending = 0.0
        self._motion = np.ones((n, 2))  # low-passed squared angular speed and 1-g deviation
        self.still = np.zeros(n, dtype=bool)
        self.innovation = np.zeros((n, 11))
        """Last correction's innovations (zero where unused): feet 6 (m, world), tilt 2, zero
        velocity 3 (m/s). For diagnostics."""
        # Outputs that are not filter state.
        self._joint_qd = np.zeros((n, 6))
        self._v_corrected = np.zeros((n, 3))  # IMU velocity after the last correction
        self._sole_offset = np.zeros((n, 2, 3))  # sole centre minus contact point, world axes
        self._foot_rot = np.broadcast_to(np.eye(3), (n, 2, 3, 3)).copy()  # feet in the world
        self._last_accepted = np.zeros((n, self._INPUT_WIDTH))
        self._last_received = np.zeros((n, self._INPUT_WIDTH))
        self._init_position = np.full((n, 3), np.nan)
        self._init_orientation = np.full((n, 4), np.nan)
        self._init_velocity = np.zeros((n, 3))

        # Input checks, per column of the input matrix.
        lim = cfg.limits
        scale = max(1.0, dt / 0.0005)
        groups = ((10, lim.encoder_max, lim.encoder_jump * scale),
                  (10, lim.motor_velocity_max, lim.motor_velocity_jump * scale),
                  (6, lim.encoder_max, lim.encoder_jump * scale),
                  (6, lim.joint_velocity_max, lim.joint_velocity_jump * scale),
                  (3, lim.gyro_max, lim.gyro_jump * scale),
                  (3, lim.accel_max, lim.accel_jump * scale),
                  # a rotation by θ moves a unit quaternion by 2·sin(θ/4)
                  (4, 1.0 + lim.orientation_norm_tolerance,
                   2.0 * np.sin(min(lim.orientation_jump * scale, np.pi) / 4.0)),
                  (10, lim.torque_max, np.inf))
        self._max_abs = np.concatenate([np.full(w, m) for w, m, _ in groups])
        self._norm2 = ((1.0 - lim.orientation_norm_tolerance) ** 2,
                       (1.0 + lim.orientation_norm_tolerance) ** 2)
        self._max_jump = np.concatenate([np.full(w, j) for w, _, j in groups])
        self._jump_limits = np.stack([np.full_like(self._max_jump, np.inf), self._max_jump])

        # Propagation constants: Φ = I + A₀dt + ½A₀²dt² for the bias-free part.
        A0 = np.zeros((_DIM, _DIM))
        A0[_V, _R] = _skew(GRAVITY)
        A0[_P, _V] = np.eye(3)
        self._A0, self._A0sq = A0, 0.5 * A0 @ A0
        self._phi_cache: dict[float, np.ndarray] = {}
        # Process noise not rotated by the state: accel into v, contact into d (isotropic, so
        # the adjoint's rotation drops out), bias random walks.
        q = np.zeros(_DIM)
        q[_V] = cfg.accel_noise ** 2
        q[9:15] = cfg.contact_noise ** 2
        if cfg.estimate_bias:
            q[_BG], q[_BA] = cfg.gyro_bias_walk ** 2, cfg.accel_bias_walk ** 2
        self._q_const = np.diag(q)
        self._q_gyro = cfg.gyro_noise ** 2
        # Measurement rows, r ≈ −Hξ: left foot 3, right foot 3, AHRS tilt 2, zero velocity 3.
        H = np.zeros((11, _DIM))
        for f, sl in enumerate(_FOOT):
            H[3 * f:3 * f + 3, _P] = -np.eye(3)
            H[3 * f:3 * f + 3, sl] = np.eye(3)
        H[6, _R], H[7, _R] = [0.0, -1.0, 0.0], [1.0, 0.0, 0.0]  # rows x, y of (e_z ×)
        H[8:11, _V] = -np.eye(3)
        self._H = H
        self._noise = np.concatenate([np.full(6, cfg.kinematics_std ** 2),
                                      np.full(2, cfg.tilt_std ** 2),
                                      np.full(3, cfg.zero_velocity_std ** 2)])
        self._diag11 = np.arange(11)
        self._row_source = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3])  # use_l, use_r, tilt, still
        # Re-seating a foot: its rows and columns become copies of the position's.
        self._row_foot = np.array([2] * 9 + [0] * 3 + [1] * 3 + [2] * 6)
        self._p_rows = np.array([0] * 9 + list(range(6, 9)) * 2 + [0] * 6)
        self._base_rows = np.arange(_DIM)
        # Roll thresholds as height differences toe − heel.
        sole = np.linalg.norm(kin._points[0, :3, 2] - kin._points[0, :3, 1])
        self._roll_on = sole * np.sin(np.radians(cfg.roll_on_deg))
        self._roll_off = sole * np.sin(np.radians(cfg.roll_off_deg))
        self._alpha_joint = (1.0 if cfg.joint_velocity_tau == 0
                             else dt / (cfg.joint_velocity_tau + dt))

    # ---------------------------------------------------------------- reset

    def _ids(self, ids) -> np.ndarray:
        if ids is None:
            return np.arange(self.num_robots)
        ids = np.atleast_1d(np.asarray(ids, dtype=np.int64))
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_robots):
            raise IndexError(f"robot ids must be in [0, {self.num_robots}), got {ids}")
        return ids

    def reset(self, ids=None, position=None, orientation=None, velocity=None):
        """Forget robots ``ids``; they initialise on their next accepted update.

        ``position`` (pelvis, world), ``orientation`` (pelvis, w x y z) and ``velocity`` (pelvis,
        world), each (3,)/(4,) or one row per id, replace the defaults (x = y = 0 with the lower
        foot on z = 0; the IMU's orientation; at rest).
        """
        self._catch_up()
        ids = self._ids(ids)
        values = {}
        for name, value, width in (("position", position, 3), ("orientation", orientation, 4),
                                   ("velocity", velocity, 3)):
            if value is not None:
                value = np.broadcast_to(np.asarray(value, dtype=float), (ids.size, width))
                if not np.all(np.isfinite(value)):
                    raise ValueError(f"reset {name} contains non-finite values")
            values[name] = value
        self._init_position[ids] = np.nan if position is None else values["position"]
        self._init_orientation[ids] = np.nan if orientation is None else values["orientation"]
        self._init_velocity[ids] = 0.0 if velocity is None else values["velocity"]
        self.initialized[ids] = False
        self._all_initialized = False
        self.consecutive_rejections[ids] = 0
        self._missed = bool(self.consecutive_rejections.any())

    # ---------------------------------------------------------------- update

    def update(self, sensors, ids=None, return_state: bool = True) -> EstimatorState | None:
        """Fold in one reading per robot and return the estimate of all N robots.

        ``sensors`` is a ``SensorReadings`` (or anything with its fields) whose rows are the
        robots ``ids`` (all robots by default). A robot with a bad input keeps its previous
        state; ``rejected_updates`` counts it. With ``return_state=False`` nothing is returned
        (cheaper when the estimate is read less often than the sensors, via ``state()``).
        """
        all_robots = ids is None
        ids = self._all_ids if all_robots else self._ids(ids)
        x = self._input_matrix(sensors, ids.size)
        ok = self._validate(x, slice(None) if all_robots else ids)
        if all_robots and self._all_initialized and not self._missed and ok.all() and (
                self._num_waiting or (self._pending == self._pending[0]).all()):
            self._wait(x)
            return self.state() if return_state else None
        self._catch_up()
        if ok.all():
            good, xg = ids, x
        else:
            bad = ids[~ok]
            self.rejected_updates[bad] += 1
            self.consecutive_rejections[bad] += 1
            self._missed = True
            good, xg, all_robots = ids[ok], x[ok], False
        if good.size:
            sel = slice(None) if all_robots else good
            dt = self._dt_all if all_robots else np.full(good.size, self.dt)
            if self._missed:  # integrate over the time of rejected updates
                missed = self.consecutive_rejections[sel]
                dt = self.dt * (1.0 + np.minimum(missed, self.config.max_missed_updates))
                self.consecutive_rejections[sel] = 0
                self._missed = bool(self.consecutive_rejections.any())
            self._last_accepted[sel] = xg
            if not self._all_initialized:
                fresh = ~self.initialized[sel]
                if fresh.any():
                    self._initialize(good[fresh], xg[fresh])
                    good, xg, dt, all_robots = good[~fresh], xg[~fresh], dt[~fresh], False
                self._all_initialized = bool(self.initialized.all())
            if good.size:
                sel = slice(None) if all_robots else good
                self._filter_joint_velocity(sel, xg)
                self._propagate(sel, xg[None], dt)
                self._pending[sel] += dt
                # Correct when the time since the last correction reaches correction_every
                # updates (sooner after rejected updates).
                due = self._pending[sel] >= self._correction_interval
                if due.all():
                    self._correct(sel, xg)
                elif due.any():
                    self._correct(good[due], xg[due])
        return self.state() if return_state else None

    def _wait(self, x: np.ndarray):
        """The usual update (every robot, one accepted reading each, all alike since the last
        correction): the mean's propagation waits, so that a correction or a ``state()``
        propagates all waiting readings in a few numpy calls instead of a few per reading (at
        N = 1 each call's overhead is the cost). Bit-identical to propagating one by one."""
        self._last_accepted[:] = x
        self._filter_joint_velocity(slice(None), x)
        if not self._num_waiting:
            self._waiting_pending = float(self._pending[0])
        self._waiting[self._num_waiting] = x
        self._num_waiting += 1
        self._waiting_pending += self.dt
        if (self._waiting_pending >= self._correction_interval
                or self._num_waiting == len(self._waiting)):
            self._catch_up()
            if self._waiting_pending >= self._correction_interval:
                self._correct(slice(None), x)

    def _catch_up(self):
        """Propagate the waiting readings."""
        if not self._num_waiting:
            return
        xs = self._waiting[:self._num_waiting]
        self._num_waiting = 0
        self._propagate(slice(None), xs, self._dt_all)
        self._pending[:] = self._waiting_pending

    def _input_matrix(self, s, rows: int) -> np.ndarray:
        x = np.concatenate([s.motor_position, s.motor_velocity, s.joint_position,
                            s.joint_velocity, s.imu_angular_velocity, s.imu_linear_acceleration,
                            s.imu_orientation, s.motor_torque], axis=1, dtype=float)
        if x.shape != (rows, self._INPUT_WIDTH):
            raise ValueError(f"sensor readings: expected {rows} rows of {self._INPUT_WIDTH} "
                             f"values in all, got {x.shape}")
        return x

    def _validate(self, x: np.ndarray, sel) -> np.ndarray:
        """Per robot: every value finite and in range, and no spike. Aligns the quaternion's
        sign with the last accepted one (q and −q are the same rotation) in place."""
        # Few, whole-row numpy calls: for one robot at 2 kHz each call's overhead is the cost.
        last = self._last_accepted[sel]
        q = x[:, self._QUAT]
        flip = np.add.reduce(q * last[:, self._QUAT], 1) < 0
        if flip.any():
            q[flip] *= -1.0
        norm2 = np.add.reduce(q * q, 1)
        # Out of range (NaN included: the comparison fails) or a spike: a jump from both the
        # last accepted and the last received reading (fmin skips a NaN received). A robot not
        # yet initialised has nothing to compare with, so the jump threshold is then infinite.
        jump = np.fmin(np.abs(x - last), np.abs(x - self._last_received[sel]))
        limits = (self._max_jump if self._all_initialized
                  else self._jump_limits[self.initialized[sel].view(np.int8)])
        ok = np.logical_and.reduce((np.abs(x) <= self._max_abs) & (jump <= limits), 1)
        ok &= (norm2 >= self._norm2[0]) & (norm2 <= self._norm2[1])
        self._last_received[sel] = x
        return ok

    def _contact_points(self, x: np.ndarray, R: np.ndarray, mode: np.ndarray):
        """From the encoders: sole points from the IMU in world axes, the updated centre/heel/toe
        modes, the contact points (k, 2, 3), the sole centres' offsets from them and the foot
        orientations in the world (k, 2, 3, 3)."""
        pts, rot = self.kinematics.foot_frames(x[:, 0:10], x[:, 20:26])
        Rt = R[:, None].transpose(0, 1, 3, 2)
        pts = (pts - self._r_imu) @ Rt  # (k, 2 sides, centre/heel/toe, 3)
        rise = pts[:, :, 2, 2] - pts[:, :, 1, 2]  # toe height − heel height
        on_heel = rise > np.where(mode == 1, self._roll_off, self._roll_on)
        on_toe = rise < -np.where(mode == 2, self._roll_off, self._roll_on)
        mode = on_heel * 1 + on_toe * 2
        points = pts[np.arange(x.shape[0])[:, None], _SIDES, mode]
        return points, mode, pts[:, :, 0] - points, R[:, None] @ rot

    def _initialize(self, ids: np.ndarray, x: np.ndarray):
        cfg = self.config
        k = ids.size
        given_q = self._init_orientation[ids]
        has_q = np.isfinite(given_q).all(1)[:, None]
        R = quat_to_matrix(np.where(has_q, np.nan_to_num(given_q), x[:, self._QUAT]))
        r_world = R @ self._r_imu
        feet, mode, offset, foot_rot = self._contact_points(x, R, np.zeros((k, 2), dtype=np.int64))
        given_p = self._init_position[ids]
        default_p = np.zeros((k, 3))
        default_p[:, 2] = self._radius - (feet[:, :, 2] + r_world[:, None, 2]).min(1)
        pelvis = np.where(np.isfinite(given_p).all(1)[:, None], np.nan_to_num(given_p), default_p)
        p = pelvis + r_world
        omega = x[:, self._GYRO]
        v = self._init_velocity[ids] + np.cross((R @ omega[..., None])[..., 0], r_world)
        self.R[ids] = R
        self.X[ids] = np.concatenate([v[:, None], p[:, None], p[:, None] + feet], axis=1)
        self._v_corrected[ids] = v
        self.b[ids] = 0.0
        var = np.zeros(_DIM)
        var[_R] = [cfg.init_tilt_std ** 2, cfg.init_tilt_std ** 2, cfg.init_yaw_std ** 2]
        var[_V] = cfg.init_velocity_std ** 2
        var[_P] = cfg.init_position_std ** 2
        if cfg.estimate_bias:
            var[_BG], var[_BA] = cfg.init_gyro_bias_std ** 2, cfg.init_accel_bias_std ** 2
        rows = self._base_rows.copy()
        rows[9:15] = self._p_rows[9:15]
        P = np.diag(var)[rows][:, rows]
        P[9:15, 9:15] += np.eye(6) * cfg.kinematics_std ** 2
        self.P[ids] = P
        self.contact[ids] = x[:, self._SHIN] < cfg.contact_on
        self.foot_mode[ids] = mode
        self._sole_offset[ids] = offset
        self._foot_rot[ids] = foot_rot
        self._reseat[ids] = True
        self.terrain[ids] = p[:, 2] + feet[:, :, 2].min(1) - self._radius
        self._motion[ids] = 1.0
        self.still[ids] = False
        self._joint_qd[ids] = x[:, 26:32]
        self._corrections[ids] = 0
        self._pending[ids] = 0.0
        self.initialized[ids] = True

    def _propagate(self, sel, xs: np.ndarray, dt: np.ndarray):
        """IMU propagation of the mean (Hartley et al. 2020, eq. 23) through the readings ``xs``
        (m, k robots, input), each ``dt`` (k,) after the last: reading by reading, with the
        numpy calls over all m at once (one reading or several give the same bits)."""
        dt1 = dt[:, None]
        imu = xs[:, :, self._GYRO.start:self._ACC.stop] - self.b[sel]  # gyro, accel less biases
        E = _exp_so3_small(imu[..., :3] * dt1)
        R = np.empty((len(xs) + 1,) + E.shape[1:])  # orientation before each reading, and after
        R[0] = self.R[sel]
        for k in range(len(xs)):
            R[k + 1] = R[k] @ E[k]
        acc_world = (R[:-1] @ imu[..., 3:, None])[..., 0] + GRAVITY
        # v += a·Δt and p += (v + ½a·Δt)·Δt in order: np.add.accumulate adds left to right.
        X = self.X[sel]
        v = np.add.accumulate(np.concatenate([X[None, :, 0], acc_world * dt1]), axis=0)
        p = np.add.accumulate(np.concatenate([X[None, :, 1],
                                              (v[:-1] + 0.5 * acc_world * dt1) * dt1]), axis=0)
        self.X[sel, 0], self.X[sel, 1], self.R[sel] = v[-1], p[-1], R[-1]

    def _filter_joint_velocity(self, sel, x: np.ndarray):
        qd = self._joint_qd[sel]
        self._joint_qd[sel] = qd + self._alpha_joint * (x[:, 26:32] - qd)

    def _phi0(self, dt: np.ndarray, k: int) -> np.ndarray:
        """(k, 21, 21) I + A₀dt + A₀²dt²/2, from a cache for the usual interval."""
        if k and (dt == dt[0]).all():
            key = float(dt[0])
            if key not in self._phi_cache:
                if len(self._phi_cache) > 64:
                    self._phi_cache.clear()
                # The same operations as below, so cached and uncached agree to the bit.
                self._phi_cache[key] = np.eye(_DIM) + self._A0 * key + self._A0sq * (key * key)
            return np.repeat(self._phi_cache[key][None], k, axis=0)
        dt3 = dt[:, None, None]
        return np.eye(_DIM) + self._A0 * dt3 + self._A0sq * (dt3 * dt3)

    def _correct(self, sel, x: np.ndarray):
        """Covariance propagation over the time since the last correction, then corrections by
        leg kinematics, the AHRS tilt and, when the robot is still without foot contact, zero
        velocity. ``sel`` selects the robots (a slice for all, else ids), ``x`` their inputs."""
        cfg = self.config
        R, X, b, P = self.R[sel], self.X[sel], self.b[sel], self.P[sel]
        k = x.shape[0]
        dt = self._pending[sel].copy()  # sel may be a slice: a view would be zeroed below
        dt3 = dt[:, None, None]

        # ---- covariance propagation: Φ = exp(A·Δt) to second order, A and Q from the current
        # estimate (right-invariant error; biases as ζ = b̂ − b, first order in their columns)
        # M = Ad_X̂'s gyro column: [R; v×R; p×R; d_l×R; d_r×R], (k, 15, 3).
        M = np.concatenate([R[:, None], _skew(X) @ R[:, None]], axis=1).reshape(k, 15, 3)
        Phi = self._phi0(dt, k)
        if cfg.estimate_bias:
            Phi[:, :15, 15:18] = M * -dt3
            Phi[:, 3:6, 18:21] = R * -dt3
        Q = self._q_const * dt3
        Q[:, :15, :15] += (self._q_gyro * dt3) * (M @ M.transpose(0, 2, 1))
        P = Phi @ (P + Q) @ Phi.transpose(0, 2, 1)

        # ---- contact from shin-spring deflection (hysteresis), stillness from the IMU
        omega = x[:, self._GYRO] - b[:, :3]
        acc = x[:, self._ACC] - b[:, 3:]
        deflection = x[:, self._SHIN]
        contact = np.where(self.contact[sel], deflection < cfg.contact_off,
                           deflection < cfg.contact_on)
        # Stillness: low-passed squared angular speed and 1-g deviation, reset while a foot is
        # in contact (then the legs, not the IMU, say whether the robot moves).
        airborne = ~np.logical_or.reduce(contact, 1)
        if airborne.any() and cfg.zero_velocity:
            motion = self._motion[sel]
            motion = motion + (dt / (cfg.still_tau + dt))[:, None] * (
                np.stack([(omega * omega).sum(1), (np.sqrt((acc * acc).sum(1)) - 9.81) ** 2], 1)
                - motion)
            motion = np.where(airborne[:, None], motion, 1.0)
            still = airborne & (motion[:, 0] < cfg.still_gyro ** 2) & (
                motion[:, 1] < cfg.still_accel ** 2)
        else:
            motion, still = np.ones((k, 2)), np.zeros(k, dtype=bool)

        # ---- leg kinematics; a foot out of contact, just touching down or changing between
        # centre, heel and toe is re-seated at d = p + R·h with the covariance of that
        # expression (Hartley's state augmentation, at fixed size)
        Rh, mode, offset, foot_rot = self._contact_points(x, R, self.foot_mode[sel])
        reseat = self._reseat[sel] | ~contact | (mode != self.foot_mode[sel])
        X = X.copy()
        p = X[:, 1]
        # A sole rolls on the ground: its axis point above the contact moves by Δφ × (r e_z)
        # for a foot rotation Δφ (world), so a foot in contact is carried along.
        turn = foot_rot @ self._foot_rot[sel].transpose(0, 1, 3, 2)
        X[:, 2:, 0] += (0.5 * self._radius) * (turn[..., 0, 2] - turn[..., 2, 0])
        X[:, 2:, 1] -= (0.5 * self._radius) * (turn[..., 2, 1] - turn[..., 1, 2])
        # A foot in contact creeps against the horizontal force it carries: over Δt by −c·F·Δt,
        # with the feet's total force m·Δv/Δt (Δv: the IMU's velocity change since the last
        # correction, gravity removed) shared by shin deflection among the feet in contact; a
        # flat foot stands on both sole ends, each with half the force, and creeps half as much.
        if self._creep:
            load = np.maximum(-deflection, 0.0) * (contact & ~self._reseat[sel])
            share = load / np.maximum(np.add.reduce(load, 1), 1e-9)[:, None] * np.where(
                mode == 0, 0.5, 1.0)
            dv = X[:, 0, :2] - self._v_corrected[sel, :2]
            X[:, 2:, :2] -= share[..., None] * (self._creep * dv)[:, None]
        if reseat.any():
            X[:, 2:] = np.where(reseat[..., None], p[:, None] + Rh, X[:, 2:])
            rows = np.concatenate([reseat, np.zeros((k, 1), dtype=bool)], 1)[:, self._row_foot]
            idx = np.where(rows, self._p_rows, self._base_rows)
            P = P[np.arange(k)[:, None, None], idx[:, :, None], idx[:, None, :]]
            P[:, self._base_rows, self._base_rows] += rows * cfg.kinematics_std ** 2

        # ---- correction: feet in steady contact, AHRS tilt, zero velocity when still
        use = contact & ~reseat
        active = np.concatenate([use, np.full((k, 1), cfg.use_ahrs_tilt), still[:, None]],
                                1)[:, self._row_source]
        r = np.concatenate([(Rh - (X[:, 2:] - p[:, None])).reshape(k, 6),
                            (R[:, :2] @ _gravity_direction(x[:, self._QUAT])[..., None])[..., 0],
                            X[:, 0]], axis=1)
        H = self._H * active[..., None]
        PHt = P @ H.transpose(0, 2, 1)
        S = H @ PHt
        d11 = self._diag11
        S[:, d11, d11] += np.where(active, self._noise, 1.0)
        # Slip gate: a foot that moved too far since the last correction leaves this one and is
        # re-seated at the next.
        gate = cfg.slip_floor + cfg.slip_speed * dt
        slipping = use & (np.add.reduce((r[:, :6] * r[:, :6]).reshape(k, 2, 3), 2)
                          > (gate * gate)[:, None])
        if slipping.any():
            keep = np.concatenate([np.repeat(~slipping, 3, axis=1), np.ones((k, 5), bool)], 1)
            active &= keep
            H = H * keep[..., None]
            PHt = PHt * keep[:, None, :]
            S = S * keep[:, :, None] * keep[:, None, :]
            S[:, d11, d11] += ~keep
        K = PHt @ np.linalg.inv(S)
        delta = (K @ (r * active)[..., None])[..., 0]
        P = P - K @ PHt.transpose(0, 2, 1)
        P = 0.5 * (P + P.transpose(0, 2, 1))

        # ---- apply on the group: X ← exp(δ)·X̂, b ← b̂ + δ_b
        E, J = _exp_so3_small(delta[:, :3], jacobian=True)
        R = E @ R
        X = X @ E.transpose(0, 2, 1) + delta[:, 3:15].reshape(k, 4, 3) @ J.transpose(0, 2, 1)
        if cfg.estimate_bias:
            b = b + delta[:, 15:]
        corrections = self._corrections[sel] + 1
        if (corrections % 256 == 0).any():  # keep R orthonormal (small-angle exponentials)
            u, _, vt = np.linalg.svd(R)
            R = np.where((corrections % 256 == 0)[:, None, None], u @ vt, R)

        # ---- write back; terrain under the feet in steady contact
        self.R[sel], self.X[sel], self.b[sel], self.P[sel] = R, X, b, P
        self._v_corrected[sel] = X[:, 0]
        self.contact[sel], self.foot_mode[sel], self._sole_offset[sel] = contact, mode, offset
        self._foot_rot[sel] = foot_rot
        self._reseat[sel] = slipping
        self.innovation[sel] = r * active
        self._corrections[sel] = corrections
        self._pending[sel] = 0.0
        self._motion[sel], self.still[sel] = motion, still
        # Terrain from the feet that held still since the last correction: a foot that just
        # touched down, or slips, or is flagged by a spring still ringing after a fall, is not
        # on the ground where kinematics put it.
        steady = use & ~slipping
        n_contact = np.add.reduce(steady, 1)
        if n_contact.any():
            ground = (np.add.reduce(X[:, 2:, 2] * steady, 1) / np.maximum(n_contact, 1)
                      - self._radius)
            terrain = self.terrain[sel]
            step = dt / (cfg.terrain_tau + dt) * (ground - terrain)
            self.terrain[sel] = terrain + np.where(n_contact > 0, step, 0.0)

    # ---------------------------------------------------------------- outputs

    def state(self) -> EstimatorState:
        """The current estimate of all N robots (copies)."""
        self._catch_up()
        R, x, b = self.R, self._last_accepted, self.b
        omega = x[:, self._GYRO] - b[:, :3]
        r_world = R @ self._r_imu
        pelvis = self.X[:, 1] - r_world
        # Velocity of the pelvis origin: v_imu + ω_world × (p_pelvis − p_imu) = v_imu + r × ω.
        velocity = self.X[:, 0] + (_skew(r_world) @ (R @ omega[..., None]))[..., 0]
        return EstimatorState(
            pelvis_position=pelvis,
            pelvis_orientation=matrix_to_quat(R),
            pelvis_rotational_velocity=omega,
            pelvis_translational_velocity=velocity,
            pelvis_translational_acceleration=(R @ (x[:, self._ACC] - b[:, 3:])[..., None])[..., 0]
            + GRAVITY,
            pelvis_height=pelvis[:, 2] - self.terrain,
            terrain_height=self.terrain.copy(),
            foot_position=self.X[:, 2:] + self._sole_offset,
            foot_contact=self.contact.copy(),
            motor_position=x[:, 0:10].copy(),
            motor_velocity=x[:, 10:20].copy(),
            motor_torque=x[:, 42:52].copy(),
            joint_position=x[:, 20:26].copy(),
            joint_velocity=self._joint_qd.copy(),
            gyro_bias=b[:, :3].copy(),
            accel_bias=b[:, 3:].copy(),
            valid=self.initialized.copy(),
            rejected_updates=self.rejected_updates.copy(),
            consecutive_rejections=self.consecutive_rejections.copy(),
        )


__all__ = ["CassieEstimator", "EstimatorConfig", "EstimatorState", "ImuErrorConfig", "ImuErrors",
           "InputLimits", "LegKinematics", "OBSERVATION_46_LAYOUT", "matrix_to_quat",
           "observation_46", "quat_to_matrix"]
