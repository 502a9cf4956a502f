"""hardware_bridge over loopback UDP (127.0.0.1 only) and real Fast DDS.

The bridge runs in a subprocess. On its robot side is either ``FakeRobot`` (this test's own UDP
socket, which decides radio, sequence numbers and echoes) or the robot emulator
(``cassie-rl robot-sim``). Each test gets its own ROS_DOMAIN_ID and ephemeral UDP ports.
Nothing here is timed: waits are "until it happens, or fail after a generous limit".
"""

from __future__ import annotations

import collections
import itertools
import os
import re
import select
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile  # noqa: E402
from sensor_msgs.msg import Imu, JointState  # noqa: E402

from cassie_rl_ros.bridge import protocol as P  # noqa: E402
from cassie_sim_ros.model import STANDING_MOTOR_POSITION  # noqa: E402
from cassie_sim_ros import constants as C  # noqa: E402
from cassie_sim_ros.sim_server import JOINT_NAMES  # noqa: E402

from tiny_policy import train_tiny_policy  # noqa: E402  (test/ is on sys.path: conftest.py)
from ros_probe import ProbeNode, log_of, sched_fifo_threads  # noqa: E402  (conftest: sys.path)

BRIDGE = [sys.executable, "-m", "cassie_rl_ros.nodes.hardware_bridge", "--ros-args"]
EMULATOR = [sys.executable, "-m", "cassie_rl_ros.tools.robot_emulator", "--port", "0"]
STANDING = STANDING_MOTOR_POSITION
KP32, KD32 = C.DEFAULT_KP.astype(np.float32), C.DEFAULT_KD.astype(np.float32)
HIP_YAW = C.MOTOR_NAMES.index("left_hip_yaw")
POLICY, STAND, DAMPING = 1.0, 0.0, -1.0
KEEP_EVERY_MESSAGE = QoSProfile(history=HistoryPolicy.KEEP_ALL, depth=1)


def bridge_command(robot_port: int, *params: str) -> list[str]:
    return [*BRIDGE, "-p", "robot_address:=127.0.0.1", "-p", f"robot_port:={robot_port}",
            "-p", "local_address:=127.0.0.1", "-p", "local_port:=0",
            "-p", "diagnostics_period:=0.2", *(x for p in params for x in ("-p", p))]


class FakeRobot(threading.Thread):
    """The robot's side, scripted: streams state_out_t every ~1 ms to whoever sent the last
    pd_in_t, with a chosen radio; can lose packets (skip sequence numbers) and echo late."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.state = P.StateOut()
        self.state.radio.signalGood = True
        self.state.pelvis.orientation[:] = [1.0, 0.0, 0.0, 0.0]
        self.state.pelvis.position[:] = [0.0, 0.0, 0.8]
        self.state.motor.position[:] = STANDING
        self.state.joint.position[:] = np.arange(6) * 0.1
        # Its operator arms the bridge (start interlock): the first packets have the mode
        # switch at damping, the rest where radio() puts it.
        self.radio(estop=1.0, switch=DAMPING)
        self.arming_payload, self.arming_left = self.payload, 20
        self.radio(estop=1.0, switch=POLICY)
        self.lose_every = 0
        self.echo_lag = 0
        self.inputs: collections.deque = collections.deque(maxlen=20)
        self.received = 0
        self.non_finite_inputs = 0
        self.peer = None
        self._seen: collections.deque = collections.deque(maxlen=64)
        self._seq = 0
        self._done = threading.Event()
        self.start()

    def radio(self, estop: float = 1.0, switch: float = POLICY):
        self.state.radio.channel[8], self.state.radio.channel[9] = estop, switch
        self.payload = P.pack_state_out(self.state)

    def last_input(self) -> dict[str, np.ndarray]:
        """The last pd_in_t's motor fields (all zero before the first)."""
        if not self.inputs:
            return dict.fromkeys(("torque", "p", "d", "kp", "kd"), np.zeros(10))
        return self.inputs[-1]

    def run(self):
        sent = 0
        while not self._done.is_set():
            if select.select([self.sock], [], [], 0.001)[0]:
                while True:
                    try:
                        data, self.peer = self.sock.recvfrom(2048)
                    except BlockingIOError:
                        break
                    seq, _, payload = P.split_packet(data)
                    (torque, p, d, kp, kd), _ = P.unpack_motor_pd(payload)
                    m = {"torque": torque, "p": p, "d": d, "kp": kp, "kd": kd}
                    self.non_finite_inputs += not all(np.isfinite(v).all() for v in m.values())
                    self.inputs.append(m)
                    self._seen.append(seq)
                    self.received += 1
            if self.peer is None:
                continue
            sent += 1
            self._seq += 1 + (self.lose_every > 0 and sent % self.lose_every == 0)
            echo = self._seen[-1 - min(self.echo_lag, len(self._seen) - 1)]
            payload = self.arming_payload if self.arming_left else self.payload
            self.arming_left = max(0, self.arming_left - 1)
            self.sock.sendto(P.pack_packet(self._seq, echo, payload), self.peer)

    def close(self):
        self._done.set()
        self.join(timeout=2)
        self.sock.close()


