"""``PolicyRunner``: one robot's deployed policy without ROS: sensor readings in, PD targets out.

The policy node (``nodes/policy_node.py``) and the viewer (``tools/render.py``) are thin shells
around it; everything that decides what reaches the motors is here and unit-tested without a ROS
graph (``test/rl/test_policy_runner.py``).

What it holds for its robot:

- the policy (one saved policy, or an ensemble averaging its members' actions) with its
  observation normaliser, and the env config it was trained with;
- the task inputs (``TaskInputs``, N = 1): gait phase, speed command, stepping frequency and
  target heading;
- the latest joint states and IMU reading with their receive times.

One policy step (:meth:`PolicyRunner.step`) builds the observation with the env's own
``ObservationBuilder`` (never a copy), runs the deterministic policy, maps the action to PD
targets with the env's ``clip_actions``/``motor_targets``, and advances the clock with the env's
``advance_clock`` by the trained policy period. For the same sensor readings, commands and
clock, the actions are bit-identical to the training env's.

Robot-side rules:

- Commands outside the trained range (``env.command``, ``env.gait.step_frequency``) are clamped,
  with a warning; non-finite ones are ignored, with an error.
- Inputs are stale when either stream's last message is older than ``STALE_PERIODS`` policy
  periods (on the caller's clock); then :meth:`step` returns None, so nothing is published and
  the driver's watchdog takes over.
- A simulator reset (the IMU orientation jumps further than the robot can turn between two
  readings) or time going backwards re-anchors the target heading at the current yaw; the phase
  clock runs on.
- Only robot-side layouts run: a ``true_state`` policy (simulator ground truth) is refused. A
  ``state_est`` policy runs the env's own state estimator on the joint states and IMU (not the
  driver's /cassie/state_estimate, whose nav_msgs/Odometry lacks the acceleration and the height
  above the terrain the layout needs), one update per state.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cassie_rl_ros.envs.actions import (ActionOrigin, advance_clock, clip_actions,
                                        motor_targets, reference_state)
from cassie_rl_ros.envs.cassie_env import CassieEnvConfig
from cassie_rl_ros.envs.observations import ObservationBuilder, TaskInputs, quat_yaw
from cassie_rl_ros.envs.reference import load_reference
from cassie_sim_ros import constants as C
from cassie_sim_ros.sim import SensorReadings

PACKAGE = "cassie_rl_ros"
DEFAULT_POLICY = Path("policies") / "walk"
"""The shipped default policy, relative to the repository or the package's share folder."""
STALE_PERIODS = 3
"""Inputs older than this many policy periods are stale: stop publishing."""
RESET_ROTATION = 0.5
"""rad: an orientation change between two IMU readings beyond this (plus MAX_ANGULAR_RATE · Δt)
is a reset (the robot put back, a new simulation)."""
MAX_ANGULAR_RATE = 10.0
"""rad/s: faster than the robot turns even while falling. The rotation angle between readings is
used, not the yaw difference: the yaw of a tumbling robot near ±90° pitch swings wildly."""
TIME_JUMP_BACK = 1e-3
"""s: the clock or a stamp going back by more than this is a restart (bag loop, new sim)."""
MAX_ESTIMATOR_REJECTIONS = 20
"""state_est: the estimator is re-initialised after this many rejected readings in a row."""
QUATERNION_TOLERANCE = 0.01
"""An IMU orientation whose norm is further than this from 1 is refused."""


class PolicyError(ValueError):
    """A policy that cannot run on a robot, or cannot be found or read: the message says why."""


@dataclass(frozen=True)
class Feedback:
    """What became of a command: the values now in force, and a warning or an error to log."""

    applied: tuple[float, ...]
    warning: str | None = None
    error: str | None = None


@dataclass
class StepOutput:
    """One policy step."""

    observation: np.ndarray  # (num_obs,) float32, what the policy saw
    action: np.ndarray  # (10,) float64, the raw policy output (motor order)
    targets: np.ndarray  # (10,) float64, PD position targets (rad, motor order)
    phase: float  # gait phase the action was computed at
    stamp_ns: int | None  # header stamp of the inputs it acted on (None if unstamped)


