"""The simulator node's logic without ROS: command checking, the watchdog, stepping, state.

``SimServer`` owns one ``CassieSim`` and behaves like the robot's driver: PD targets arrive by
motor name and are checked before anything reaches a motor; a watchdog drops to damping when
targets stop; ``advance`` steps the physics in real-time chunks and ``lockstep`` advances one policy
period per target. ``snapshot`` returns plain arrays for the node to publish. Nothing here imports
rclpy, so all of it is unit-tested without a ROS graph (``test/sim/test_sim_server.py``).

Control modes of the driver (``SimServer.control_mode``):

- ``hold``: after start and after ``reset``, the motors hold the standing pose with the default
  gains and the watchdog is not armed (the robot's "stand" switch position). The first valid
  target arms it.
- ``pd``: the last valid target is applied with the configured gains.
- ``damping``: no valid target for longer than ``watchdog_timeout`` of simulated time: P = 0,
  D = the configured D gains, targets and feed-forward 0. The next valid target resumes ``pd``.
"""

from __future__ import annotations

import enum
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import mujoco
import numpy as np

from cassie_sim_ros import constants as C
from cassie_sim_ros.config import ConfigError
from cassie_sim_ros.estimator import (SIMULATED_CONTACT_CREEP, CassieEstimator, EstimatorConfig,
                                      EstimatorState)
from cassie_sim_ros.sim import CassieSim, SimConfig

MAX_PUBLISH_RATE = 2000.0
"""Highest state publish rate (Hz): the robot's own loop rate."""
MAX_PUSH_FORCE = 1000.0
"""Largest accepted push force (N), about three times Cassie's weight."""
MAX_PUSH_TORQUE = 300.0
"""Largest accepted push torque (N·m)."""
JOINT_NAMES = C.MOTOR_NAMES + C.PASSIVE_JOINT_NAMES
"""Joint order of the published joint states: 10 motors, then shin, tarsus, foot crank per leg."""