class Probe(ProbeNode):
    """This test's rclpy node: records the bridge's outputs and publishes PD targets."""

    TOPICS = {"/cassie/joint_states": JointState, "/cassie/imu": Imu,
              "/cassie/state_estimate": Odometry, "/diagnostics": DiagnosticArray}

    def __init__(self, topics=tuple(TOPICS)):
        super().__init__("probe")
        self.received: dict[str, collections.deque] = {}
        for topic in topics:
            kind = self.TOPICS[topic]
            box = self.received[topic] = collections.deque(maxlen=200)
            self.node.create_subscription(kind, topic, lambda m, box=box: box.append(m), 100)
        self.targets = self.node.create_publisher(JointState, "/cassie/pd_targets", 10)

    def send(self, position, names=C.MOTOR_NAMES):
        msg = JointState(name=list(names))
        msg.position = [float(x) for x in position]
        self.targets.publish(msg)

    def diagnostics(self) -> tuple[int, str, dict[str, str]] | None:
        msgs = self.received["/diagnostics"]
        if not msgs:
            return None
        status = msgs[-1].status[0]
        return status.level[0], status.message, {kv.key: kv.value for kv in status.values}

    def fresh_diagnostics(self, timeout: float = 10.0, every=None):
        """The next /diagnostics message after now (a window that began after now's changes:
        skip one, since a window may straddle the change)."""
        for _ in range(2):
            self.received["/diagnostics"].clear()
            assert self.spin_until(lambda: self.received["/diagnostics"], timeout, every)
        return self.diagnostics()


@pytest.fixture
def probe(ros_env):
    p = Probe()
    yield p
    p.close()


@pytest.fixture
def robot():
    r = FakeRobot()
    yield r
    r.close()


def start_bridge(start_node, probe, robot_port: int, *params: str):
    proc = start_node(bridge_command(robot_port, *params))
    up = probe.spin_until(lambda: (probe.received["/diagnostics"]
                                   and probe.targets.get_subscription_count() > 0)
                          or proc.poll() is not None, 60.0)
    assert up and proc.poll() is None, f"hardware_bridge did not come up:\n{log_of(proc)}"
    return proc


def stop_cleanly(proc) -> str:
    os.killpg(proc.pid, signal.SIGINT)
    rc = proc.wait(timeout=15)
    log = log_of(proc)
    assert rc == 0 and "Traceback" not in log, log
    return log


# ------------------------------------------------------------------ with a scripted robot