def default_policy_path() -> Path:
    """``policies/walk`` of the source checkout, else of the installed package's share folder.

    Raises PolicyError listing where it looked when none exists.
    """
    candidates = [Path(__file__).resolve().parents[1] / DEFAULT_POLICY]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(PACKAGE)) / DEFAULT_POLICY)
    except Exception:  # no ament index (plain checkout) or not installed: try the next
        pass
    candidates.append(Path(sys.prefix) / "share" / PACKAGE / DEFAULT_POLICY)
    for path in candidates:
        if path.exists():
            return path
    raise PolicyError("no default policy is shipped yet (looked in "
                      + ", ".join(str(p) for p in candidates)
                      + "); train one with `cassie-rl train` and pass its run folder, e.g. "
                      "policy:=runs/walk (cassie-rl: --policy runs/walk)")


def load_policy_files(paths: str | Path | Sequence[str | Path]):
    """Load one saved policy or an ensemble: (module with ``act_deterministic``, env config).

    Ensemble members must agree on everything that turns their actions into targets.
    """
    from cassie_rl_ros.training.checkpoint import CheckpointError, load_ensemble, load_policy

    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [str(p) for p in paths]
    if not paths:
        raise PolicyError("no policy given")
    try:
        if len(paths) == 1:
            policy, cfg = load_policy(paths[0])
            configs = [cfg]
        else:
            policy, configs = load_ensemble(paths)
    except CheckpointError as err:
        raise PolicyError(str(err)) from None
    first = configs[0].env
    for path, cfg in zip(paths[1:], configs[1:]):
        env = cfg.env
        for name, a, b in (("action", env.action, first.action),
                           ("action_clip", env.action_clip, first.action_clip),
                           ("policy period", env.policy_dt, first.policy_dt),
                           ("gait.cycle_seconds", env.gait.cycle_seconds,
                            first.gait.cycle_seconds),
                           ("reference_path", env.reference_path, first.reference_path),
                           ("gait_prior", env.gait_prior, first.gait_prior),
                           ("gait.swing_ratio", env.gait.swing_ratio, first.gait.swing_ratio),
                           ("gait.leg_phase_offset", tuple(env.gait.leg_phase_offset),
                            tuple(first.gait.leg_phase_offset))):
            if a != b and (first.action == "gait_prior" or not name.startswith("gait")):
                raise PolicyError(f"{path}: {name} {a!r} differs from {paths[0]}'s {b!r}; "
                                  "ensemble members must map actions to targets alike")
    if len(configs) > 1:
        first = _common_ranges(first, [cfg.env for cfg in configs], paths)
    return policy, first


def _common_ranges(env: CassieEnvConfig, members: list[CassieEnvConfig],
                   paths: Sequence[str]) -> CassieEnvConfig:
    """``env`` with the command and stepping-frequency ranges every member was trained on."""
    def common(name: str, ranges: list[tuple[float, float]]) -> tuple[float, float]:
        low, high = max(r[0] for r in ranges), min(r[1] for r in ranges)
        if low > high:
            raise PolicyError(f"the ensemble's {name} ranges {ranges} ({', '.join(paths)}) have "
                              "nothing in common")
        return (low, high)

    command = replace(env.command, **{name: common(name, [getattr(m.command, name)
                                                          for m in members])
                                      for name in ("forward", "lateral", "yaw_rate")})
    gait = replace(env.gait, step_frequency=common(
        "step_frequency", [m.gait.step_frequency for m in members]))
    return replace(env, command=command, gait=gait)


def _span(r: tuple[float, float]) -> str:
    return f"[{r[0]:g}, {r[1]:g}]"