@dataclass(frozen=True)
class SimNodeConfig:
    """Parameters of the simulator node; field names are the ROS parameter names."""

    variant: Literal["regular", "stiff", "soft"] = "regular"
    """Spring variant of the model."""
    timestep: float = 0.0005
    """Physics timestep (s); 0.0005 is the robot's 2 kHz loop."""
    actuator: Literal["faithful", "fast"] = "faithful"
    """faithful: the robot simulator's actuator pipeline; fast: an ideal PD inside MuJoCo."""
    mode: Literal["realtime", "lockstep"] = "realtime"
    """realtime: paced to the wall clock; lockstep: one policy period per received target."""
    publish_rate: float = 400.0
    """State publish rate in realtime mode (Hz); the physics runs in chunks of this period."""
    policy_period: float = 0.025
    """Simulated time one target advances in lockstep mode (s)."""
    kp: tuple[float, ...] = tuple(C.DEFAULT_KP.tolist())
    """P gains per motor (N·m/rad), motor order."""
    kd: tuple[float, ...] = tuple(C.DEFAULT_KD.tolist())
    """D gains per motor (N·m·s/rad), motor order; also the damping mode's gains."""
    sensor_noise: bool = False
    """Gaussian noise on the gyro, accelerometer and joint encoders."""
    seed: int = 0
    """Seed of the sensor noise."""
    watchdog_timeout: float = 0.1
    """Simulated time without a valid target before damping mode (s)."""
    push_duration: float = 0.2
    """How long a push on /cassie/push is applied (s of simulated time)."""
    position_margin: float = 0.2
    """Position targets may exceed the joint's range by this much (rad) before rejection."""
    estimator_rate: float = 500.0
    """Rate of the state estimator (Hz), a divisor of the physics rate; 0 turns it off and
    nothing is published on /cassie/state_estimate."""
    rt_priority: int = 0
    """realtime mode: SCHED_FIFO priority (1..98) of the physics and publishing thread; 0:
    normal scheduling. Needs the right to (root, CAP_SYS_NICE or an rtprio limit); without it
    the node warns and runs normally."""

    def __post_init__(self):
        def fail(name: str, allowed: str):
            raise ConfigError(f"{name}: {getattr(self, name)!r} is not allowed; "
                              f"allowed values: {allowed}")

        if not (math.isfinite(self.timestep) and 0.0 < self.timestep <= 0.005):
            fail("timestep", "a number of seconds in (0, 0.005]")
        physics_rate = 1.0 / self.timestep
        max_rate = min(MAX_PUBLISH_RATE, physics_rate)
        if not (math.isfinite(self.publish_rate) and 0.0 < self.publish_rate <= max_rate):
            fail("publish_rate", f"a rate in Hz in (0, {max_rate:g}]")
        if not _is_whole(physics_rate / self.publish_rate):
            examples = ", ".join(f"{physics_rate / k:g}" for k in (1, 2, 4, 5, 10, 20))
            fail("publish_rate", f"a divisor of the physics rate {physics_rate:g} Hz "
                                 f"(e.g. {examples})")
        if not (math.isfinite(self.policy_period) and self.policy_period >= self.timestep
                and _is_whole(self.policy_period / self.timestep)):
            fail("policy_period", f"a whole multiple of the timestep {self.timestep:g} s")
        for name in ("kp", "kd"):
            gains = getattr(self, name)
            if len(gains) != C.NUM_MOTORS or not all(math.isfinite(g) and g >= 0 for g in gains):
                fail(name, f"{C.NUM_MOTORS} finite gains >= 0 in motor order "
                           f"[{', '.join(C.MOTOR_NAMES)}]")
        if not (math.isfinite(self.watchdog_timeout) and self.watchdog_timeout >= self.timestep):
            fail("watchdog_timeout", f"seconds >= the timestep {self.timestep:g}")
        if not (math.isfinite(self.push_duration) and self.push_duration >= 0.0):
            fail("push_duration", "seconds >= 0")
        if not (math.isfinite(self.position_margin) and self.position_margin >= 0.0):
            fail("position_margin", "radians >= 0")
        if self.seed < 0:
            fail("seed", "an integer >= 0")
        if not (math.isfinite(self.estimator_rate) and 0.0 <= self.estimator_rate <= physics_rate
                and (self.estimator_rate == 0.0 or _is_whole(physics_rate / self.estimator_rate))):
            fail("estimator_rate", f"0 (off) or a divisor of the physics rate {physics_rate:g} Hz")
        if not 0 <= self.rt_priority <= 98:
            fail("rt_priority", "0 (normal scheduling) or a SCHED_FIFO priority in 1..98")

    def sim_config(self) -> SimConfig:
        return SimConfig(variant=self.variant, timestep=self.timestep, actuator=self.actuator,
                         kp=tuple(self.kp), kd=tuple(self.kd), sensor_noise=self.sensor_noise,
                         seed=self.seed)


def _is_whole(x: float) -> bool:
    return abs(x - round(x)) < 1e-6 * max(1.0, abs(x)) and round(x) >= 1


@dataclass(frozen=True)
class PdCommand:
    """A checked PD target in motor order: position (rad), velocity (rad/s), torque (N·m)."""

    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray


@dataclass(frozen=True)
class Rejection:
    """Why an incoming message was refused: ``kind`` groups them for throttled logging."""

    kind: str
    message: str


class Event(enum.Enum):
    """What the node logs (once each time it happens)."""

    WATCHDOG_ENGAGED = "watchdog_engaged"
    WATCHDOG_RELEASED = "watchdog_released"
    DIVERGED = "diverged"