def test_publishes_the_sim_node_topics_and_forwards_checked_targets(start_node, probe, robot):
    proc = start_bridge(start_node, probe, robot.port)
    assert probe.spin_until(lambda: all(probe.received.values()), 20.0), log_of(proc)
    js = probe.received["/cassie/joint_states"][-1]
    assert list(js.name) == list(JOINT_NAMES)
    np.testing.assert_allclose(js.position[:10], STANDING, atol=1e-6)
    np.testing.assert_allclose(js.position[10:], np.arange(6) * 0.1, atol=1e-6)
    imu = probe.received["/cassie/imu"][-1]
    # Each state's joint states and IMU share a stamp (what the policy node pairs them by).
    assert imu.header.stamp in [m.header.stamp for m in probe.received["/cassie/joint_states"]]
    assert imu.orientation.w == pytest.approx(1.0)
    assert imu.linear_acceleration.z == pytest.approx(9.81)  # at rest: +g, as the simulator's
    odom = probe.received["/cassie/state_estimate"][-1]
    assert (odom.header.frame_id, odom.child_frame_id) == ("odom", "pelvis")
    assert odom.pose.pose.position.z == pytest.approx(0.8)
    # The UDP loop's thread alone runs SCHED_FIFO, at rt_priority's default 50 (where allowed).
    fifo = sched_fifo_threads(proc.pid)
    if "rt_priority 50 refused" in log_of(proc):
        assert fifo == {}
    else:
        assert list(fifo.values()) == [50] and proc.pid not in fifo, fifo

    target = STANDING.copy()
    target[HIP_YAW] += 0.1
    assert probe.spin_until(lambda: robot.last_input()["kp"].any(), 20.0,
                            lambda: probe.send(target))
    m = robot.last_input()
    np.testing.assert_array_equal(m["p"], target.astype(np.float32))
    np.testing.assert_array_equal(m["kp"], KP32)
    np.testing.assert_array_equal(m["kd"], KD32)

    # A non-finite target is rejected and never leaves the machine: sent between valid ones,
    # the robot keeps getting the valid one.
    bad = target.copy()
    bad[3] = float("nan")
    alternate = itertools.cycle([bad, target])
    probe.spin_until(lambda: False, 0.3, lambda: probe.send(next(alternate)))
    np.testing.assert_array_equal(robot.last_input()["p"], target.astype(np.float32))
    assert robot.non_finite_inputs == 0
    # Without valid targets, the watchdog damps.
    level, message, values = probe.fresh_diagnostics()
    assert int(values["rejected_targets"]) > 0 and values["mode"] == "watchdog"
    assert int(values["watchdog_trips"]) >= 1
    m = robot.last_input()
    assert not m["kp"].any() and not m["p"].any()
    np.testing.assert_array_equal(m["kd"], KD32)
    assert "rejected: PD target has non-finite position" in log_of(proc)
    stop_cleanly(proc)


def test_estop_and_mode_switch_are_honoured(start_node, probe, robot):
    proc = start_bridge(start_node, probe, robot.port)
    target = STANDING + 0.01

    def policy():
        probe.send(target)

    def mode_is(mode: str) -> bool:
        d = probe.diagnostics()
        return d is not None and d[2]["mode"] == mode

    def damping(m) -> bool:
        return not m["kp"].any() and np.array_equal(m["kd"], KD32)

    assert probe.spin_until(lambda: mode_is("policy"), 20.0, policy), log_of(proc)
    assert np.array_equal(robot.last_input()["p"], target.astype(np.float32))
    robot.radio(estop=-1.0)
    assert probe.spin_until(lambda: mode_is("estop"), 10.0, policy)
    assert damping(robot.last_input()) and probe.diagnostics()[2]["estop"] == "true"
    robot.radio(estop=1.0, switch=POLICY)  # released: still latched while the switch is at policy
    level, _, values = probe.fresh_diagnostics(every=policy)
    assert values["mode"] == "estop" and damping(robot.last_input()) and level == 1
    robot.radio(switch=DAMPING)
    assert probe.spin_until(lambda: mode_is("damping"), 10.0, policy)
    assert damping(robot.last_input())
    robot.radio(switch=STAND)
    assert probe.spin_until(lambda: mode_is("stand"), 10.0, policy)
    m = robot.last_input()
    np.testing.assert_array_equal(m["kp"], KP32)  # measured pose = standing pose: no ramp
    np.testing.assert_allclose(m["p"], STANDING, atol=1e-6)
    robot.radio(switch=POLICY)
    assert probe.spin_until(lambda: mode_is("policy"), 10.0, policy)
    assert np.array_equal(robot.last_input()["p"], target.astype(np.float32))
    assert "mode policy -> estop" in log_of(proc)
    stop_cleanly(proc)


