"""Record a simulated run over real Fast DDS with ``cassie-rl record``, then plot it.

The simulator node (lockstep mode) and the recorder run in subprocesses; this test is the policy:
it publishes PD targets (pre-serialized by Fast DDS with empty velocity and effort: the buffer
has bytes past the last field, which rosbags' strict deserializer refuses), raw policy
actions and speed commands, and listens to the simulator's joint states and ground truth. What the
plotter extracts from the bag must equal, value for value, what was published and received.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')
pytest.importorskip('matplotlib')

from geometry_msgs.msg import Twist  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.serialization import serialize_message  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from cassie_rl_ros.tools import plot_bag  # noqa: E402
from cassie_sim_ros import constants as C  # noqa: E402
from ros_probe import ProbeNode, log_of  # noqa: E402  (test/ is on sys.path: conftest.py)

SIM = [sys.executable, '-m', 'cassie_sim_ros.nodes.sim_node', '--ros-args', '-p', 'mode:=lockstep']
RECORD = [sys.executable, '-m', 'cassie_rl_ros.tools.record']
WARMUP_STEPS = 5  # before these the recorder's readers may still be matching the simulator's
STEPS = 40
SIM_TOPICS = ['/cassie/joint_states', '/cassie/imu', '/cassie/ground_truth',
              '/cassie/foot_forces/left', '/cassie/foot_forces/right', '/clock']
OUR_TOPICS = ['/cassie/pd_targets', '/cassie/policy_action', '/cassie/cmd_vel']
SHUFFLED = [C.MOTOR_NAMES[i] for i in (7, 2, 9, 0, 4, 1, 8, 3, 6, 5)]


def stamp(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


class Policy(ProbeNode):
    """This test's node: a stand-in policy that publishes what the plots show."""

    def __init__(self):
        super().__init__('test_policy')
        self.states: list[JointState] = []
        self.truth: list[Odometry] = []
        self.node.create_subscription(JointState, '/cassie/joint_states', self.states.append, 100)
        self.node.create_subscription(Odometry, '/cassie/ground_truth', self.truth.append, 100)
        self.targets = self.node.create_publisher(JointState, '/cassie/pd_targets', 10)
        self.actions = self.node.create_publisher(Float64MultiArray, '/cassie/policy_action', 10)
        self.cmd = self.node.create_publisher(Twist, '/cassie/cmd_vel', 10)


def copy_bag(src: Path, dst: Path, storage: str, version: int) -> None:
    """Rewrite a bag with another storage plugin / metadata version, messages untouched."""
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer

    plugin = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}[storage]
    with Reader(src) as reader, Writer(dst, version=version, storage_plugin=plugin) as writer:
        conns = {c.id: writer.add_connection(c.topic, c.msgtype, msgdef=c.msgdef.data,
                                             rihs01=c.digest,
                                             offered_qos_profiles=c.ext.offered_qos_profiles)
                 for c in reader.connections}
        for conn, t, raw in reader.messages():
            writer.write(conns[conn.id], t, raw)