@dataclass
class StateSnapshot:
    """Everything the node publishes for one instant, in SI units.

    Quaternions are w, x, y, z (MuJoCo order). The pelvis twist is in the pelvis frame (as
    nav_msgs/Odometry wants it), the pelvis pose in the world frame, foot forces in world axes.
    """

    time: float  # s of simulated time
    joint_position: np.ndarray  # (16,) JOINT_NAMES order: measured motor then passive positions
    joint_velocity: np.ndarray  # (16,)
    joint_effort: np.ndarray  # (16,) motor torques; 0 for the passive joints (not actuated)
    imu_orientation: np.ndarray  # (4,) w x y z, IMU in the world
    imu_angular_velocity: np.ndarray  # (3,) rad/s, IMU frame
    imu_linear_acceleration: np.ndarray  # (3,) m/s², IMU frame, gravity included (+z at rest)
    pelvis_position: np.ndarray  # (3,) m, world
    pelvis_orientation: np.ndarray  # (4,) w x y z
    pelvis_linear_velocity: np.ndarray  # (3,) m/s, pelvis frame
    pelvis_angular_velocity: np.ndarray  # (3,) rad/s, pelvis frame
    foot_forces: np.ndarray  # (2, 3) N, left and right, world axes: ground reaction on the foot
    foot_positions: np.ndarray  # (2, 3) m, world: true sole centres (simulation only)
    control_mode: str  # hold, pd or damping
    estimate: EstimatorState | None = None  # the state estimator's output, when it runs


class PdTargetChecker:
    """The robot driver's rule for PD targets, shared by the simulator node and the hardware
    bridge: every motor once by name, finite values, positions within the joint range plus a
    margin, velocity targets within the motor speed, feed-forward within the torque limit."""

    def __init__(self, model: mujoco.MjModel, position_margin: float = 0.2):
        ranges = np.array([model.jnt_range[model.joint(n).id] for n in C.MOTOR_NAMES])
        self.position_margin = position_margin
        self.position_low = ranges[:, 0] - position_margin
        self.position_high = ranges[:, 1] + position_margin
        self.velocity_limit = C.MAX_JOINT_SPEED.copy()
        self.effort_limit = C.TORQUE_LIMIT.copy()
        self._index = {name: i for i, name in enumerate(C.MOTOR_NAMES)}

    def parse(self, names: Sequence[str], position: Sequence[float],
                      velocity: Sequence[float] = (), effort: Sequence[float] = ()
                      ) -> PdCommand | Rejection:
        """Check a JointState-like PD target and put it in motor order.

        ``names`` must list each motor exactly once, in any order, and nothing else. ``position``
        has one value per name; ``velocity`` (velocity target) and ``effort`` (feed-forward
        torque) are empty (meaning 0) or one per name. Pure: safe from any thread.
        """
        try:
            names = [str(n) for n in names]
            fields = {key: np.asarray(value, dtype=float).reshape(-1) for key, value in
                      (("position", position), ("velocity", velocity), ("effort", effort))}
        except (TypeError, ValueError) as err:
            return Rejection("malformed", f"PD target is malformed: {err}")
        unknown = [n for n in names if n not in self._index]
        if unknown:
            shown = ", ".join(repr(n[:40]) for n in unknown[:3])
            shown += ", ..." if len(unknown) > 3 else ""
            return Rejection("unknown_motor", f"PD target has unknown motor names {shown}; "
                             f"motors are {', '.join(C.MOTOR_NAMES)}")
        dupes = sorted(n for n, count in Counter(names).items() if count > 1)
        if dupes:
            return Rejection("names", f"PD target names motors twice: {', '.join(dupes)}")
        missing = [n for n in C.MOTOR_NAMES if n not in names]
        if missing:
            return Rejection("missing_motor", f"PD target lacks motors {', '.join(missing)}")
        for key, value in fields.items():
            if value.size != len(names) and not (key != "position" and value.size == 0):
                need = "one per name" if key == "position" else "empty or one per name"
                return Rejection("length", f"PD target has {value.size} {key} values for "
                                 f"{len(names)} names ({need})")
        order = [names.index(n) for n in C.MOTOR_NAMES]
        ordered = {key: value[order] if value.size else np.zeros(C.NUM_MOTORS)
                   for key, value in fields.items()}
        for key, value in ordered.items():
            bad = ~np.isfinite(value)
            if bad.any():
                return Rejection("non_finite", f"PD target has non-finite {key} for "
                                 f"{_names(bad)}")
        p, v, e = ordered["position"], ordered["velocity"], ordered["effort"]
        bad = (p < self.position_low) | (p > self.position_high)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            return Rejection("position_range", f"PD position target {p[i]:.4g} rad for "
                             f"{C.MOTOR_NAMES[i]} is outside [{self.position_low[i]:.4g}, "
                             f"{self.position_high[i]:.4g}] (joint range ± "
                             f"{self.position_margin:g} rad)")
        bad = np.abs(v) > self.velocity_limit
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            return Rejection("velocity_range", f"PD velocity target {v[i]:.4g} rad/s for "
                             f"{C.MOTOR_NAMES[i]} exceeds ±{self.velocity_limit[i]:.4g}")
        bad = np.abs(e) > self.effort_limit
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            return Rejection("effort_range", f"PD feed-forward torque {e[i]:.4g} N·m for "
                             f"{C.MOTOR_NAMES[i]} exceeds ±{self.effort_limit[i]:.4g}")
        return PdCommand(p, v, e)


