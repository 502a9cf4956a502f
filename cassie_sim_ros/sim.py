"""``CassieSim``: N Cassie simulations stepped together on C threads, with the robot's PD loop.

One class serves both uses: the simulator node runs ``num_sims=1``, training runs many. Every
accessor returns arrays with a leading simulation axis ``(num_sims, ...)``. Stepping N sims is
bit-identical to stepping each alone (``mujoco.batch.Batch`` guarantees it at any thread count).

Two actuator modes:

- ``faithful``: the robot simulator's pipeline (``actuator.ActuatorPipeline``) computes the torque
  in numpy at every physics step, vectorised over the sims; MuJoCo applies it as a plain torque.
- ``fast``: MuJoCo runs the PD itself (actuator gain 1, bias ``-kp·q - kd·q̇``, control
  ``kp·p + kd·d + τ_ff``), so a whole policy step runs in C without returning to Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import math

import mujoco
import mujoco.batch
import numpy as np

from cassie_sim_ros import constants as C
from cassie_sim_ros.actuator import ActuatorPipeline, PipelineConfig
from cassie_sim_ros.config import ConfigError
from cassie_sim_ros.model import STANDING_QPOS, load_model

_VEL = int(mujoco.mjtStage.mjSTAGE_VEL)


@dataclass(frozen=True)
class SimConfig:
    """Physics and actuation of Cassie."""

    variant: Literal["regular", "stiff", "soft"] = "regular"
    """Spring variant: regular, stiff (12x shin and heel springs) or soft (half)."""
    timestep: float = 0.0005
    """Physics timestep (s). 0.0005 is the robot's 2 kHz loop; 0.002 is 4x cheaper."""
    actuator: Literal["faithful", "fast"] = "faithful"
    """faithful: the robot simulator's pipeline in numpy; fast: an ideal PD inside MuJoCo."""
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    """Parts of the faithful pipeline (ignored in fast mode)."""
    kp: tuple[float, ...] = tuple(C.DEFAULT_KP.tolist())
    """Default P gains per motor (N·m/rad), used until a command sets its own."""
    kd: tuple[float, ...] = tuple(C.DEFAULT_KD.tolist())
    """Default D gains per motor (N·m·s/rad)."""
    sensor_noise: bool = False
    """Gaussian noise on gyro, accelerometer and joint encoders (off for exact tests)."""
    seed: int = 0
    """Seed of the sensor-noise generator."""

    def __post_init__(self):
        if not (np.isfinite(self.timestep) and 0.0 < self.timestep <= 0.005):
            raise ConfigError(f"timestep: {self.timestep!r} s is outside (0, 0.005]")
        for name in ("kp", "kd"):
            gains = np.asarray(getattr(self, name), dtype=float)
            if gains.shape != (C.NUM_MOTORS,):
                raise ConfigError(f"{name}: expected {C.NUM_MOTORS} gains in motor order "
                                  f"{', '.join(C.MOTOR_NAMES)}; got {gains.size}")
            if not np.all(np.isfinite(gains)) or np.any(gains < 0):
                raise ConfigError(f"{name}: gains must be finite and >= 0, got {gains}")


@dataclass
class SensorReadings:
    """What the robot's sensors report, per simulation (leading axis N)."""

    motor_position: np.ndarray  # (N, 10) rad, encoder reading
    motor_velocity: np.ndarray  # (N, 10) rad/s, filtered
    motor_torque: np.ndarray  # (N, 10) N·m, applied by the motors
    joint_position: np.ndarray  # (N, 6) rad: shin, tarsus, foot crank per leg
    joint_velocity: np.ndarray  # (N, 6) rad/s
    imu_orientation: np.ndarray  # (N, 4) quaternion w, x, y, z of the IMU in the world
    imu_angular_velocity: np.ndarray  # (N, 3) rad/s, IMU frame
    imu_linear_acceleration: np.ndarray  # (N, 3) m/s², IMU frame, gravity included
    imu_magnetometer: np.ndarray  # (N, 3)

    def select(self, ids) -> SensorReadings:
        """The readings of the simulations ``ids`` (an index array or a slice keeps the axis)."""
        return SensorReadings(**{name: value[ids] for name, value in vars(self).items()})


