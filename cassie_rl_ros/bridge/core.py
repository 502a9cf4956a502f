"""The hardware bridge's logic without ROS or sockets: what to send the robot, what to publish.

``BridgeCore`` sits between the ROS topics and the robot's PD-mode UDP protocol
(``protocol.py``). The node (``nodes/hardware_bridge.py``) feeds it datagrams, PD targets and
the time, and sends what it returns; everything that decides what reaches the motors is here and
unit-tested without a network (``test/bridge/test_bridge_core.py``).

What the bridge sends every 0.5 ms (one ``pd_in_t``), by mode (``Mode``):

- ``policy``: the mode switch is at policy and a valid PD target arrived less than
  ``watchdog_timeout`` ago: that target (position, velocity target, feed-forward torque) with
  the configured gains.
- ``watchdog``: the switch is at policy but no valid target for ``watchdog_timeout``: damping.
- ``stand``: the switch is at stand: the standing pose (the model's keyframe) with the
  configured gains, approached linearly from the measured pose over ``stand_ramp_time``.
- ``damping``: the switch is at damping.
- ``estop``: the radio's e-stop is pressed, the radio signal is lost or a radio value is not
  finite; it stays latched after release until the mode switch has been at damping.
- ``arming``: the bridge has not yet seen the mode switch at damping since it started: damping.
  A bridge started (or restarted) with the switch at stand or policy must not move the robot
  until the operator has been through damping. (Not in lockstep, which only the emulator runs.)
- ``waiting``: no valid state from the robot for ``STATE_TIMEOUT`` (or none yet): damping.

Damping is P = 0, D = the configured D gains, all targets and torques 0. Targets are checked by
the simulator node's own rule (``sim_server.PdTargetChecker``: names, lengths, finite values,
ranges), so a non-finite or out-of-range value never reaches a packet.

Radio mapping (``estop_channel``, ``mode_channel``; **check both on the robot before use**: they
follow the lab's deployment scripts, where channel 8 is the STO switch, 1 when released, and
channel 9 the 3-position switch beside it): e-stop released only when channel 8 > 0.5; mode switch
channel 9: < −0.5 damping, −0.5..0.5 stand, > 0.5 policy.

Received datagrams are dropped and counted unless they come from the configured robot address
and port and are exactly 2 + 493 bytes; a duplicate or out-of-order sequence number is dropped
too. The headers give packet loss (gaps in the robot's sequence numbers) and the round trip
(which of our packets the robot last answered: in packets, and in seconds from our send times).
"""

from __future__ import annotations

import enum
import ipaddress
import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np

from cassie_rl_ros.bridge import protocol as P
from cassie_sim_ros import constants as C
from cassie_sim_ros.config import ConfigError
from cassie_sim_ros.model import STANDING_MOTOR_POSITION, load_model
from cassie_sim_ros.sim_server import PdCommand, PdTargetChecker, Rejection, quat_rotate_inverse

LOOP_PERIOD = 0.0005
"""The robot's PD loop and state stream period (s): 2 kHz."""
STATE_TIMEOUT = 0.1
"""Without a valid state for this long (s) the robot counts as gone (mode ``waiting``)."""
GRAVITY = 9.81
"""m/s²: what the robot's estimator removes from the translational acceleration."""
QUATERNION_ROUNDING = 1e-3
"""Largest |norm − 1| of a robot orientation that is float32 rounding, corrected here."""
ESTOP_RELEASED = 0.5
"""The e-stop channel counts as released only above this (released reads +1)."""
STATS_WINDOW = 1 << 16
"""Loop periods and round trips kept for statistics (about 33 s at 2 kHz)."""
LOSS_WARN = 0.01
"""Packet loss over a diagnostics window above which the status is WARN."""
JITTER_WARN = 0.00025
"""p99 loop period deviation (s) above which the status is WARN."""

OK, WARN, ERROR = 0, 1, 2
"""diagnostic_msgs/DiagnosticStatus levels."""

_S = P.STATE_OUT_SLICES
_POSITION, _ORIENTATION = _S["pelvis.position"], _S["pelvis.orientation"]
_GYRO, _VELOCITY = _S["pelvis.rotationalVelocity"], _S["pelvis.translationalVelocity"]
_ACCELERATION = _S["pelvis.translationalAcceleration"]
_MOTOR_POSITION, _MOTOR_VELOCITY = _S["motor.position"], _S["motor.velocity"]
_MOTOR_TORQUE = _S["motor.torque"]
_JOINT_POSITION, _JOINT_VELOCITY = _S["joint.position"], _S["joint.velocity"]


