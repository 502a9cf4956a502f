"""sim_node over real Fast DDS: the node runs in a subprocess, this test talks to it as a policy.

Each test gets its own ROS_DOMAIN_ID (``ros_env`` in test/conftest.py), so tests never see each
other's nodes. Rates are checked only against generous bounds: they are behaviour, not benchmarks.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import PointStamped, Vector3, Wrench, WrenchStamped  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import Imu, JointState  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from cassie_sim_ros import constants as C  # noqa: E402
from cassie_sim_ros.sim_server import JOINT_NAMES  # noqa: E402
from ros_probe import ProbeNode, log_of, sched_fifo_threads  # noqa: E402  (conftest: sys.path)

ROOT = Path(__file__).resolve().parents[2]
NODE = [sys.executable, "-m", "cassie_sim_ros.nodes.sim_node", "--ros-args"]
HIP_YAW = C.MOTOR_NAMES.index("left_hip_yaw")
KD = C.DEFAULT_KD
OUTPUTS = {
    "/cassie/joint_states": JointState,
    "/cassie/imu": Imu,
    "/cassie/ground_truth": Odometry,
    "/cassie/foot_forces/left": WrenchStamped,
    "/cassie/foot_forces/right": WrenchStamped,
    "/cassie/foot_positions/left": PointStamped,
    "/cassie/foot_positions/right": PointStamped,
    "/cassie/state_estimate": Odometry,
    "/clock": Clock,
}


def stamp(msg) -> float:
    s = msg.clock if isinstance(msg, Clock) else msg.header.stamp
    return s.sec + s.nanosec * 1e-9


class Probe(ProbeNode):
    """This test's own rclpy node: records the simulator's outputs and sends it inputs."""

    def __init__(self):
        super().__init__("probe")
        self.received: dict[str, list] = {}
        # Python handles a few thousand messages a second at best: listen only to what a test
        # needs, or the probe (not the node) becomes the bottleneck.
        self.listen("/cassie/joint_states")
        self.targets = self.node.create_publisher(JointState, "/cassie/pd_targets", 10)
        self.pushes = self.node.create_publisher(Wrench, "/cassie/push", 10)
        self.reset = self.node.create_client(Trigger, "/cassie/reset")

    def listen(self, *topics: str):
        for topic in topics:
            self.received[topic] = []
            self.node.create_subscription(OUTPUTS[topic], topic, self.received[topic].append, 100)

    @property
    def states(self) -> list[JointState]:
        return self.received["/cassie/joint_states"]

    def clear(self):
        for msgs in self.received.values():
            msgs.clear()

    def wait_for_sim(self, proc, timeout: float = 30.0):
        """Until the node publishes state and hears our targets."""
        ok = self.spin_until(lambda: (all(self.received.values())
                                      and self.targets.get_subscription_count() > 0
                                      and self.pushes.get_subscription_count() > 0)
                             or proc.poll() is not None, timeout)
        assert ok and proc.poll() is None, f"sim_node did not come up:\n{log_of(proc)}"

    def send(self, names=C.MOTOR_NAMES, position=(), velocity=(), effort=()):
        msg = JointState(name=list(names))
        msg.position = [float(x) for x in position]
        msg.velocity = [float(x) for x in velocity]
        msg.effort = [float(x) for x in effort]
        self.targets.publish(msg)

    def call_reset(self, settle: bool = True):
        """Call /cassie/reset; with ``settle``, drop what was sent before it."""
        assert self.reset.wait_for_service(timeout_sec=5.0)
        future = self.reset.call_async(Trigger.Request())
        assert self.spin_until(future.done, 10.0)
        assert future.result().success, future.result().message
        if not settle:
            return
        self.spin_for(0.1)  # let what was sent before the reset arrive
        self.clear()
        self.spin_until(lambda: self.states, 5.0)


@pytest.fixture
def probe(ros_env):
    p = Probe()
    yield p
    p.close()


def stop_cleanly(proc):
    """SIGINT, as Ctrl-C would: the node must exit 0 without a traceback."""
    os.killpg(proc.pid, signal.SIGINT)
    rc = proc.wait(timeout=15)
    log = log_of(proc)
    assert rc == 0, log
    assert "Traceback" not in log, log


def motors(msg: JointState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.array(msg.position[:10]), np.array(msg.velocity[:10]), np.array(msg.effort[:10]))


def damping_residual(msg: JointState) -> float:
    """max |τ + kd·q̇| over the motors: about 0 in damping mode (P = 0), large under PD load."""
    _, qd, tau = motors(msg)
    return float(np.max(np.abs(tau + KD * qd)))


# ------------------------------------------------------------------ tests


def test_topics_types_rates_and_clean_shutdown(start_node, probe):
    # Fast actuators: half the CPU of the faithful pipeline, so the rate holds on a busy machine.
    proc = start_node(NODE + ["-p", "actuator:=fast"])
    probe.wait_for_sim(proc)
    def endpoints(topic: str, direction: str) -> list[str]:
        """Types the sim node offers (publishers) or takes (subscriptions) on ``topic``."""
        get = getattr(probe.node, f"get_{direction}_info_by_topic")
        return [e.topic_type for e in get(topic) if e.node_name == "sim_node"]

    expected = [(topic, "publishers", f"{t.__module__.split('.')[0]}/msg/{t.__name__}")
                for topic, t in OUTPUTS.items()]
    expected += [("/cassie/pd_targets", "subscriptions", "sensor_msgs/msg/JointState"),
                 ("/cassie/push", "subscriptions", "geometry_msgs/msg/Wrench")]
    # Discovery of the whole graph takes a moment.
    probe.spin_until(lambda: all(endpoints(t, d) for t, d, _ in expected), 10.0)
    for topic, direction, type_name in expected:
        assert endpoints(topic, direction) == [type_name], (topic, endpoints(topic, direction))
    assert probe.reset.wait_for_service(timeout_sec=5.0)

    probe.spin_for(0.5)
    probe.clear()
    start = time.monotonic()
    probe.spin_for(2.0)
    rate = len(probe.states) / (time.monotonic() - start)
    assert 100 < rate < 800, (rate, log_of(proc))  # 400 nominal; generous on a busy machine
    stamps = np.array([stamp(m) for m in probe.states])
    assert np.median(np.diff(stamps)) == pytest.approx(0.0025, abs=1e-6)  # 400 Hz of sim time

    probe.listen(*[topic for topic in OUTPUTS if topic != "/cassie/joint_states"])
    probe.spin_for(0.5)
    probe.clear()
    probe.spin_for(1.0)
    for topic, msgs in probe.received.items():
        assert len(msgs) > 50, (topic, len(msgs))  # each at the state rate, give or take
    clock = np.array([stamp(m) for m in probe.received["/clock"]])
    assert np.all(np.diff(clock) > 0)

    js = probe.states[-1]
    assert tuple(js.name) == JOINT_NAMES
    assert len(js.position) == len(js.velocity) == len(js.effort) == 16
    imu = probe.received["/cassie/imu"][-1]
    q = imu.orientation
    assert imu.header.frame_id == "imu"
    assert math.isclose(q.w ** 2 + q.x ** 2 + q.y ** 2 + q.z ** 2, 1.0, rel_tol=1e-6)
    assert imu.angular_velocity_covariance[0] > 0 and imu.linear_acceleration_covariance[8] > 0
    odom = probe.received["/cassie/ground_truth"][-1]
    assert (odom.header.frame_id, odom.child_frame_id) == ("world", "pelvis")
    assert 0.0 < odom.pose.pose.position.z < 1.1  # standing or fallen: no policy here
    feet = [probe.received[f"/cassie/foot_forces/{side}"][-1] for side in C.SIDES]
    assert all(f.header.frame_id == "world" for f in feet)
    soles = [probe.received[f"/cassie/foot_positions/{side}"][-1] for side in C.SIDES]
    assert soles[0].point.y > soles[1].point.y  # left is +y
    estimates = probe.received["/cassie/state_estimate"]
    assert (estimates[-1].header.frame_id, estimates[-1].child_frame_id) == ("odom", "pelvis")
    # The estimator's tilt follows the true pelvis tilt (its accuracy is measured in
    # bench/estimator.py; here: it runs in the node and its output is the pelvis's).
    def up_axis(q):  # pelvis z axis in the world, from a ROS quaternion
        return np.array([2 * (q.x * q.z + q.w * q.y), 2 * (q.y * q.z - q.w * q.x),
                         1 - 2 * (q.x ** 2 + q.y ** 2)])

    truth = {stamp(m): up_axis(m.pose.pose.orientation)
             for m in probe.received["/cassie/ground_truth"]}
    tilt_errors = [np.degrees(np.arccos(np.clip(up_axis(e.pose.pose.orientation)
                                                @ truth[stamp(e)], -1, 1)))
                   for e in estimates if stamp(e) in truth]
    assert len(tilt_errors) > 50
    assert np.median(tilt_errors) < 3.0, np.median(tilt_errors)

    stop_cleanly(proc)


def test_pd_target_moves_a_motor_and_the_watchdog_damps_and_releases(start_node, probe):
    proc = start_node(NODE + ["-p", "actuator:=fast"])  # exact PD: damping shows as τ = -kd·q̇
    probe.wait_for_sim(proc)
    probe.call_reset()  # on its feet again (it slumps while nobody commands it)
    q0 = motors(probe.states[-1])[0]
    target = q0.copy()
    target[HIP_YAW] += 0.15

    probe.spin_for(0.5, every=lambda: probe.send(position=target), period=0.025)  # 40 Hz policy
    moved = motors(probe.states[-1])[0][HIP_YAW] - q0[HIP_YAW]
    assert moved > 0.1, moved
    under_pd = [damping_residual(m) for m in probe.states[-40:]]  # carrying its weight
    stopped_at = stamp(probe.states[-1])

    probe.spin_for(0.6)  # the policy goes quiet
    damped = [damping_residual(m) for m in probe.states if stamp(m) > stopped_at + 0.25]
    assert len(damped) > 20
    assert np.median(under_pd) > 2.0, under_pd
    assert np.median(damped) < 0.5, damped  # (impacts while it slumps give a few spikes)
    # Once after the policy went quiet, and it stays there. (A loaded machine can stall this
    # probe's 40 Hz sender past the timeout before that: the node is right to damp then too.)
    engaged = [float(t) for t in re.findall(r"t = ([\d.]+) s\): damping mode", log_of(proc))]
    assert len([t for t in engaged if t > stopped_at]) == 1, (engaged, stopped_at)

    # A new target, the other way: only a driver back under PD control gets the hip there
    # (near it: the slumped robot's contacts load the hip, seen 0.08 rad off in a CI run).
    target[HIP_YAW] = q0[HIP_YAW] - 0.15
    probe.spin_for(0.5, every=lambda: probe.send(position=target), period=0.025)
    assert "control resumed" in log_of(proc)
    assert np.median([damping_residual(m) for m in probe.states[-40:]]) > 2.0  # P acts again
    assert abs(motors(probe.states[-1])[0][HIP_YAW] - target[HIP_YAW]) < 0.1


def test_rt_priority_puts_the_physics_thread_on_sched_fifo_or_says_why_not(start_node, probe):
    proc = start_node(NODE + ["-p", "actuator:=fast", "-p", "rt_priority:=10"])
    probe.wait_for_sim(proc)
    fifo = sched_fifo_threads(proc.pid)
    if "rt_priority 10 refused" in log_of(proc):  # no right to it here: a warning, and it runs
        assert fifo == {}
        assert len(probe.states) > 10
    else:  # the main thread only (its id is the process id): not rclpy's or DDS's threads
        assert fifo == {proc.pid: 10}
    stop_cleanly(proc)


def test_bad_targets_are_rejected_and_the_node_keeps_publishing(start_node, probe):
    proc = start_node(NODE + ["-p", "actuator:=fast"])
    probe.wait_for_sim(proc)
    q0 = motors(probe.states[-1])[0]
    bad = q0.copy()
    bad[HIP_YAW] += 0.2  # what a bad message would ask of the hip if it got through
    names = list(C.MOTOR_NAMES)
    nan = bad.copy()
    nan[3] = float("nan")
    far = bad.copy()
    far[HIP_YAW] = 2.0
    malformed = [
        dict(position=nan),  # NaN
        dict(position=bad, effort=[float("inf")] + [0.0] * 9),  # inf
        dict(names=names[:2] + ["left_hip_pich"] + names[3:], position=bad),  # unknown name
        dict(names=names[:-1], position=bad[:-1]),  # missing motor
        dict(position=bad[:5]),  # lengths that do not match
        dict(position=far),  # out of range
        dict(position=bad, effort=[0.0] * 4 + [500.0] + [0.0] * 5),  # over the torque limit
        dict(names=[], position=[]),  # empty
    ]
    cycle = iter(malformed * 100)
    probe.clear()
    probe.spin_for(1.5, every=lambda: probe.send(**next(cycle)), period=0.01)
    sim_time = stamp(probe.states[-1]) - stamp(probe.states[0])
    assert len(probe.states) > 150 and sim_time > 0.5, (len(probe.states), sim_time)
    hip = np.array([motors(m)[0][HIP_YAW] for m in probe.states])
    assert np.max(np.abs(hip - q0[HIP_YAW])) < 0.05  # none of it reached the motor
    log = log_of(proc)
    # The first of each kind is logged at once (later ones of a kind are throttled).
    for reason in ("non-finite position for left_knee", "unknown motor names 'left_hip_pich'",
                   "lacks motors right_foot", "5 position values for 10 names",
                   "2 rad for left_hip_yaw is outside", "500 N·m for left_foot exceeds ±45.14"):
        assert reason in log, reason
    assert "suppressed" in log  # throttled, not one line per message
    assert log.count("rejected:") < 60
    assert "damping mode" not in log  # the watchdog is not armed by rejected targets

    probe.spin_for(0.4, every=lambda: probe.send(position=bad), period=0.025)
    assert motors(probe.states[-1])[0][HIP_YAW] - q0[HIP_YAW] > 0.1  # still obeys good ones
    assert proc.poll() is None


def test_push_and_reset_service(start_node, probe):
    proc = start_node(NODE + ["-p", "actuator:=fast", "-p", "push_duration:=0.3"])
    probe.listen("/cassie/ground_truth")
    probe.wait_for_sim(proc)
    start = probe.received["/cassie/ground_truth"][-1].pose.pose.position
    probe.pushes.publish(Wrench(force=Vector3(y=400.0)))  # 120 N·s sideways
    probe.spin_for(0.6)
    pushed = probe.received["/cassie/ground_truth"][-1].pose.pose.position
    assert pushed.y - start.y > 0.2
    probe.clear()
    probe.spin_for(0.1)

    def standing_again():
        return any(abs(p.x) < 0.01 and abs(p.y) < 0.01
                   and abs(p.z - C.STANDING_PELVIS_HEIGHT) < 0.02
                   for p in (m.pose.pose.position for m in probe.received["/cassie/ground_truth"]))

    assert not standing_again()  # pushed over
    probe.call_reset(settle=False)
    assert probe.spin_until(standing_again, 5.0)
    assert "reset to the standing keyframe" in log_of(proc)


def lockstep_run(start_node, probe, steps: int) -> tuple[np.ndarray, list[str]]:
    proc = start_node(NODE + ["-p", "mode:=lockstep", "-p", "sensor_noise:=true",
                              "-p", "seed:=3"])
    if "/cassie/ground_truth" not in probe.received:
        probe.listen("/cassie/ground_truth")
    probe.wait_for_sim(proc)  # the first state goes out once we listen
    q0 = motors(probe.states[0])[0]
    for k in range(1, steps + 1):
        target = q0 + 0.1 * np.sin(0.2 * k + np.arange(10))
        probe.send(position=target, velocity=np.zeros(10), effort=np.zeros(10))
        assert probe.spin_until(lambda: stamp(probe.states[-1]) > (k - 0.5) * 0.025, 10.0), \
            f"no state after target {k}:\n{log_of(proc)}"
    probe.spin_for(0.3)  # no targets, no simulated time
    stop_cleanly(proc)
    # The initial state may come more than once (once per new reader), always the same.
    rows = unique_by_stamp([[stamp(m), *m.position, *m.velocity, *m.effort]
                            for m in probe.states])
    truth = unique_by_stamp([[stamp(m), m.pose.pose.position.z, m.twist.twist.linear.x]
                             for m in probe.received["/cassie/ground_truth"]])
    probe.clear()
    return rows, truth


def unique_by_stamp(rows: list[list[float]]) -> np.ndarray:
    rows = np.array(rows)
    first = {}
    for row in rows:
        if row[0] in first:
            np.testing.assert_array_equal(row, first[row[0]])  # a repeat is an exact repeat
        first.setdefault(row[0], row)
    return np.array([first[t] for t in sorted(first)])


def test_lockstep_same_seed_and_targets_give_bit_identical_states(start_node, probe):
    steps = 30
    first, first_truth = lockstep_run(start_node, probe, steps)
    second, second_truth = lockstep_run(start_node, probe, steps)
    assert first.shape == (steps + 1, 1 + 48)  # the initial state, then one per target
    np.testing.assert_array_equal(first[:, 0], np.arange(steps + 1) * 0.025)
    np.testing.assert_array_equal(first, second)
    assert first_truth.shape == (steps + 1, 3)
    np.testing.assert_array_equal(first_truth, second_truth)
    assert np.ptp(first[:, 1 + HIP_YAW]) > 0.01  # it moved


@pytest.mark.parametrize("param,message", [
    ("mode:=fast", "mode: 'fast' is not one of the allowed values 'realtime', 'lockstep'"),
    ("publish_rate:=300.0", "publish_rate: 300.0 is not allowed"),
    ("kp:=[1.0, 2.0]", "kp: "),
])
def test_bad_parameter_values_exit_non_zero_naming_the_parameter(ros_env, param, message):
    cmd = [sys.executable, "-m", "cassie_rl_ros.tools.cli", "sim", "--ros-args", "-p", param]
    result = subprocess.run(cmd, env=ros_env, capture_output=True, text=True, timeout=60,
                            cwd=ROOT)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