class SimServer:
    """One Cassie simulation behind the robot driver's safety rules."""

    def __init__(self, config: SimNodeConfig | None = None):
        self.config = config = config or SimNodeConfig()
        self.sim = CassieSim(config.sim_config())
        self.timestep = config.timestep
        self.steps_per_publish = int(round(1.0 / (config.publish_rate * config.timestep)))
        self.steps_per_policy = int(round(config.policy_period / config.timestep))
        self._watchdog_steps = int(round(config.watchdog_timeout / config.timestep))
        self._kp = np.asarray(config.kp, dtype=float)
        self._kd = np.asarray(config.kd, dtype=float)
        self.checker = PdTargetChecker(self.sim.model, config.position_margin)
        self.estimator = None
        if config.estimator_rate > 0:
            self.steps_per_estimate = int(round(1.0 / (config.estimator_rate * config.timestep)))
            # The simulator's estimate may know how its own ground behaves.
            self.estimator = CassieEstimator(
                1, dt=self.steps_per_estimate * config.timestep,
                config=EstimatorConfig(contact_creep=SIMULATED_CONTACT_CREEP))
        self.steps = 0
        """Physics steps since start; simulated time is ``steps * timestep`` and never resets."""
        self.reset()

    # ---------------------------------------------------------------- state

    @property
    def time(self) -> float:
        return self.steps * self.timestep

    @property
    def control_mode(self) -> str:
        if not self._armed:
            return "hold"
        return "damping" if self._damping else "pd"

    def reset(self):
        """Back to the standing keyframe, holding it; the watchdog waits for the next target.

        Simulated time keeps running, so /clock never jumps back.
        """
        self.sim.reset()
        if self.estimator is not None:
            # Like the robot's estimator, it starts from its sensors, not from the true pose.
            self.estimator.reset()
        self._armed = False
        self._damping = False
        self._last_command_step = self.steps

    # ---------------------------------------------------------------- input checks

    def parse_command(self, names: Sequence[str], position: Sequence[float],
                      velocity: Sequence[float] = (), effort: Sequence[float] = ()
                      ) -> PdCommand | Rejection:
        """Check a JointState-like PD target (``PdTargetChecker.parse``). Pure: any thread."""
        return self.checker.parse(names, position, velocity, effort)

    def parse_push(self, force: Sequence[float], torque: Sequence[float]
                   ) -> tuple[np.ndarray, np.ndarray] | Rejection:
        """Check a push (world-frame force in N and torque in N·m on the pelvis)."""
        try:
            f = np.asarray(force, dtype=float).reshape(3)
            t = np.asarray(torque, dtype=float).reshape(3)
        except (TypeError, ValueError) as err:
            return Rejection("push", f"push is malformed: {err}")
        if not (np.isfinite(f).all() and np.isfinite(t).all()):
            return Rejection("push", "push has non-finite values")
        if np.linalg.norm(f) > MAX_PUSH_FORCE or np.linalg.norm(t) > MAX_PUSH_TORQUE:
            return Rejection("push", f"push exceeds {MAX_PUSH_FORCE:g} N or "
                             f"{MAX_PUSH_TORQUE:g} N·m")
        return f, t

    # ---------------------------------------------------------------- commands

    def apply(self, command: PdCommand) -> list[Event]:
        """Apply a checked target with the configured gains; re-arms the watchdog."""
        events = [Event.WATCHDOG_RELEASED] if self._damping else []
        self.sim.set_pd(command.position, command.velocity, command.effort, self._kp, self._kd)
        self._armed, self._damping = True, False
        self._last_command_step = self.steps
        return events

    def push(self, force: np.ndarray, torque: np.ndarray):
        self.sim.push(force, torque, self.config.push_duration)

    def _engage_damping(self):
        q, _ = self.sim.motor_state()
        zeros = np.zeros(C.NUM_MOTORS)
        self.sim.set_pd(q[0], zeros, zeros, zeros, self._kd)
        self._damping = True

    # ---------------------------------------------------------------- stepping

    def advance(self, nstep: int) -> list[Event]:
        """Step the physics ``nstep`` times; the watchdog trips at the exact step it expires."""
        events = []
        remaining = int(nstep)
        while remaining > 0:
            chunk = remaining
            if self._armed and not self._damping:
                hold_left = self._last_command_step + self._watchdog_steps - self.steps
                if hold_left <= 0:
                    self._engage_damping()
                    events.append(Event.WATCHDOG_ENGAGED)
                    continue
                chunk = min(chunk, hold_left)
            if self.estimator is not None:
                chunk = min(chunk, self.steps_per_estimate - self.steps % self.steps_per_estimate)
            self.sim.step(chunk)
            self.steps += chunk
            remaining -= chunk
            if self.estimator is not None and self.steps % self.steps_per_estimate == 0:
                self.estimator.update(self.sim.sensors(), return_state=False)
            if self.sim.diverged[0]:
                events.append(Event.DIVERGED)
                self.reset()
        return events

    def step_realtime(self) -> list[Event]:
        """One publish period of physics."""
        return self.advance(self.steps_per_publish)

    def lockstep(self, command: PdCommand) -> list[Event]:
        """Apply a checked target, then advance exactly one policy period."""
        return self.apply(command) + self.advance(self.steps_per_policy)

    # ---------------------------------------------------------------- output

    def snapshot(self) -> StateSnapshot:
        """The state to publish now (draws sensor noise when it is on: call once per publish)."""
        s = self.sim.sensors()
        position, orientation = self.sim.pelvis_pose()
        linear_world, angular = self.sim.pelvis_twist()
        quat = orientation[0]
        zeros = np.zeros(len(C.PASSIVE_JOINT_NAMES))
        return StateSnapshot(
            time=self.time,
            joint_position=np.concatenate([s.motor_position[0], s.joint_position[0]]),
            joint_velocity=np.concatenate([s.motor_velocity[0], s.joint_velocity[0]]),
            joint_effort=np.concatenate([s.motor_torque[0], zeros]),
            imu_orientation=s.imu_orientation[0],
            imu_angular_velocity=s.imu_angular_velocity[0],
            imu_linear_acceleration=s.imu_linear_acceleration[0],
            pelvis_position=position[0],
            pelvis_orientation=quat,
            pelvis_linear_velocity=quat_rotate_inverse(quat, linear_world[0]),
            pelvis_angular_velocity=angular[0],
            foot_forces=self.sim.foot_forces()[0],
            foot_positions=self.sim.foot_positions()[0],
            control_mode=self.control_mode,
            estimate=None if self.estimator is None else self.estimator.state(),
        )