def test_foreign_and_wrong_length_packets_are_dropped_and_loss_and_delay_reported(
        start_node, probe, robot):
    robot.lose_every = 10  # one robot sequence number in 11 never arrives
    robot.echo_lag = 4  # the robot answers a packet 4 of ours late
    proc = start_bridge(start_node, probe, robot.port)
    assert probe.spin_until(lambda: robot.peer is not None, 20.0)
    fake = P.StateOut()
    fake.motor.position[:] = 9.0
    fake.radio.channel[8] = -1.0  # an e-stop the bridge must not obey
    foreign = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    foreign.bind(("127.0.0.1", 0))
    packet = P.pack_packet(1, 0, P.pack_state_out(fake))

    def attack():
        foreign.sendto(packet, robot.peer)  # right length, wrong source
        robot.sock.sendto(packet[:-1], robot.peer)  # right source, wrong length
        robot.sock.sendto(packet + b"\0", robot.peer)

    try:
        # A window in which this process's fake robot was starved of CPU (a loaded machine)
        # reports "no state from the robot" instead: take the next one then.
        for _ in range(5):
            level, message, values = probe.fresh_diagnostics(every=attack)
            if "no state" not in message:
                break
    finally:
        foreign.close()
    assert int(values["foreign"]) > 0 and int(values["wrong_length"]) > 0
    assert values["estop"] == "false" and values["mode"] != "estop"
    assert all(max(js.position[:10]) < 5.0 for js in probe.received["/cassie/joint_states"])
    loss = float(values["packet_loss_percent"])
    assert 100 / 11 - 3 < loss < 100 / 11 + 3, values
    assert int(values["round_trip_packets"]) >= 4
    assert float(values["round_trip_ms_median"]) > 0.0
    assert level >= 1 and "packet loss" in message
    stats = stop_cleanly(proc)
    assert re.search(r'stats \{.*"foreign": [1-9]', stats)