class PolicyRunner:
    """A deployed policy for one robot: commands, inputs, staleness, resets and one step."""

    def __init__(self, policy, env_config: CassieEnvConfig, speed: float = 0.0,
                 step_frequency: float | None = None, estimator_rate: float | None = None):
        """``policy``: an ActorCritic or EnsemblePolicy (eval mode); ``env_config``: the env it
        was trained in. ``speed``/``step_frequency``: initial commands (clamped like any).

        A ``state_est`` policy gets the env's own estimator (``CassieEstimator``), updated with
        every joint state + IMU pair: ``estimator_rate`` (Hz, default the env's) must be the
        rate those pairs arrive at (the driver's state rate)."""
        import torch

        self._torch = torch
        obs_cfg = env_config.observation
        if obs_cfg.state == "true_state":
            raise PolicyError(
                "this policy observes 'true_state' (simulator ground truth: pelvis position and "
                "velocity, every joint), which no robot reports; only 'sensors' (IMU and "
                "encoders) and 'state_est' (state estimator) policies can run here. Train with "
                "env.observation.state=sensors")
        joint_qadr = joint_dadr = None
        if obs_cfg.reference:
            from cassie_sim_ros.model import load_model

            model = load_model(env_config.sim.variant, env_config.sim.timestep)
            joint_qadr = {model.joint(i).name: int(model.jnt_qposadr[i])
                          for i in range(model.njnt)}
            joint_dadr = {model.joint(i).name: int(model.jnt_dofadr[i])
                          for i in range(model.njnt)}
        try:
            self.builder = ObservationBuilder(obs_cfg, joint_qadr, joint_dadr)
        except NotImplementedError as err:
            raise PolicyError(str(err)) from None
        num_obs = getattr(policy, "num_obs", self.builder.size)
        if num_obs != self.builder.size:
            raise PolicyError(f"the policy reads {num_obs} observations, its config's layout "
                              f"has {self.builder.size}")
        self.reference = None
        if env_config.action == "delta" or obs_cfg.reference:
            try:
                self.reference = load_reference(env_config.reference_path)
            except ValueError as err:
                raise PolicyError(f"the policy needs its reference trajectory: {err}") from None
        self.action_origin = ActionOrigin(env_config, self.reference)
        self.estimator = None
        if obs_cfg.state == "state_est":
            from cassie_sim_ros.estimator import CassieEstimator

            rate = estimator_rate or env_config.estimator_rate
            # The env's formula, so that the same rate gives the same float.
            steps = int(round(1.0 / (rate * env_config.sim.timestep)))
            dt = (steps * env_config.sim.timestep
                  if abs(steps * env_config.sim.timestep * rate - 1.0) < 1e-9 else 1.0 / rate)
            self.estimator = CassieEstimator(1, dt=dt)
        self.policy = policy
        self.config = env_config
        self.dt = env_config.policy_dt
        """Policy period (s): the clock advances by exactly this per step, as in training."""
        self.dt_ns = int(round(self.dt * 1e9))
        self.stale_after = STALE_PERIODS * self.dt
        cmd = env_config.command
        self.ranges = {"forward": cmd.forward, "lateral": cmd.lateral, "yaw_rate": cmd.yaw_rate,
                       "step_frequency": env_config.gait.step_frequency}
        self.task = TaskInputs(phase=np.zeros(1), command=np.zeros((1, 3)),
                               step_frequency=np.ones(1), target_heading=np.zeros(1))
        self.initial_feedback = [self.set_command(speed)]
        freq = env_config.gait.step_frequency[0] if step_frequency is None else step_frequency
        self.initial_feedback.append(self.set_step_frequency(freq))
        self.steps = 0
        self.anchored = False
        self._joint_index: dict[tuple[str, ...], np.ndarray] = {}
        self._joints: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._imu: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._t_joints: float | None = None
        self._t_imu: float | None = None
        self._last_now: float | None = None
        self._stamp_joints: int | None = None
        self._stamp_imu: int | None = None
        self._acted_stamp: int | None = None
        self._next_due: int | None = None
        self._last_quat: np.ndarray | None = None
        self._sequence = [0, 0]  # joint state and IMU messages taken
        self._estimated: tuple = (None, 0, 0)  # stamp and sequence numbers of the last update
        self._t_estimated: float | None = None  # caller's time of the last accepted update
        self._rate_warned = False  # pairs arrived at another rate than the estimator's
        self._acted_sequence = (0, 0)  # messages taken when the last step acted

    @classmethod
    def load(cls, paths: str | Path | Sequence[str | Path], **kwargs) -> PolicyRunner:
        """From saved policy folders/files (several: an ensemble)."""
        policy, env_config = load_policy_files(paths)
        return cls(policy, env_config, **kwargs)

    # ------------------------------------------------------------------ commands

    @property
    def command(self) -> tuple[float, float, float]:
        return tuple(float(x) for x in self.task.command[0])

    @property
    def step_frequency(self) -> float:
        return float(self.task.step_frequency[0])

    def set_command(self, forward: float, lateral: float = 0.0, yaw_rate: float = 0.0
                    ) -> Feedback:
        """Speed command (m/s, m/s, rad/s), clamped to the trained range."""
        values = (forward, lateral, yaw_rate)
        try:
            values = tuple(float(v) for v in values)
        except (TypeError, ValueError):
            values = (math.nan,) * 3
        if not all(math.isfinite(v) for v in values):
            return Feedback(self.command, error=(
                f"velocity command {values} is not finite: ignored, keeping "
                f"{self._fmt(self.command)}"))
        clamped, notes = [], []
        for value, key, unit in zip(values, ("forward", "lateral", "yaw_rate"),
                                    ("m/s", "m/s", "rad/s")):
            low, high = self.ranges[key]
            c = min(max(value, low), high)
            if c != value:
                notes.append(f"{key} {value:g} {unit} -> {c:g} (trained {_span((low, high))})")
            clamped.append(c)
        self.task.command[0] = clamped
        warning = ("velocity command outside the trained range, clamped: " + "; ".join(notes)
                   if notes else None)
        return Feedback(self.command, warning=warning)

    def set_step_frequency(self, value: float) -> Feedback:
        """Stepping frequency (phase rate multiplier), clamped to the trained range."""
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            return Feedback((self.step_frequency,), error=(
                f"step frequency {value} is not finite: ignored, keeping "
                f"{self.step_frequency:g}"))
        low, high = self.ranges["step_frequency"]
        clamped = min(max(value, low), high)
        self.task.step_frequency[0] = clamped
        warning = None
        if clamped != value:
            warning = (f"step frequency {value:g} outside the trained range "
                       f"{_span((low, high))}: clamped to {clamped:g}")
        return Feedback((self.step_frequency,), warning=warning)

    @staticmethod
    def _fmt(values) -> str:
        return "(" + ", ".join(f"{v:g}" for v in values) + ")"

    # ------------------------------------------------------------------ inputs

    def _motor_index(self, names: Sequence[str]) -> np.ndarray:
        key = tuple(names)
        index = self._joint_index.get(key)
        if index is None:
            where = {n: i for i, n in enumerate(key)}
            missing = [n for n in C.MOTOR_NAMES + C.PASSIVE_JOINT_NAMES if n not in where]
            if missing:
                raise ValueError(f"joint states lack {', '.join(missing)}")
            index = np.array([where[n] for n in C.MOTOR_NAMES + C.PASSIVE_JOINT_NAMES])
            if len(self._joint_index) > 16:  # a driver changes its names rarely, if ever
                self._joint_index.clear()
            self._joint_index[key] = index
        return index

    def _clock(self, now: float, stamp_ns: int | None, previous_stamp: int | None) -> str | None:
        """Notice time going backwards (on the caller's clock or in the stamps)."""
        back = None
        if self._last_now is not None and now < self._last_now - TIME_JUMP_BACK:
            back = f"the clock went back {self._last_now - now:.3f} s"
        elif (stamp_ns is not None and previous_stamp is not None
              and stamp_ns < previous_stamp - TIME_JUMP_BACK * 1e9):
            back = f"message stamps went back {(previous_stamp - stamp_ns) * 1e-9:.3f} s"
        self._last_now = now if self._last_now is None else max(now, self._last_now)
        if back is None:
            return None
        # Forget everything stamped on the old timeline; re-anchor at the next IMU reading.
        self._last_now = now
        self._t_joints = self._t_imu = self._t_estimated = None
        self._joints = self._imu = None
        self._stamp_joints = self._stamp_imu = None
        self._acted_stamp = self._next_due = None
        self._last_quat = None
        self.anchored = False
        if self.estimator is not None:
            self.estimator.reset()
        return f"{back}: restart assumed, target heading re-anchored (phase kept)"

    def joint_state(self, names: Sequence[str], position: Sequence[float],
                    velocity: Sequence[float], effort: Sequence[float] = (), now: float = 0.0,
                    stamp_ns: int | None = None) -> str | None:
        """A joint state message (10 motors + 6 passive joints by name, any order) received at
        ``now`` (s, the caller's clock). Returns a note to log (a restart), or raises ValueError
        for a malformed message (which is then ignored)."""
        index = self._motor_index(names)
        pos = np.asarray(position, dtype=np.float64)
        vel = np.asarray(velocity, dtype=np.float64)
        if pos.shape != (len(names),) or vel.shape != (len(names),):
            raise ValueError(f"joint states have {pos.size} positions and {vel.size} "
                             f"velocities for {len(names)} names")
        pos, vel = pos[index], vel[index]
        eff = np.asarray(effort, dtype=np.float64)
        eff = eff[index[:C.NUM_MOTORS]] if eff.shape == (len(names),) else np.zeros(C.NUM_MOTORS)
        if not (np.isfinite(pos).all() and np.isfinite(vel).all()):
            raise ValueError("joint states have non-finite positions or velocities")
        note = self._clock(now, stamp_ns, self._stamp_joints)
        self._joints = (pos, vel, eff)
        self._t_joints = now
        self._stamp_joints = stamp_ns
        self._sequence[0] += 1
        return self._estimate(note)

    def imu(self, orientation: Sequence[float], angular_velocity: Sequence[float],
            linear_acceleration: Sequence[float] = (0.0, 0.0, 0.0), now: float = 0.0,
            stamp_ns: int | None = None) -> str | None:
        """An IMU reading: orientation quaternion **w, x, y, z**, gyro (rad/s, IMU frame),
        acceleration, received at ``now``. Returns a note to log (first anchoring, a reset or a
        restart), or raises ValueError for a malformed reading (which is then ignored)."""
        quat = np.asarray(orientation, dtype=np.float64).reshape(4)
        gyro = np.asarray(angular_velocity, dtype=np.float64).reshape(3)
        accel = np.asarray(linear_acceleration, dtype=np.float64).reshape(3)
        if not (np.isfinite(quat).all() and np.isfinite(gyro).all()):
            raise ValueError("IMU reading has non-finite orientation or angular velocity")
        if abs(float(np.linalg.norm(quat)) - 1.0) > QUATERNION_TOLERANCE:
            raise ValueError(f"IMU orientation is not a unit quaternion (norm "
                             f"{np.linalg.norm(quat):.4g})")
        note = self._clock(now, stamp_ns, self._stamp_imu)
        yaw = float(quat_yaw(quat[None])[0])
        if not self.anchored:
            self.task.target_heading[0] = yaw
            self.anchored = True
            note = note or f"target heading anchored at the IMU yaw {yaw:.3f} rad"
        elif self._last_quat is not None:
            dt = max(0.0, now - (self._t_imu if self._t_imu is not None else now))
            cos_half = min(1.0, abs(float(np.dot(quat, self._last_quat)))
                           / float(np.linalg.norm(quat) * np.linalg.norm(self._last_quat)))
            jump = 2.0 * math.acos(cos_half)
            if jump > RESET_ROTATION + MAX_ANGULAR_RATE * dt:
                self.task.target_heading[0] = yaw
                note = (f"IMU orientation jumped {jump:.2f} rad in {dt:.3f} s: reset assumed, "
                        f"target heading re-anchored at {yaw:.3f} rad (phase kept)")
                if self.estimator is not None:
                    self.estimator.reset()
        self._last_quat = quat
        self._imu = (quat, gyro, accel)
        self._t_imu = now
        self._stamp_imu = stamp_ns
        self._sequence[1] += 1
        return self._estimate(note)

    def _estimate(self, note: str | None) -> str | None:
        """state_est: one estimator update per new joint state + IMU pair (same stamp, or both
        new when unstamped)."""
        if self.estimator is None or self._joints is None or self._imu is None:
            return note
        last_stamp, last_js, last_imu = self._estimated
        js, imu = self._stamp_joints, self._stamp_imu
        if js is not None and imu is not None:
            if js != imu or js == last_stamp:
                return note
        elif not (self._sequence[0] > last_js and self._sequence[1] > last_imu):
            return note
        if js is not None and last_stamp is not None and not self._rate_warned:
            interval = (js - last_stamp) * 1e-9
            if abs(interval - self.estimator.dt) > 0.1 * self.estimator.dt:
                self._rate_warned = True
                note = ((note + "; " if note else "") + f"joint state + IMU pairs arrive "
                        f"{interval:.4g} s apart but the state estimator integrates "
                        f"{self.estimator.dt:.4g} s per pair: set estimator_rate to the "
                        "driver's state rate")
        self._estimated = (js, *self._sequence)
        self.estimator.update(self.sensors(), return_state=False)
        if self.estimator.consecutive_rejections[0] == 0:
            self._t_estimated = max(self._t_joints, self._t_imu)
        if self.estimator.consecutive_rejections[0] > MAX_ESTIMATOR_REJECTIONS:
            self.estimator.reset()
            note = ((note + "; " if note else "") + f"the state estimator rejected "
                    f"{MAX_ESTIMATOR_REJECTIONS} readings in a row (a reset?): re-initialised")
        return note

    def readings(self, sensors: SensorReadings, now: float, stamp_ns: int | None = None
                 ) -> list[str]:
        """Joint states and IMU straight from a ``SensorReadings`` (N = 1), as a simulator in
        the same process reports them; returns the notes to log."""
        m = sensors
        notes = [self.joint_state(
                     C.MOTOR_NAMES + C.PASSIVE_JOINT_NAMES,
                     np.concatenate([m.motor_position[0], m.joint_position[0]]),
                     np.concatenate([m.motor_velocity[0], m.joint_velocity[0]]),
                     np.concatenate([m.motor_torque[0], np.zeros(len(C.PASSIVE_JOINT_NAMES))]),
                     now, stamp_ns),
                 self.imu(m.imu_orientation[0], m.imu_angular_velocity[0],
                          m.imu_linear_acceleration[0], now, stamp_ns)]
        return [n for n in notes if n]

    def reanchor(self) -> None:
        """Take the next IMU yaw as the target heading (after a known reset); phase kept."""
        self.anchored = False
        self._last_quat = None

    def stale(self, now: float) -> str | None:
        """Why the inputs cannot be acted on at ``now``, or None when they are fresh."""
        waiting = [name for name, t in (("joint states", self._t_joints), ("IMU", self._t_imu))
                   if t is None]
        if waiting:
            return f"waiting for {' and '.join(waiting)}"
        if self.estimator is not None and not self.estimator.initialized[0]:
            return "the state estimator is initialising"
        sources = [("joint states", self._t_joints), ("IMU", self._t_imu)]
        if self.estimator is not None:  # pairs can stop matching while both streams flow
            sources.append(("state estimator update", self._t_estimated))
        for name, t in sources:
            if t is None:
                return f"no {name} yet"
            age = now - t
            if age > self.stale_after + 1e-9:
                return (f"no {name} for {age:.3f} s (more than {STALE_PERIODS} policy periods "
                        f"of {self.dt:g} s)")
            if age < -TIME_JUMP_BACK:  # the clock went back since: these inputs are from before
                return f"the clock went back {-age:.3f} s since the last {name}"
        return None

    def state_due(self, tolerance_ns: int = 0) -> bool:
        """Event-driven stepping: a joint state and an IMU reading with matching stamps (within
        ``tolerance_ns``) that is newer than the last one acted on and at least one policy
        period after the last due time. Acting on every 2 kHz state would run the clock fast."""
        js, imu = self._stamp_joints, self._stamp_imu
        if js is None and imu is None:  # an unstamped driver: a new message on both streams
            return (self._t_joints is not None and self._t_imu is not None
                    and all(n > acted for n, acted in zip(self._sequence, self._acted_sequence)))
        if js is None or imu is None or abs(js - imu) > tolerance_ns:
            return False
        stamp = max(js, imu)
        if self._acted_stamp is not None and stamp <= self._acted_stamp:
            return False
        return self._next_due is None or stamp >= self._next_due - 1000  # 1 µs of rounding

    def early_state(self, tolerance_ns: int = 0) -> int | None:
        """The stamp of a matching pair newer than the last one acted on but not yet due, or
        None. One that stays the newest means the driver steps a shorter period than the
        policy's: in lockstep the two then wait for each other."""
        js, imu = self._stamp_joints, self._stamp_imu
        if (js is None or imu is None or abs(js - imu) > tolerance_ns
                or self._acted_stamp is None or self.state_due(tolerance_ns)):
            return None
        stamp = max(js, imu)
        return stamp if stamp > self._acted_stamp else None

    def sensors(self) -> SensorReadings:
        """The latest inputs as the simulator's ``SensorReadings`` (N = 1)."""
        if self._joints is None or self._imu is None:
            raise ValueError("no joint states or IMU reading yet")
        pos, vel, eff = self._joints
        quat, gyro, accel = self._imu
        m = C.NUM_MOTORS
        return SensorReadings(
            motor_position=pos[None, :m], motor_velocity=vel[None, :m],
            motor_torque=eff[None], joint_position=pos[None, m:],
            joint_velocity=vel[None, m:], imu_orientation=quat[None],
            imu_angular_velocity=gyro[None], imu_linear_acceleration=accel[None],
            imu_magnetometer=np.zeros((1, 3)))

    # ------------------------------------------------------------------ policy

    def observe(self, sensors: SensorReadings) -> np.ndarray:
        """The observation (1, num_obs) float32, built by the env's ObservationBuilder."""
        reference = None
        if self.config.observation.reference:
            reference = reference_state(self.reference, self.task, self.dt,
                                        self.config.gait.cycle_seconds)
        estimate = None if self.estimator is None else self.estimator.state()
        return self.builder.build(sensors, self.task, reference=reference, estimate=estimate)

    def act(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw action (10,) and PD position targets (10,) for observation (1, num_obs); the
        clock then advances one policy period."""
        torch = self._torch
        with torch.inference_mode():
            raw = self.policy.act_deterministic(torch.from_numpy(obs)).numpy()
        action = clip_actions(raw, self.config.action_clip)
        targets = motor_targets(action, self.action_origin.pose(self.task))
        advance_clock(self.task, self.dt, self.config.gait.cycle_seconds)
        self.steps += 1
        return raw[0].astype(np.float64), targets[0]

    def step(self, now: float) -> StepOutput | None:
        """One policy step on the latest inputs; None (publish nothing) when they are stale.
        Raises PolicyError, sending nothing, if the network's action is not finite."""
        if self.stale(now) is not None:
            return None
        phase = float(self.task.phase[0])
        obs = self.observe(self.sensors())
        action, targets = self.act(obs)
        if not np.isfinite(action).all():  # never with finite weights and inputs
            # The env would hold the neutral pose (clip_actions); a robot is safer damping.
            raise PolicyError("the policy's action is not finite: no PD target sent (the "
                              "driver's watchdog damps)")
        self._acted_sequence = tuple(self._sequence)
        stamp = None
        if self._stamp_joints is not None and self._stamp_imu is not None:
            stamp = max(self._stamp_joints, self._stamp_imu)
            self._acted_stamp = stamp
            if self._next_due is None or stamp - self._next_due >= self.dt_ns:
                self._next_due = stamp + self.dt_ns  # first step, or after a gap: resync
            else:
                self._next_due += self.dt_ns
        return StepOutput(obs[0], action, targets, phase, stamp)


__all__ = ["DEFAULT_POLICY", "Feedback", "PolicyError", "PolicyRunner", "STALE_PERIODS",
           "StepOutput", "default_policy_path", "load_policy_files"]