class Mode(str, enum.Enum):
    WAITING = "waiting"
    ESTOP = "estop"
    ARMING = "arming"
    DAMPING = "damping"
    STAND = "stand"
    POLICY = "policy"
    WATCHDOG = "watchdog"


@dataclass
class RobotState:
    """One robot state as the bridge publishes it: the simulator node's topics, fields and units
    (quaternions w, x, y, z), from ``state_out_t`` (the robot's estimator, no ground truth)."""

    time: float  # s: the stamp (wall time of receipt; robot time in lockstep)
    joint_position: np.ndarray  # (16,) JOINT_NAMES order: motors, then shin, tarsus, foot crank
    joint_velocity: np.ndarray  # (16,)
    joint_effort: np.ndarray  # (16,) motor torques; 0 for the passive joints
    imu_orientation: np.ndarray  # (4,) the estimator's pelvis orientation (IMU is aligned)
    imu_angular_velocity: np.ndarray  # (3,) rad/s, pelvis frame
    imu_linear_acceleration: np.ndarray  # (3,) m/s², specific force, IMU frame (+z at rest)
    pelvis_position: np.ndarray  # (3,) m, world, estimated (not ground truth)
    pelvis_orientation: np.ndarray  # (4,)
    pelvis_linear_velocity: np.ndarray  # (3,) m/s, pelvis frame (nav_msgs/Odometry's twist)
    pelvis_angular_velocity: np.ndarray  # (3,) rad/s, pelvis frame
    mode: str  # the bridge's Mode when it was read