@pytest.mark.parametrize("param, message", [
    ("robot_address:=224.0.0.1", "robot_address: '224.0.0.1' is not allowed"),
    ("watchdog_timeout:=0.0", "watchdog_timeout"),
    ("gains:=1.0", "unknown parameter gains"),
])
def test_bad_parameters_exit_2_naming_the_parameter(ros_env, robot, param, message):
    import subprocess

    result = subprocess.run(bridge_command(robot.port, param), env=ros_env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr, result.stderr


# ------------------------------------------------------------------ with the robot emulator


def start_emulator(start_node, *args: str):
    proc = start_node([*EMULATOR, *args])
    end = time.monotonic() + 60
    while time.monotonic() < end and proc.poll() is None:
        found = re.search(r"listening on 127\.0\.0\.1:(\d+)", log_of(proc))
        if found:
            return proc, int(found.group(1))
        time.sleep(0.1)
    raise AssertionError(f"robot-sim did not come up:\n{log_of(proc)}")


def test_bridge_drives_the_emulator_in_real_time(start_node, probe):
    emulator, port = start_emulator(start_node)
    proc = start_bridge(start_node, probe, port)
    target = STANDING.copy()
    target[HIP_YAW] += 0.1

    def moved() -> bool:
        js = probe.received["/cassie/joint_states"]
        return bool(js) and js[-1].position[HIP_YAW] > STANDING[HIP_YAW] + 0.05

    assert probe.spin_until(moved, 60.0, lambda: probe.send(target)), log_of(proc)
    # The emulator's estimator (it started damping until the first target: Cassie may sit).
    odom = probe.received["/cassie/state_estimate"][-1]
    q = odom.pose.pose.orientation
    assert -0.2 < odom.pose.pose.position.z < 1.2
    assert np.linalg.norm([q.w, q.x, q.y, q.z]) == pytest.approx(1.0, abs=1e-6)
    values = probe.fresh_diagnostics(every=lambda: probe.send(target))[2]
    assert values["mode"] == "policy" and int(values["received"]) > 0
    stop_cleanly(proc)
    os.killpg(emulator.pid, signal.SIGINT)
    assert emulator.wait(timeout=15) == 0
    assert re.search(r'robot-sim stats \{.*"received": [1-9]', log_of(emulator))


def test_lockstep_repeats_the_first_state_to_each_new_reader_until_the_first_target(
        start_node, probe):
    """A policy's joint-state and IMU readers can match one by one, after other readers: each
    new reader still gets the first state (same stamp), and the robot is not stepped again."""
    emulator, port = start_emulator(start_node, "--lockstep", "--estimator-rate", "0")
    start_bridge(start_node, probe, port, "mode:=lockstep")
    first = probe.received["/cassie/joint_states"]
    assert probe.spin_until(lambda: first, 30.0)
    late = Probe(topics=("/cassie/joint_states",))
    try:
        again = late.received["/cassie/joint_states"]
        assert late.spin_until(lambda: again, 30.0), "a later reader never got the first state"
        assert again[0].header.stamp == first[0].header.stamp
        assert list(again[0].position) == list(first[0].position)
    finally:
        late.close()
    os.killpg(emulator.pid, signal.SIGINT)
    assert emulator.wait(timeout=15) == 0


# ------------------------------------------------------------------ policy node, both ways


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    # An identity normaliser: one fitted on 16 samples amplifies the two paths' one-physics-step
    # start offset into target differences of 7e-4 to 0.07 rad, depending on the draw.
    return train_tiny_policy(tmp_path_factory.mktemp("policy"), "ppo.normalizer_update=frozen")


def record_policy_run(start_node, driver: list[list[str]], policy: Path, steps: int,
                      dt: float, offset: float):
    """Start ``driver`` (processes) and the policy node; returns the PD targets this probe
    received in order with their stamps' policy steps, the joint states by their policy step k
    (stamped ``offset + k·dt``), and the processes' logs. Every message from the first step on,
    whatever the discovery order:

    * joint states: a lockstep driver repeats its first state to each new reader until the
      first target, so once this probe has heard one, it hears every later one;
    * targets: the policy node waits for two matched readers (``wait_for_readers``): the driver
      and this probe's, created only once the graph lists the node's publisher, so that this
      side matches at once and the node's wait covers the other side.
    A lockstep run can outpace this Python reader (two messages per policy step; under load),
    so its histories keep every message. Targets are kept in arrival order: their stamps are
    the node's clock, which may not have caught up with the state's.
    """
    p = Probe(topics=())
    targets, target_steps, states = [], [], {}

    def step_of(m: JointState) -> int:
        return round((m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 - offset) / dt)

    def on_target(m: JointState):
        targets.append(np.array(m.position))
        target_steps.append(step_of(m))

    def policy_publishes() -> bool:
        return any(i.node_name == "policy_node"
                   for i in p.node.get_publishers_info_by_topic("/cassie/pd_targets"))

    procs = []
    try:
        p.node.create_subscription(JointState, "/cassie/joint_states",
                                   lambda m: states.__setitem__(step_of(m), np.array(m.position)),
                                   KEEP_EVERY_MESSAGE)
        procs += [start_node(cmd) for cmd in driver]
        procs.append(start_node([sys.executable, "-m", "cassie_rl_ros.nodes.policy_node",
                                 str(policy), "--ros-args", "-p", "use_sim_time:=true",
                                 "-p", "wait_for_readers:=2"]))
        logs = lambda: "\n".join(log_of(x) for x in procs)  # noqa: E731
        assert p.spin_until(lambda: states and policy_publishes(), 120.0), logs()
        p.node.create_subscription(JointState, "/cassie/pd_targets", on_target,
                                   KEEP_EVERY_MESSAGE)
        assert p.spin_until(lambda: len(targets) > steps and len(states) > steps, 120.0), \
            logs()
    finally:
        p.close()
        for x in reversed(procs):
            os.killpg(x.pid, signal.SIGINT)
            x.wait(timeout=15)
    print(f"policy steps of the first targets heard: {target_steps[:4]}; first state "
          f"{min(states)}")
    return np.array(targets[:steps]), target_steps, states, logs()


def test_policy_node_walks_through_bridge_and_emulator_as_through_the_sim_node(
        start_node, ros_env, tiny_policy):
    """Lockstep both ways, same policy: policy node → sim node, and policy node → bridge →
    UDP → robot emulator (IMU values in state_out_t, no estimator, so both see the same
    sensors). The bridge adds one physics step of delay (its first packet) and float32 on the
    wire: the trajectories must agree closely, step by step."""
    from cassie_rl_ros.policy_runner import PolicyRunner

    steps, dt = 16, PolicyRunner.load(tiny_policy).dt
    sim_targets, sim_steps, sim_states, sim_logs = record_policy_run(
        start_node, [[sys.executable, "-m", "cassie_sim_ros.nodes.sim_node", "--ros-args",
                      "-p", "mode:=lockstep", "-p", f"policy_period:={dt}",
                      "-p", "estimator_rate:=0.0"]], tiny_policy, steps, dt, offset=0.0)
    emulator, port = start_emulator(start_node, "--lockstep", "--estimator-rate", "0")
    bridge_targets, bridge_steps, bridge_states, bridge_logs = record_policy_run(
        start_node, [bridge_command(port, "mode:=lockstep", f"policy_period:={dt}")],
        tiny_policy, steps, dt, offset=0.0005)
    os.killpg(emulator.pid, signal.SIGINT)
    assert emulator.wait(timeout=15) == 0
    # Every target the policy sent, from its first step on both paths (record_policy_run).
    for name, target_steps in (("simulator node", sim_steps), ("bridge", bridge_steps)):
        assert target_steps[0] == 0, f"{name} path: first target heard at {target_steps[:4]}"
    target_error = np.abs(bridge_targets - sim_targets).max(axis=1)
    # Per policy step k: how far the bridge's motor positions are from the simulator node's,
    # and how far the simulator node's moved in one physics step on average over that period.
    ks = [k for k in sorted(set(sim_states) & set(bridge_states)) if k - 1 in sim_states]
    assert len(ks) > steps // 2
    error = np.array([np.abs(bridge_states[k][:10] - sim_states[k][:10]).max() for k in ks])
    one_step = np.array([np.abs(sim_states[k][:10] - sim_states[k - 1][:10]).max()
                         for k in ks]) * 0.0005 / dt
    print(f"policy targets: max |difference| per step {np.round(target_error, 5)}\n"
          f"motor positions: max |difference| {np.round(error, 5)}\n"
          f"one physics step of motion {np.round(one_step, 5)}")
    # The bridge's robot starts one physics step later (its first exchange steps it), so the
    # first observations differ by 0.5 ms of settling. A wrong motor order, sign or offset is
    # off by 0.1 rad or more.
    # On failure, the logs (heading anchors, the bridge's exchanges) and both first states.
    first = min(set(sim_states) & set(bridge_states), default=None)
    assert target_error.max() < 5e-3, (
        f"first common state k={first}: simulator node {sim_states.get(first)}, bridge "
        f"{bridge_states.get(first)}\n--- simulator node path\n{sim_logs}\n--- bridge path\n"
        f"{bridge_logs}\n--- emulator\n{log_of(emulator)}")
    # (plus 0.5 mrad: at the start, from rest, one physics step of motion is almost nothing)
    assert np.all(error <= 2.0 * one_step + 5e-4), (error, one_step)