def test_record_a_simulated_run_and_plot_it(start_node, tmp_path, capsys):
    sim = start_node(SIM)
    policy = Policy()
    try:
        # The simulator's first observation goes out once someone listens.
        assert policy.spin_until(lambda: policy.states and policy.targets.get_subscription_count()
                                 or sim.poll() is not None, 30.0), log_of(sim)
        assert sim.poll() is None, log_of(sim)

        bag = tmp_path / 'run'
        recorder = start_node(RECORD + [str(bag)])
        # It subscribes to a topic once the topic has a publisher: the simulator's and ours.
        expected = [f'recording {t} ' for t in SIM_TOPICS + OUR_TOPICS]
        ready = policy.spin_until(
            lambda: all(e in log_of(recorder) for e in expected) and
            policy.targets.get_subscription_count() >= 2 and
            policy.actions.get_subscription_count() >= 1 and
            policy.cmd.get_subscription_count() >= 1 or recorder.poll() is not None, 30.0)
        assert ready and recorder.poll() is None, log_of(recorder)
        # ... and its readers are known on the graph (so the simulator is matching them too).
        def recorder_listens(topic):
            return any(info.node_name == 'cassie_recorder'
                       for info in policy.node.get_subscriptions_info_by_topic(topic))
        assert policy.spin_until(lambda: all(map(recorder_listens, SIM_TOPICS)), 30.0)

        actions, targets, commands = [], [], []
        for k in range(WARMUP_STEPS + STEPS):
            if k in (0, WARMUP_STEPS + STEPS // 2):
                commands.append(0.0 if k == 0 else 0.5)
                cmd = Twist()
                cmd.linear.x = commands[-1]
                policy.cmd.publish(cmd)
            action = 0.5 * np.sin(0.3 * k + np.arange(10))
            actions.append(action)
            policy.actions.publish(Float64MultiArray(data=action.tolist()))
            target = C.NEUTRAL_MOTOR_OFFSET + 0.1 * action
            targets.append(target)
            order = [C.MOTOR_NAMES.index(n) for n in SHUFFLED]
            # Positions only, serialized by Fast DDS (rmw_serialize) and sent as bytes: with
            # empty velocity and effort its buffer runs 8 bytes past the last field.
            policy.targets.publish(serialize_message(
                JointState(name=SHUFFLED, position=target[order].tolist())))
            # Lockstep: the simulator answers each target with the next state.
            n = len(policy.states)
            assert policy.spin_until(lambda: len(policy.states) > n, 10.0), log_of(sim)
        warm_stamp = stamp(policy.states[-STEPS])
        assert policy.spin_until(lambda: len(policy.truth) >= len(policy.states), 5.0)
        time.sleep(0.3)  # the recorder's share: anything still buffered is drained on SIGINT

        os.killpg(recorder.pid, signal.SIGINT)
        assert recorder.wait(timeout=20) == 0, log_of(recorder)
    finally:
        policy.close()
    assert 'wrote ' in log_of(recorder)
    assert (bag / 'metadata.yaml').exists()

    # The recorded PD targets are Fast DDS's bytes, trailing bytes included, which rosbags' own
    # strict deserializer refuses (and the simulator accepted); the plotter reads them.
    from rosbags.rosbag2 import Reader
    from rosbags.serde import SerdeError
    with Reader(bag) as reader:
        conn = next(c for c in reader.connections if c.topic == '/cassie/pd_targets')
        raw = next(raw for _, _, raw in reader.messages([conn]))
    with pytest.raises(SerdeError, match='size mismatch'):
        plot_bag.typestore().deserialize_cdr(raw, conn.msgtype)

    s = plot_bag.extract_series(bag)
    # What the policy published: every message, in order, values unchanged.
    np.testing.assert_array_equal(s['policy_action'].values, np.array(actions))
    np.testing.assert_array_equal(s['pd_target_position'].values, np.array(targets))
    assert s['commanded_speed'].values.tolist() == commands

    # What the simulator published: the recorded joint states are the ones this test received.
    received = {stamp(m): m for m in policy.states}
    js = s['motor_position']
    # Each state once, except the initial one: until the first target the simulator re-sends
    # it (same stamp) whenever a new reader of a state topic appears, and the recorder's
    # readers can match one by one.
    later = js.stamp[js.stamp > js.stamp.min()]
    assert len(np.unique(later)) == len(later)
    after_warmup = [t for t in received if t >= warm_stamp]
    assert len(after_warmup) == STEPS
    assert set(after_warmup) <= set(js.stamp.tolist()), 'the recorder lost joint states'
    # The recorder may also hold the very last state, published after this test stopped
    # listening; every state both saw must be identical.
    both = [(i, t) for i, t in enumerate(js.stamp) if t in received]
    assert len(both) >= STEPS
    for i, t in both:
        msg = received[t]
        index = [list(msg.name).index(n) for n in C.MOTOR_NAMES]
        np.testing.assert_array_equal(js.values[i], np.array(msg.position)[index])
        np.testing.assert_array_equal(s['motor_torque'].values[i], np.array(msg.effort)[index])
    truth = {stamp(m): m for m in policy.truth}
    height = s['pelvis_height']
    assert height.topic == '/cassie/ground_truth'
    assert set(after_warmup) <= set(height.stamp.tolist())
    # (the last recorded one, too, may have come after this test stopped listening)
    seen = [(t, z, v) for t, z, v in zip(height.stamp, height.values, s['forward_speed'].values)
            if t in truth]
    assert len(seen) >= STEPS
    for t, z, v in seen:
        assert z == truth[t].pose.pose.position.z and v == truth[t].twist.twist.linear.x
    for side in C.SIDES:
        assert set(after_warmup) <= set(s[f'foot_force_{side}'].stamp.tolist())
    assert np.all(np.diff(js.t) >= 0) and js.t[0] >= 0

    # The five figures.
    out = tmp_path / 'plots'
    capsys.readouterr()
    assert plot_bag.main([str(bag), '--out', str(out)]) == 0
    err = capsys.readouterr().err
    for name in plot_bag.PLOTS:
        assert (out / f'{name}.png').stat().st_size > 10_000, name
    assert 'foot_positions' not in err  # the simulator publishes foot positions
    for side in C.SIDES:  # soles stay near the ground; the left one is the left one
        assert 0.0 <= s[f'foot_height_{side}'].values.min() < 0.3

    # The same run as a sqlite3 bag with Kilted-era (version 9) metadata reads the same.
    sq = tmp_path / 'run_sqlite3'
    copy_bag(bag, sq, 'sqlite3', 9)
    s2 = plot_bag.extract_series(sq)
    assert s2.keys() == s.keys()
    for name in s:
        np.testing.assert_array_equal(s2[name].values, s[name].values, err_msg=name)
        np.testing.assert_array_equal(s2[name].t, s[name].t, err_msg=name)

    # A truncated copy of the recording: a clear error, no traceback, exit code 1.
    cut = tmp_path / 'run_truncated'
    shutil.copytree(bag, cut)
    mcap = next(cut.glob('*.mcap'))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    capsys.readouterr()
    assert plot_bag.main([str(cut), '--out', str(tmp_path / 'cut_plots')]) == 1
    err = capsys.readouterr().err
    assert 'cannot read bag' in err and 'Traceback' not in err


def test_recorder_cli_closes_a_valid_bag_on_sigint_without_publishers(start_node, tmp_path):
    """Nothing to record: SIGINT still leaves a bag that reads (empty) and exit code 0."""
    bag = tmp_path / 'empty'
    rec = start_node(RECORD + [str(bag), '/cassie/nothing_here'])
    deadline = time.monotonic() + 20
    while not bag.exists():
        assert time.monotonic() < deadline and rec.poll() is None, log_of(rec)
        time.sleep(0.05)
    os.killpg(rec.pid, signal.SIGINT)
    assert rec.wait(timeout=20) == 0, log_of(rec)
    assert 'never saw a publisher on /cassie/nothing_here' in log_of(rec)
    assert plot_bag.read_bag(bag).topics == {}


def test_recorder_refuses_an_existing_directory(tmp_path, ros_env):
    (tmp_path / 'exists').mkdir()
    proc = subprocess.run(RECORD + [str(tmp_path / 'exists')], env=ros_env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1
    assert 'exists already' in proc.stderr and 'Traceback' not in proc.stderr