def quat_rotate_inverse(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate world vector ``v`` into the frame of unit quaternion ``q`` (w, x, y, z)."""
    conj = np.array([q[0], -q[1], -q[2], -q[3]], dtype=float)
    out = np.empty(3)
    mujoco.mju_rotVecQuat(out, np.asarray(v, dtype=float), conj)
    return out


def _names(mask: np.ndarray) -> str:
    return ", ".join(n for n, bad in zip(C.MOTOR_NAMES, mask) if bad)


# -------------------------------------------------------------------- pacing and logging helpers


@dataclass
class RealtimePacer:
    """Wall-clock deadlines for real-time chunks, and the statistics the node reports.

    Chunk ``k`` (1, 2, ...) ends at simulated time ``k * period`` and is due at wall time
    ``start + k * period``. When the node lags more than ``max_lag``, the schedule restarts from
    now instead of catching up in a burst (the real-time factor then drops below 1).

    A missed publish period is a slot of wall time, one period long and centred on a due time,
    in which nothing was published: a gap in the state stream.
    """

    period: float
    clock: Callable[[], float] = time.monotonic
    max_lag: float = 0.1
    chunks: int = 0
    missed: int = 0
    _start: float = field(default=0.0, repr=False)
    _k: int = field(default=0, repr=False)
    _t0: float = field(default=0.0, repr=False)
    _last_slot: int = field(default=0, repr=False)
    _window: tuple[float, int, int] = field(default=(0.0, 0, 0), repr=False)

    def start(self):
        now = self.clock()
        self._start = self._t0 = now
        self._k = self._last_slot = 0
        self._window = (now, self.chunks, self.missed)

    def time_to_next(self) -> float:
        """Seconds until the next chunk is due (<= 0: due now)."""
        return self._start + (self._k + 1) * self.period - self.clock()

    def done(self):
        """Call right after each chunk is published."""
        now = self.clock()
        self._k += 1
        self.chunks += 1
        slot = math.floor((now - self._t0) / self.period + 0.5)
        self.missed += max(0, slot - self._last_slot - 1)
        self._last_slot = max(slot, self._last_slot)
        if now - (self._start + self._k * self.period) > self.max_lag:
            # Skip the lost time rather than catch up: restart the schedule at this chunk.
            self._start = now - self._k * self.period

    def window(self) -> tuple[float, float, int]:
        """Since the last call: wall seconds, real-time factor, missed periods; starts a new one."""
        now = self.clock()
        t, chunks, missed = self._window
        self._window = (now, self.chunks, self.missed)
        wall = now - t
        rtf = (self.chunks - chunks) * self.period / wall if wall > 0 else 0.0
        return wall, rtf, self.missed - missed

    def totals(self) -> dict[str, float]:
        wall = self.clock() - self._t0
        return {"wall_time": wall,
                "real_time_factor": self.chunks * self.period / wall if wall > 0 else 0.0,
                "publish_periods": self.chunks, "missed_publish_periods": self.missed}


class Throttle:
    """At most one log line per ``kind`` per ``interval`` seconds; counts what it held back.

    The first message of a kind always goes out, so a new kind of error is never hidden behind
    a flood of another.
    """

    def __init__(self, interval: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.interval, self.clock = interval, clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, kind: str) -> int | None:
        """None: stay quiet; else log now, mentioning the returned count of suppressed ones."""
        now = self.clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return None
        self._last[kind] = now
        return self._held.pop(kind, 0)


__all__ = ["Event", "JOINT_NAMES", "PdCommand", "RealtimePacer", "Rejection", "SimNodeConfig",
           "SimServer", "StateSnapshot", "Throttle", "quat_rotate_inverse"]