@dataclass(frozen=True)
class BridgeConfig:
    """Parameters of the hardware bridge node; field names are the ROS parameter names."""

    robot_address: str = "10.10.10.3"
    """The robot's IPv4 address: the only destination, and the only accepted source. The robot
    emulator (``cassie-rl robot-sim``) listens on 127.0.0.1."""
    robot_port: int = 25010
    """The robot's UDP port (the emulator's: 25000)."""
    local_address: str = "10.10.10.100"
    """The address the bridge binds (127.0.0.1 with the emulator)."""
    local_port: int = 25011
    """The port the bridge binds; 0 lets the system choose."""
    mode: Literal["realtime", "lockstep"] = "realtime"
    """realtime: a packet every 0.5 ms of wall time; lockstep (emulator ``--lockstep`` only): per
    PD target, one policy period of packets, each waiting for the robot's answer."""
    publish_rate: float = 400.0
    """realtime: state publish rate (Hz), a divisor of 2000."""
    policy_period: float = 0.025
    """lockstep: robot time one PD target advances (s), a multiple of 0.0005."""
    kp: tuple[float, ...] = tuple(C.DEFAULT_KP.tolist())
    """P gains per motor (N·m/rad), motor order."""
    kd: tuple[float, ...] = tuple(C.DEFAULT_KD.tolist())
    """D gains per motor (N·m·s/rad), motor order; also the damping gains."""
    watchdog_timeout: float = 0.1
    """Seconds without a valid PD target before damping (policy mode)."""
    stand_ramp_time: float = 2.0
    """Seconds to move from the measured pose to the standing pose in stand mode."""
    position_margin: float = 0.2
    """Position targets may exceed the joint's range by this much (rad) before rejection."""
    estop_channel: int = 8
    """Radio channel of the e-stop (STO): released only above 0.5 (it reads +1), so pressed,
    an unset 0 or a wrong channel all damp. Check on the robot."""
    mode_channel: int = 9
    """Radio channel of the 3-position mode switch: < −0.5 damping, > 0.5 policy, else stand.
    Check on the robot."""
    diagnostics_period: float = 1.0
    """Seconds between /diagnostics messages."""
    rt_priority: int = 50
    """SCHED_FIFO priority (1..98) of the UDP thread; 0: normal scheduling. 50, as
    ros2_control's controller manager: a 2 kHz loop with normal scheduling misses its p99 goal
    (bench/bridge_loop.py). Needs the right to (root, CAP_SYS_NICE or an rtprio limit);
    without it the bridge warns and runs normally."""

    def __post_init__(self):
        def fail(name: str, allowed: str):
            raise ConfigError(f"{name}: {getattr(self, name)!r} is not allowed; "
                              f"allowed values: {allowed}")

        for name in ("robot_address", "local_address"):
            try:
                address = ipaddress.IPv4Address(getattr(self, name))
            except ValueError:
                fail(name, "an IPv4 address such as 10.10.10.3")
            if name == "robot_address" and (address.is_multicast or address.is_unspecified
                                            or address == ipaddress.IPv4Address("255.255.255.255")):
                fail(name, "one host's address (not multicast, broadcast or 0.0.0.0)")
        if not 1 <= self.robot_port <= 65535:
            fail("robot_port", "a port in 1..65535")
        if not 0 <= self.local_port <= 65535:
            fail("local_port", "a port in 0..65535 (0: any)")
        rate = 1.0 / LOOP_PERIOD
        if not (0.0 < self.publish_rate <= rate and _is_whole(rate / self.publish_rate)):
            fail("publish_rate", f"a divisor of {rate:g} Hz (e.g. 2000, 1000, 400, 200)")
        if not (self.policy_period >= LOOP_PERIOD and _is_whole(self.policy_period / LOOP_PERIOD)):
            fail("policy_period", f"a whole multiple of {LOOP_PERIOD:g} s")
        for name in ("kp", "kd"):
            gains = getattr(self, name)
            if len(gains) != C.NUM_MOTORS or not all(math.isfinite(g) and g >= 0 for g in gains):
                fail(name, f"{C.NUM_MOTORS} finite gains >= 0 in motor order "
                           f"[{', '.join(C.MOTOR_NAMES)}]")
        if not (math.isfinite(self.watchdog_timeout) and self.watchdog_timeout >= LOOP_PERIOD):
            fail("watchdog_timeout", f"seconds >= {LOOP_PERIOD:g}")
        if self.mode == "lockstep" and self.policy_period >= self.watchdog_timeout:
            # One target per period: the watchdog would damp in the middle of every period.
            fail("policy_period", f"in lockstep, seconds < watchdog_timeout "
                                  f"({self.watchdog_timeout:g})")
        if not (math.isfinite(self.stand_ramp_time) and self.stand_ramp_time >= 0.0):
            fail("stand_ramp_time", "seconds >= 0")
        if not (math.isfinite(self.position_margin) and self.position_margin >= 0.0):
            fail("position_margin", "radians >= 0")
        for name in ("estop_channel", "mode_channel"):
            if not 0 <= getattr(self, name) < 16:
                fail(name, "a radio channel index in 0..15")
        if self.estop_channel == self.mode_channel:
            fail("mode_channel", "a channel other than estop_channel")
        if not (math.isfinite(self.diagnostics_period) and self.diagnostics_period > 0):
            fail("diagnostics_period", "seconds > 0")
        if not 0 <= self.rt_priority <= 98:
            fail("rt_priority", "0 (normal scheduling) or a SCHED_FIFO priority in 1..98")

    @property
    def robot(self) -> tuple[str, int]:
        return self.robot_address, self.robot_port

    @property
    def local(self) -> tuple[str, int]:
        return self.local_address, self.local_port


PARAMETERS = tuple(f.name for f in fields(BridgeConfig))


def _is_whole(x: float) -> bool:
    return abs(x - round(x)) < 1e-6 * max(1.0, abs(x)) and round(x) >= 1


class Ring:
    """The last ``size`` samples of a statistic, and a window since the last ``take``."""

    def __init__(self, size: int = STATS_WINDOW):
        self.data = np.zeros(size)
        self.count = 0
        self._mark = 0

    def add(self, x: float):
        self.data[self.count % len(self.data)] = x
        self.count += 1

    def _span(self, start: int) -> np.ndarray:
        start = max(start, self.count - len(self.data))
        idx = np.arange(start, self.count) % len(self.data)
        return self.data[idx]

    def all(self) -> np.ndarray:
        return self._span(0)

    def take(self) -> np.ndarray:
        """Samples since the previous ``take``."""
        out = self._span(self._mark)
        self._mark = self.count
        return out


def period_stats(periods: np.ndarray, nominal: float = LOOP_PERIOD) -> dict[str, float]:
    """Median period and the p99 and max of |period − nominal|, in ms."""
    if periods.size == 0:
        return {}
    dev = np.abs(periods - nominal)
    return {"period_median_ms": float(np.median(periods)) * 1e3,
            "period_p99_deviation_ms": float(np.percentile(dev, 99)) * 1e3,
            "period_max_deviation_ms": float(dev.max()) * 1e3}