@dataclass
class Dynamics:
    """Per-simulation multipliers and offsets on the nominal model, for randomisation."""

    mass_scale: np.ndarray  # (N, nbody)
    damping_scale: np.ndarray  # (N, nv)
    friction_scale: np.ndarray  # (N,)
    spring_scale: np.ndarray  # (N, 2): shin spring, heel spring
    pelvis_com_offset: np.ndarray  # (N, 3) m


class CassieSim:
    """N Cassie simulations with the robot's PD loop at every physics step."""

    def __init__(self, config: SimConfig | None = None, num_sims: int = 1, num_threads: int = 1):
        self.config = config or SimConfig()
        if num_sims < 1:
            raise ValueError(f"num_sims must be >= 1, got {num_sims}")
        self.num_sims = num_sims
        self.model = load_model(self.config.variant, self.config.timestep)
        self.timestep = self.config.timestep
        m = self.model
        # Motors take a torque as control; in fast mode the bias below adds the PD feedback.
        m.actuator_gainprm[:, 0] = 1.0
        m.actuator_biasprm[:, :3] = 0.0
        self._batch = mujoco.batch.Batch(m, num_sims, nthread=num_threads, persistent=True)
        self._motor_qadr = np.array([m.jnt_qposadr[m.joint(n).id] for n in C.MOTOR_NAMES])
        self._motor_dadr = np.array([m.jnt_dofadr[m.joint(n).id] for n in C.MOTOR_NAMES])
        self._joint_qadr = np.array([m.jnt_qposadr[m.joint(n).id] for n in C.PASSIVE_JOINT_NAMES])
        self._joint_dadr = np.array([m.jnt_dofadr[m.joint(n).id] for n in C.PASSIVE_JOINT_NAMES])
        self._pelvis = m.body("pelvis").id
        self._foot_sites = np.array([m.site(f"{s}_foot").id for s in C.SIDES])
        self._sensor = {name: slice(m.sensor_adr[m.sensor(name).id],
                                    m.sensor_adr[m.sensor(name).id]
                                    + m.sensor_dim[m.sensor(name).id])
                        for name in ("imu_orientation", "imu_gyro", "imu_accel", "imu_magnetometer",
                                     "left_foot_grf", "right_foot_grf")}
        self._springs = np.array([[m.joint(f"{s}_shin").id, m.joint(f"{s}_heel_spring").id]
                                  for s in C.SIDES])  # (2 sides, 2 springs)

        b = self._batch
        self._qpos, self._qvel, self._ctrl = b.bind("qpos"), b.bind("qvel"), b.bind("ctrl")
        self._time = b.bind("time")
        self._xfrc = b.bind("xfrc_applied")
        self._qfrc = b.bind("qfrc_applied")
        self._sensordata = b.bind("sensordata")
        self._site_xpos = b.bind("site_xpos")
        self._actuator_force = b.bind("actuator_force")
        # Views into the batch's own arrays, read after every step.
        self._warning_counts = np.asarray(b.warning)[:, self._INSTABILITY, 1]
        self._status = np.asarray(b.status)
        self._rng = np.random.default_rng(self.config.seed)

        self.fast = self.config.actuator == "fast"
        if self.fast:
            self._biasprm = b.expand("actuator_biasprm")
        self.pipeline = (None if self.fast else
                         ActuatorPipeline(self.config.pipeline, num_sims, self.timestep))

        n = num_sims
        self._p_target = np.zeros((n, C.NUM_MOTORS))
        self._d_target = np.zeros((n, C.NUM_MOTORS))
        self._feedforward = np.zeros((n, C.NUM_MOTORS))
        self._kp = np.tile(np.asarray(self.config.kp, dtype=float), (n, 1))
        self._kd = np.tile(np.asarray(self.config.kd, dtype=float), (n, 1))
        self._push_steps = np.zeros(n, dtype=np.int64)
        self._pushing = False  # any(_push_steps > 0), kept beside it: step() reads it often
        self.diverged = np.zeros(n, dtype=bool)
        """Sims that went unstable; each is put back at the standing keyframe and stays flagged
        until the caller resets it (training ends such an episode)."""
        self._note_warnings()
        self._nominal = {name: getattr(m, name).copy() for name in
                         ("body_mass", "body_inertia", "dof_damping", "geom_friction",
                          "jnt_stiffness", "body_ipos")}
        self.reset()

    # ---------------------------------------------------------------- state

    def _ids(self, ids) -> np.ndarray:
        if ids is None:
            return np.arange(self.num_sims)
        ids = np.atleast_1d(np.asarray(ids, dtype=np.int64))
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_sims):
            raise IndexError(f"simulation ids must be in [0, {self.num_sims}), got {ids}")
        return ids

    def reset(self, ids=None, qpos: np.ndarray | None = None, qvel: np.ndarray | None = None):
        """Reset sims to the standing keyframe, or to a given state ((n, 35) and (n, 32))."""
        ids = self._ids(ids)
        if ids.size == 0:
            return
        self._batch.reset(ids, keyframe=0, stage=int(mujoco.mjtStage.mjSTAGE_NONE))
        self._note_warnings()  # cleared by the reset; a bad given state warns anew below
        if qpos is not None:
            qpos = np.broadcast_to(np.asarray(qpos, dtype=float), (ids.size, self.model.nq))
            _check_finite("qpos", qpos)
            self._qpos[ids] = qpos
        if qvel is not None:
            qvel = np.broadcast_to(np.asarray(qvel, dtype=float), (ids.size, self.model.nv))
            _check_finite("qvel", qvel)
            self._qvel[ids] = qvel
        self._batch.forward(ids, stage=_VEL)
        self._xfrc[ids] = 0.0
        self._qfrc[ids] = 0.0
        self._push_steps[ids] = 0
        self._pushing = bool((self._push_steps > 0).any())
        self.diverged[ids] = False
        q, qd = self._qpos[ids][:, self._motor_qadr], self._qvel[ids][:, self._motor_dadr]
        if self.pipeline is not None:
            self.pipeline.reset(ids, q, qd)
        # A fresh sim holds its pose with the default gains until it is commanded.
        self._p_target[ids] = q
        self._d_target[ids] = 0.0
        self._feedforward[ids] = 0.0
        self._kp[ids] = self.config.kp
        self._kd[ids] = self.config.kd
        self._apply_gains(ids)
        # Through the acceleration stage: the accelerometer and the contact force sensors of
        # the reset state are read before the next step computes them.
        self._batch.forward(ids)

    # ---------------------------------------------------------------- commands

    def set_pd(self, p_target, d_target=None, feedforward=None, kp=None, kd=None, ids=None):
        """Hold a PD command until the next one: per motor position and velocity targets,
        feed-forward torque and gains, each (10,) or (n, 10) for the sims ``ids``. Omitted
        targets and torques are 0; omitted gains keep their values.

        Raises ValueError, changing nothing, on a wrong shape or a non-finite value.
        """
        ids = slice(None) if ids is None else self._ids(ids)
        n = self.num_sims if isinstance(ids, slice) else ids.size
        given = {name: self._checked(name, value, n) for name, value in
                 (("p_target", p_target), ("d_target", d_target), ("feedforward", feedforward),
                  ("kp", kp), ("kd", kd)) if value is not None}
        for gain in ("kp", "kd"):
            if gain in given and np.any(given[gain] < 0):
                raise ValueError(f"{gain}: gains must be >= 0")
        self._p_target[ids] = given["p_target"]
        self._d_target[ids] = given.get("d_target", 0.0)
        self._feedforward[ids] = given.get("feedforward", 0.0)
        if "kp" in given:
            self._kp[ids] = given["kp"]
        if "kd" in given:
            self._kd[ids] = given["kd"]
        self._apply_gains(ids, gains_changed="kp" in given or "kd" in given)

    @staticmethod
    def _checked(name: str, value, n: int) -> np.ndarray:
        arr = np.asarray(value, dtype=float)
        if arr.shape != (C.NUM_MOTORS,) and arr.shape != (n, C.NUM_MOTORS):
            raise ValueError(f"{name}: expected shape ({C.NUM_MOTORS},) or ({n}, "
                             f"{C.NUM_MOTORS}) in motor order, got {arr.shape}")
        _check_finite(name, arr)
        return arr

    def _apply_gains(self, ids, gains_changed: bool = True):
        if not self.fast:
            return
        if gains_changed:
            self._biasprm[ids, :, 1] = -self._kp[ids]
            self._biasprm[ids, :, 2] = -self._kd[ids]
        self._ctrl[ids] = (self._kp[ids] * self._p_target[ids] + self._kd[ids] * self._d_target[ids]
                           + self._feedforward[ids])

    def push(self, force, torque=(0.0, 0.0, 0.0), duration: float = 0.2, ids=None):
        """Apply a world-frame force (N) and torque (N·m) to the pelvis for ``duration`` seconds."""
        ids = self._ids(ids)
        force = np.broadcast_to(np.asarray(force, dtype=float), (ids.size, 3))
        torque = np.broadcast_to(np.asarray(torque, dtype=float), (ids.size, 3))
        _check_finite("push force", force)
        _check_finite("push torque", torque)
        if not (np.isfinite(duration) and duration >= 0):
            raise ValueError(f"push duration must be finite and >= 0, got {duration}")
        steps = int(round(duration / self.timestep))
        # A push shorter than half a physics step is no push (it would never be taken off).
        self._xfrc[ids, self._pelvis, :3] = force if steps else 0.0
        self._xfrc[ids, self._pelvis, 3:] = torque if steps else 0.0
        self._push_steps[ids] = steps
        self._pushing = bool((self._push_steps > 0).any())

    # ---------------------------------------------------------------- stepping

    def step(self, nstep: int = 1):
        """Advance every sim ``nstep`` physics steps with the held PD commands."""
        remaining = nstep
        while remaining > 0:
            if not self._pushing:  # the usual case, in as few numpy calls as can be
                chunk = remaining
            else:
                chunk = min(remaining, int(self._push_steps[self._push_steps > 0].min()))
            if self.fast:
                self._batch.step(nstep=chunk, stage=_VEL)
            else:
                for _ in range(chunk):
                    self._step_pipeline()
            remaining -= chunk
            if self._pushing:
                pushing = self._push_steps > 0
                self._push_steps[pushing] -= chunk
                ended = pushing & (self._push_steps <= 0)
                self._xfrc[ended, self._pelvis] = 0.0
                self._pushing = bool((self._push_steps > 0).any())
        self._check_divergence()

    def _step_pipeline(self):
        q = self._qpos[:, self._motor_qadr]
        qd = self._qvel[:, self._motor_dadr]
        self._ctrl[:] = self.pipeline.torque(q, qd, self._p_target, self._d_target,
                                             self._feedforward, self._kp, self._kd)
        self._qfrc[:, self._motor_dadr] = self.pipeline.soft_limit_torque(q, qd)
        self._batch.step(nstep=1, stage=_VEL)

    # Consecutive in mjtWarning, so the counters are a view: mjWARN_BADQPOS, BADQVEL, BADQACC.
    _INSTABILITY = slice(int(mujoco.mjtWarning.mjWARN_BADQPOS),
                         int(mujoco.mjtWarning.mjWARN_BADQACC) + 1)
    assert _INSTABILITY.stop - _INSTABILITY.start == 3

    def _instability_warnings(self) -> np.ndarray:
        """Per sim, how often MuJoCo found a bad qpos, qvel or qacc and reset the state."""
        return self._warning_counts.sum(axis=1)

    def _check_divergence(self):
        # The usual case first, in five numpy calls: no new warning, no error, and every
        # position and velocity finite (a NaN or inf makes the sums non-finite).
        if (int(self._warning_counts.sum()) == self._warnings_total
                and not self._status.any()
                and math.isfinite(float(self._qpos.sum()) + float(self._qvel.sum()))):
            return
        bad = ~(np.isfinite(self._qpos).all(axis=1) & np.isfinite(self._qvel).all(axis=1))
        bad |= self._status != 0
        warnings = self._instability_warnings()
        bad |= warnings > self._warnings_seen
        newly = bad & ~self.diverged
        if newly.any():
            self.diverged |= newly
            # Back to a sane state so the sim cannot stall or poison the batch.
            ids = np.flatnonzero(newly)
            self._batch.reset(ids, keyframe=0)
        self._note_warnings()

    def _note_warnings(self):
        """Remember the warning counters (a reset clears those of its sims)."""
        self._warnings_seen = self._instability_warnings()
        self._warnings_total = int(self._warnings_seen.sum())

    # ---------------------------------------------------------------- readings

    @property
    def time(self) -> np.ndarray:
        return self._time.copy()

    @property
    def qpos(self) -> np.ndarray:
        """(N, 35) generalised positions (pelvis free joint first)."""
        return self._qpos.copy()

    @property
    def qvel(self) -> np.ndarray:
        """(N, 32) generalised velocities."""
        return self._qvel.copy()

    def motor_state(self) -> tuple[np.ndarray, np.ndarray]:
        """True motor positions and velocities, (N, 10) each."""
        return self._qpos[:, self._motor_qadr].copy(), self._qvel[:, self._motor_dadr].copy()

    def motor_torque(self) -> np.ndarray:
        """(N, 10) torque the motors applied in the last physics step."""
        return self._actuator_force.copy()

    def pd_command(self) -> dict[str, np.ndarray]:
        """The held PD command, (N, 10) each."""
        return {"p_target": self._p_target.copy(), "d_target": self._d_target.copy(),
                "feedforward": self._feedforward.copy(), "kp": self._kp.copy(),
                "kd": self._kd.copy()}

    def pelvis_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """True pelvis position (N, 3) and orientation quaternion w, x, y, z (N, 4)."""
        return self._qpos[:, 0:3].copy(), self._qpos[:, 3:7].copy()

    def pelvis_twist(self) -> tuple[np.ndarray, np.ndarray]:
        """True pelvis linear velocity in the world frame and angular velocity in the pelvis
        frame, (N, 3) each."""
        return self._qvel[:, 0:3].copy(), self._qvel[:, 3:6].copy()

    def foot_positions(self) -> np.ndarray:
        """(N, 2, 3) world positions of the left and right sole centres."""
        return self._site_xpos[:, self._foot_sites].copy()

    def foot_forces(self) -> np.ndarray:
        """(N, 2, 3) world-frame ground reaction force on the left and right foot (N): floor
        contacts only (a leg touching the other leg is not ground reaction)."""
        s = self._sensordata
        # The contact sensor reports the foot's force on the floor; the floor's on the foot is
        # its opposite.
        return -np.stack([s[:, self._sensor["left_foot_grf"]],
                          s[:, self._sensor["right_foot_grf"]]], axis=1)

    def sensors(self) -> SensorReadings:
        """The robot's sensor readings, with noise when ``sensor_noise`` is on."""
        n = self.num_sims
        if self.pipeline is not None:
            motor_q, motor_qd = (a.copy() for a in self.pipeline.measured())
        else:
            motor_q, motor_qd = self.motor_state()
        s = self._sensordata
        readings = SensorReadings(
            motor_position=motor_q,
            motor_velocity=motor_qd,
            motor_torque=self.motor_torque(),
            joint_position=self._qpos[:, self._joint_qadr].copy(),
            joint_velocity=self._qvel[:, self._joint_dadr].copy(),
            imu_orientation=s[:, self._sensor["imu_orientation"]].copy(),
            imu_angular_velocity=s[:, self._sensor["imu_gyro"]].copy(),
            imu_linear_acceleration=s[:, self._sensor["imu_accel"]].copy(),
            imu_magnetometer=s[:, self._sensor["imu_magnetometer"]].copy(),
        )
        if self.config.sensor_noise:
            rng = self._rng
            readings.joint_position += rng.normal(0.0, C.JOINT_ENCODER_NOISE, (n, 6))
            readings.imu_angular_velocity += rng.normal(0.0, C.GYRO_NOISE, (n, 3))
            readings.imu_linear_acceleration += rng.normal(0.0, C.ACCEL_NOISE, (n, 3))
        return readings

    # ---------------------------------------------------------------- dynamics

    def nominal_dynamics(self) -> Dynamics:
        n, m = self.num_sims, self.model
        return Dynamics(mass_scale=np.ones((n, m.nbody)), damping_scale=np.ones((n, m.nv)),
                        friction_scale=np.ones(n), spring_scale=np.ones((n, 2)),
                        pelvis_com_offset=np.zeros((n, 3)))

    def set_dynamics(self, dynamics: Dynamics, ids=None):
        """Give the sims ``ids`` their own masses, damping, friction, springs and pelvis CoM.

        ``dynamics`` holds one row per sim in ``ids``; values are relative to the nominal model.
        """
        ids = self._ids(ids)
        b, nom = self._batch, self._nominal
        for name in ("mass_scale", "damping_scale", "friction_scale", "spring_scale",
                     "pelvis_com_offset"):
            value = np.asarray(getattr(dynamics, name), dtype=float)
            _check_finite(name, value)
            if name != "pelvis_com_offset" and np.any(value <= 0):
                raise ValueError(f"{name} must be > 0")
        mass = b.expand("body_mass")
        inertia = b.expand("body_inertia")
        mass[ids] = nom["body_mass"] * dynamics.mass_scale
        inertia[ids] = nom["body_inertia"] * np.asarray(dynamics.mass_scale)[..., None]
        b.expand("dof_damping")[ids] = nom["dof_damping"] * dynamics.damping_scale
        b.expand("geom_friction")[ids] = (nom["geom_friction"]
                                          * np.asarray(dynamics.friction_scale)[:, None, None])
        stiffness = b.expand("jnt_stiffness")
        stiffness[ids] = nom["jnt_stiffness"]
        spring_scale = np.asarray(dynamics.spring_scale)
        for side in range(2):
            for k in range(2):
                joint = self._springs[side, k]
                stiffness[ids, joint] = nom["jnt_stiffness"][joint] * spring_scale[:, k]
        ipos = b.expand("body_ipos")
        ipos[ids] = nom["body_ipos"]
        ipos[ids, self._pelvis] = nom["body_ipos"][self._pelvis] + dynamics.pelvis_com_offset
        b.set_const(ids)

    # ---------------------------------------------------------------- saving

    _DYNAMICS_FIELDS = ("body_mass", "body_inertia", "dof_damping", "geom_friction",
                        "jnt_stiffness", "body_ipos")

    def get_state(self) -> dict:
        """Everything needed to continue bit-for-bit: physics rows, held commands, pushes,
        actuator histories, per-sim dynamics and the noise generator."""
        state = {
            "physics": np.array(self._batch.state), "p_target": self._p_target.copy(),
            "d_target": self._d_target.copy(), "feedforward": self._feedforward.copy(),
            "kp": self._kp.copy(), "kd": self._kd.copy(), "push_steps": self._push_steps.copy(),
            "diverged": self.diverged.copy(), "rng": self._rng.bit_generator.state,
            "dynamics": {name: np.array(values) for name in self._DYNAMICS_FIELDS
                         if (values := self._batch.expanded(name)) is not None},
        }
        if self.pipeline is not None:
            state["pipeline"] = self.pipeline.get_state()
        return state

    def set_state(self, state: dict) -> None:
        """Restore what :meth:`get_state` returned (same config and number of sims)."""
        physics = np.asarray(state["physics"])
        if physics.shape != (self.num_sims, self._batch.nstate):
            raise ValueError(f"saved physics state has shape {physics.shape}, this sim needs "
                             f"{(self.num_sims, self._batch.nstate)}")
        for name, values in state["dynamics"].items():
            self._batch.expand(name)[:] = values
        if state["dynamics"]:
            self._batch.set_const()
        self._batch.state[:] = physics
        for name in ("p_target", "d_target", "feedforward", "kp", "kd"):
            getattr(self, f"_{name}")[:] = state[name]
        self._push_steps[:] = state["push_steps"]
        self._pushing = bool((self._push_steps > 0).any())
        self.diverged[:] = state["diverged"]
        self._rng.bit_generator.state = state["rng"]
        if self.pipeline is not None:
            self.pipeline.set_state(state["pipeline"])
        self._apply_gains(np.arange(self.num_sims))
        self._batch.forward(stage=_VEL)
        self._note_warnings()

    # ---------------------------------------------------------------- rendering

    def mj_data(self, sim: int = 0, data: mujoco.MjData | None = None) -> mujoco.MjData:
        """Sim ``sim`` as an MjData (for viewers and renderers)."""
        return self._batch.get_data(sim, data)

    def mj_model(self, sim: int = 0) -> mujoco.MjModel:
        """Sim ``sim``'s model, with its own dynamics."""
        return self._batch.get_model(sim)


def _check_finite(name: str, value: np.ndarray):
    if not np.isfinite(value).all():
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")


__all__ = ["CassieSim", "Dynamics", "SensorReadings", "SimConfig", "STANDING_QPOS"]