class BridgeCore:
    """One robot link: checks inputs, decides each packet, keeps the health counters.

    Thread use: ``set_target``/``parse_target`` from the ROS executor thread, everything else
    from the UDP thread; ``diagnostics`` and ``totals`` from either (a lock guards the windows).
    Times are seconds on one monotonic clock chosen by the caller (robot time in lockstep).
    """

    def __init__(self, config: BridgeConfig | None = None):
        self.config = config = config or BridgeConfig()
        self.checker = PdTargetChecker(load_model(), config.position_margin)
        self.standing_pose = STANDING_MOTOR_POSITION.copy()
        """Motor positions of the standing keyframe (rad, motor order)."""
        self._kp = np.asarray(config.kp, dtype=float)
        self._kd = np.asarray(config.kd, dtype=float)
        self._zeros = np.zeros(C.NUM_MOTORS)
        self.seq = P.SequenceState()
        self._sent_at = np.full(P.SEQ_MODULO, np.nan)
        self._lock = threading.Lock()
        self._target: tuple[PdCommand, float] | None = None
        self.state: np.void | None = None
        """The last accepted ``state_out_t`` record."""
        self.state_time: float | None = None
        self.mode = Mode.WAITING
        self._latched = False
        # The mode switch was at damping since the start. Lockstep talks only to the emulator.
        self._armed = config.mode == "lockstep"
        self._stand_from: tuple[np.ndarray, float] | None = None
        self._last_send: float | None = None
        self._payload: tuple[tuple, bytes] = ((), b"")
        self.periods, self.rtts = Ring(), Ring()
        self.events: deque[tuple[int, str]] = deque(maxlen=100)
        """(level, message) for the node to log: mode changes."""
        self.counts = dict.fromkeys(
            ("sent", "received", "lost", "out_of_order", "foreign", "wrong_length",
             "accepted_targets", "rejected_targets", "watchdog_trips", "estops"), 0)
        self._window = dict(self.counts)
        self._rtt_packets = 0

    # ---------------------------------------------------------------- PD targets

    def parse_target(self, names: Sequence[str], position: Sequence[float],
                     velocity: Sequence[float] = (), effort: Sequence[float] = ()
                     ) -> PdCommand | Rejection:
        """Check a JointState-like PD target (the simulator node's rule); counts it."""
        cmd = self.checker.parse(names, position, velocity, effort)
        self.counts["accepted_targets" if isinstance(cmd, PdCommand) else
                    "rejected_targets"] += 1
        return cmd

    def set_target(self, command: PdCommand, now: float):
        """The latest valid target, received at ``now``."""
        self._target = (command, now)

    def clear_target(self):
        """Forget the target (the next packets in policy mode are damping)."""
        self._target = None

    # ---------------------------------------------------------------- robot → bridge

    def receive(self, data: bytes, source: tuple[str, int], now: float) -> bool:
        """One datagram; True when it is a new valid state (then ``self.state`` holds it)."""
        if (source[0], source[1]) != self.config.robot:
            self.counts["foreign"] += 1
            return False
        if len(data) != P.HEADER_SIZE + P.STATE_OUT_SIZE:
            self.counts["wrong_length"] += 1
            return False
        seq, echo, payload = P.split_packet(data)
        lost, rtt_packets = self.seq.receive(seq, echo)
        if lost is None:
            self.counts["out_of_order"] += 1
            return False
        self.counts["received"] += 1
        self.counts["lost"] += lost
        self._rtt_packets = rtt_packets
        sent = self._sent_at[echo]
        if math.isfinite(sent):
            self.rtts.add(now - sent)
            self._sent_at[echo] = math.nan  # one sample per answered packet
        self.state = P.view_state_out(payload)
        self._state_bytes = payload
        self.state_time = now
        if not self._armed:  # seen here, not only at the next send: two states may come between
            radio = self.state["radio"]
            self._armed = bool(radio["signalGood"]) and float(
                radio["channel"][self.config.mode_channel]) < -0.5
        return True

    # ---------------------------------------------------------------- bridge → robot

    def radio_mode(self) -> Mode:
        """What the radio asks for (e-stop latch included); call with a state present."""
        radio = self.state["radio"]
        channel = radio["channel"]
        estop, switch = float(channel[self.config.estop_channel]), float(
            channel[self.config.mode_channel])
        # Released reads +1: anything not clearly so (pressed, an unset channel's 0, a wrong
        # channel index) counts as pressed.
        if not (radio["signalGood"] and math.isfinite(estop) and math.isfinite(switch)) \
                or not estop > ESTOP_RELEASED:
            if not self._latched:
                self.counts["estops"] += 1
            self._latched = True
            return Mode.ESTOP
        if switch < -0.5:
            self._latched, self._armed = False, True
            return Mode.DAMPING
        if self._latched:
            return Mode.ESTOP
        if not self._armed:
            return Mode.ARMING
        return Mode.POLICY if switch > 0.5 else Mode.STAND

    def decide(self, now: float) -> tuple[Mode, tuple[np.ndarray, ...]]:
        """The mode and the motor PD command (torque, p, d, kp, kd) to send at ``now``."""
        if self.state is None or now - self.state_time > STATE_TIMEOUT:
            mode = Mode.WAITING
        else:
            mode = self.radio_mode()
        target = self._target  # read once: the executor thread may replace it meanwhile
        if mode is Mode.POLICY:
            if target is None or now - target[1] > self.config.watchdog_timeout:
                mode = Mode.WATCHDOG
        if mode is not self.mode:
            self._changed(self.mode, mode, now)
        self.mode = mode
        if mode is Mode.POLICY:
            cmd = target[0]
            return mode, (cmd.effort, cmd.position, cmd.velocity, self._kp, self._kd)
        if mode is Mode.STAND:
            start, t0 = self._stand_from
            ramp = self.config.stand_ramp_time
            s = 1.0 if ramp == 0 else min(1.0, max(0.0, (now - t0) / ramp))
            pose = self.standing_pose if s >= 1.0 else start + s * (self.standing_pose - start)
            return mode, (self._zeros, pose, self._zeros, self._kp, self._kd)
        z = self._zeros
        return mode, (z, z, z, z, self._kd)

    def _changed(self, old: Mode, new: Mode, now: float):
        if new is Mode.STAND:
            measured = np.array(self.state["motor"]["position"], dtype=float)
            self._stand_from = ((measured if np.isfinite(measured).all()
                                 else self.standing_pose.copy()), now)
        if new is Mode.WATCHDOG and old is Mode.POLICY:
            self.counts["watchdog_trips"] += 1
        level = WARN if new in (Mode.ESTOP, Mode.WATCHDOG, Mode.WAITING, Mode.ARMING) else OK
        why = {Mode.WAITING: "no state from the robot", Mode.ESTOP: "e-stop or radio lost "
               "(latched until released and the mode switch is at damping)",
               Mode.WATCHDOG: f"no valid PD target for {self.config.watchdog_timeout:g} s",
               Mode.ARMING: "put the mode switch at damping once before stand or policy "
               "(start interlock)",
               Mode.DAMPING: "mode switch at damping", Mode.STAND: "mode switch at stand",
               Mode.POLICY: "following PD targets"}[new]
        sends = "damping (P = 0, D only)" if new not in (Mode.POLICY, Mode.STAND) else "PD"
        self.events.append((level, f"mode {old.value} -> {new.value}: {why}; sending {sends}"))

    def packet(self, now: float, damp: bool = False) -> bytes:
        """The next datagram for the robot: header + ``pd_in_t`` for the current mode, or
        damping whatever the mode with ``damp`` (the last packet when the bridge stops)."""
        z = self._zeros
        command = (z, z, z, z, self._kd) if damp else self.decide(now)[1]
        cached_command, payload = self._payload
        if len(cached_command) != len(command) or any(
                a is not b for a, b in zip(cached_command, command)):
            payload = P.pack_motor_pd(*command)  # a new target or mode (arrays never change)
            self._payload = (command, payload)
        seq, echo = self.seq.next_header()
        self._sent_at[seq] = now
        if self._last_send is not None:
            self.periods.add(now - self._last_send)
        self._last_send = now
        self.counts["sent"] += 1
        return P.pack_packet(seq, echo, payload)

    # ---------------------------------------------------------------- bridge → ROS

    def snapshot(self, time: float) -> RobotState:
        """The last state, converted: IMU orientation and gyro are the estimator's pelvis
        orientation and rotational velocity (the IMU is aligned with the pelvis), the
        accelerometer's specific force is rebuilt from the estimated acceleration as
        Rᵀ(a + g·e_z), and the odometry twist is turned into the pelvis frame."""
        f = P.state_out_floats(self._state_bytes)
        quat = f[_ORIENTATION]
        norm = float(np.linalg.norm(quat))
        # Only float32 rounding is corrected. A zero or non-finite orientation (an estimator
        # not yet running) goes out as it came, for the policy to refuse: an identity here
        # would tell it the robot stands upright facing yaw 0.
        if abs(norm - 1.0) < QUATERNION_ROUNDING:
            quat = quat / norm
        accel = f[_ACCELERATION]
        accel[2] += GRAVITY
        gyro = f[_GYRO]
        return RobotState(
            time=time,
            joint_position=np.concatenate((f[_MOTOR_POSITION], f[_JOINT_POSITION])),
            joint_velocity=np.concatenate((f[_MOTOR_VELOCITY], f[_JOINT_VELOCITY])),
            joint_effort=np.concatenate((f[_MOTOR_TORQUE], np.zeros(6))),
            imu_orientation=quat,
            imu_angular_velocity=gyro,
            imu_linear_acceleration=quat_rotate_inverse(quat, accel),
            pelvis_position=f[_POSITION],
            pelvis_orientation=quat,
            pelvis_linear_velocity=quat_rotate_inverse(quat, f[_VELOCITY]),
            pelvis_angular_velocity=gyro,
            mode=self.mode.value,
        )

    def diagnostics(self, now: float) -> tuple[int, str, dict[str, str]]:
        """(level, message, key values) over the window since the previous call."""
        with self._lock:
            window = {k: v - self._window[k] for k, v in self.counts.items()}
            self._window = dict(self.counts)
            periods, rtts = self.periods.take(), self.rtts.take()
        received, lost = window["received"], window["lost"]
        loss = lost / (received + lost) if received + lost else 0.0
        stats = period_stats(periods)
        age = None if self.state_time is None else max(0.0, now - self.state_time)
        radio = None if self.state is None else self.state["radio"]
        values = {
            "mode": self.mode.value,
            "estop": str(self.mode is Mode.ESTOP).lower(),
            "radio_signal_good": "unknown" if radio is None else str(bool(radio["signalGood"])
                                                                      ).lower(),
            "packet_loss_percent": f"{100.0 * loss:.3f}",
            "round_trip_ms_median": (f"{np.median(rtts) * 1e3:.3f}" if rtts.size else "nan"),
            "round_trip_ms_max": f"{rtts.max() * 1e3:.3f}" if rtts.size else "nan",
            "round_trip_packets": str(self._rtt_packets),
            "loop_period_ms_median": f"{stats.get('period_median_ms', math.nan):.4f}",
            "loop_jitter_ms_p99": f"{stats.get('period_p99_deviation_ms', math.nan):.4f}",
            "loop_jitter_ms_max": f"{stats.get('period_max_deviation_ms', math.nan):.4f}",
            "state_age_ms": "nan" if age is None else f"{age * 1e3:.1f}",
        }
        values.update({k: str(v) for k, v in self.counts.items()})
        if age is None or age > STATE_TIMEOUT:
            return ERROR, "no state from the robot", values
        problems = []
        if self.mode in (Mode.ESTOP, Mode.WATCHDOG):
            problems.append(f"{self.mode.value}: damping")
        if self.mode is Mode.ARMING:
            problems.append("arming: damping until the mode switch has been at damping")
        if loss > LOSS_WARN:
            problems.append(f"packet loss {100 * loss:.1f} %")
        if stats and stats["period_p99_deviation_ms"] > JITTER_WARN * 1e3:
            problems.append(f"loop jitter p99 {stats['period_p99_deviation_ms']:.3f} ms")
        if problems:
            return WARN, "; ".join(problems), values
        return OK, f"mode {self.mode.value}", values

    def totals(self) -> dict:
        """Counters and whole-run statistics (the last ``STATS_WINDOW`` samples)."""
        with self._lock:
            out: dict = dict(self.counts)
            out.update({k: round(v, 4) for k, v in period_stats(self.periods.all()).items()})
            rtts = self.rtts.all()
        if rtts.size:
            out["round_trip_ms_median"] = round(float(np.median(rtts)) * 1e3, 4)
            out["round_trip_ms_p99"] = round(float(np.percentile(rtts, 99)) * 1e3, 4)
        out["mode"] = self.mode.value
        return out


__all__ = ["BridgeConfig", "BridgeCore", "LOOP_PERIOD", "Mode", "PARAMETERS",
           "RobotState", "Ring", "STATE_TIMEOUT", "period_stats"]
