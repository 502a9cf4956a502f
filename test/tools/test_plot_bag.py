"""plot_bag without a ROS graph: synthetic bags written with rosbags, read back and plotted.

The series the figures plot must equal the messages in the bag, whatever the storage (MCAP,
sqlite3) and metadata version (8: Jazzy, 9: Kilted); Fast DDS's padded CDR must decode; missing
topics are named; damaged bags give one clear line and exit code 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('matplotlib')

from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: E402
from rosbags.serde import SerdeError  # noqa: E402

from cassie_rl_ros.tools import plot_bag  # noqa: E402
from cassie_sim_ros import constants as C  # noqa: E402

START_NS = 1_700_000_000_000_000_000
N = 20
PERIOD_NS = 10_000_000
JOINTS = list(C.PASSIVE_JOINT_NAMES[:3]) + list(reversed(C.MOTOR_NAMES)) + list(
    C.PASSIVE_JOINT_NAMES[3:])
PLUGINS = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}
# JointState(name=['a'], position=[1.0]) as Fast DDS's rmw_serialize (rclpy's serialize_message)
# returns it: its size estimate reserves alignment for the empty velocity and effort arrays, so the
# buffer runs 8 bytes past the last field (uninitialised memory there; zeros here).
FASTDDS_JOINT_STATE = bytes.fromhex(
    '00010000' '0000000000000000' '01000000' '00000000' '01000000' '02000000' '61000000'
    '01000000' '000000000000f03f' '00000000' '00000000' '0000000000000000')


def types():
    ts = plot_bag.typestore()
    return ts, ts.types


def pad8(raw: bytes) -> bytes:
    """What Fast DDS does: pad the serialized message to a multiple of 8 bytes."""
    return raw + bytes(-len(raw) % 8)


def header(T, k: int, frame: str = 'world'):
    t = START_NS + k * PERIOD_NS
    return T['std_msgs/msg/Header'](
        stamp=T['builtin_interfaces/msg/Time'](sec=t // 10**9, nanosec=t % 10**9), frame_id=frame)


def vec(T, x, y, z):
    return T['geometry_msgs/msg/Vector3'](x=float(x), y=float(y), z=float(z))


def synthetic_messages(topics=None):
    """(topic, msgtype, [(t_ns, raw)]) for a 20-step run, plus the values that went in."""
    ts, T = types()
    rng = np.random.default_rng(0)
    truth = {
        'motor_position': rng.normal(size=(N, 10)), 'motor_torque': rng.normal(size=(N, 10)) * 20,
        'pd_target_position': rng.normal(size=(N, 10)), 'policy_action': rng.normal(size=(N, 10)),
        'pelvis_height': 1.0 + 0.01 * rng.normal(size=N), 'forward_speed': rng.normal(size=N),
        'commanded_speed': np.array([0.0, 0.5, 1.0]),
        'foot_force_left': rng.normal(size=(N, 3)) * 100,
        'foot_force_right': rng.normal(size=(N, 3)) * 100,
        'foot_height_left': rng.uniform(size=N) * 0.1,
        'foot_height_right': rng.uniform(size=N) * 0.1,
    }
    out = {}

    def add(topic, msgtype, k, msg, pad=False):
        raw = bytes(ts.serialize_cdr(msg, msgtype))
        out.setdefault(topic, (msgtype, []))[1].append(
            (START_NS + k * PERIOD_NS + 1000, pad8(raw) if pad else raw))

    motor_index = [C.MOTOR_NAMES.index(n) if n in C.MOTOR_NAMES else None for n in JOINTS]
    for k in range(N):
        pos = np.array([truth['motor_position'][k, i] if i is not None else 9.0
                        for i in motor_index])
        eff = np.array([truth['motor_torque'][k, i] if i is not None else 0.0
                        for i in motor_index])
        js = T['sensor_msgs/msg/JointState']
        add('/cassie/joint_states', 'sensor_msgs/msg/JointState', k, js(
            header=header(T, k), name=JOINTS, position=pos, velocity=np.zeros(16), effort=eff))
        # PD targets the way a policy sends them: no velocity or effort, Fast DDS padding.
        add('/cassie/pd_targets', 'sensor_msgs/msg/JointState', k, js(
            header=header(T, k, 'policy'), name=list(C.MOTOR_NAMES),
            position=truth['pd_target_position'][k], velocity=np.zeros(0), effort=np.zeros(0)),
            pad=True)
        add('/cassie/policy_action', 'std_msgs/msg/Float64MultiArray', k,
            T['std_msgs/msg/Float64MultiArray'](
                layout=T['std_msgs/msg/MultiArrayLayout'](dim=[], data_offset=0),
                data=truth['policy_action'][k]))
        pose = T['geometry_msgs/msg/PoseWithCovariance'](
            pose=T['geometry_msgs/msg/Pose'](
                position=T['geometry_msgs/msg/Point'](x=0.0, y=0.0, z=truth['pelvis_height'][k]),
                orientation=T['geometry_msgs/msg/Quaternion'](x=0.0, y=0.0, z=0.0, w=1.0)),
            covariance=np.zeros(36))
        twist = T['geometry_msgs/msg/TwistWithCovariance'](
            twist=T['geometry_msgs/msg/Twist'](linear=vec(T, truth['forward_speed'][k], 0, 0),
                                               angular=vec(T, 0, 0, 0)),
            covariance=np.zeros(36))
        add('/cassie/ground_truth', 'nav_msgs/msg/Odometry', k, T['nav_msgs/msg/Odometry'](
            header=header(T, k), child_frame_id='pelvis', pose=pose, twist=twist))
        for side in C.SIDES:
            f = truth[f'foot_force_{side}'][k]
            add(f'/cassie/foot_forces/{side}', 'geometry_msgs/msg/WrenchStamped', k,
                T['geometry_msgs/msg/WrenchStamped'](
                    header=header(T, k), wrench=T['geometry_msgs/msg/Wrench'](
                        force=vec(T, *f), torque=vec(T, 0, 0, 0))))
            add(f'/cassie/foot_positions/{side}', 'geometry_msgs/msg/PointStamped', k,
                T['geometry_msgs/msg/PointStamped'](
                    header=header(T, k), point=T['geometry_msgs/msg/Point'](
                        x=0.0, y=0.0, z=truth[f'foot_height_{side}'][k])))
    for k, v in zip((0, 7, 14), truth['commanded_speed']):
        add('/cassie/cmd_vel', 'geometry_msgs/msg/Twist', k,
            T['geometry_msgs/msg/Twist'](linear=vec(T, v, 0, 0), angular=vec(T, 0, 0, 0)))
    if topics is not None:
        out = {t: v for t, v in out.items() if t in topics}
    return out, truth


def write_bag(path: Path, messages, storage='mcap', version=8) -> Path:
    ts, _ = types()
    with Writer(path, version=version, storage_plugin=PLUGINS[storage]) as writer:
        for topic, (msgtype, items) in messages.items():
            conn = writer.add_connection(topic, msgtype, typestore=ts)
            for t, raw in items:
                writer.write(conn, t, raw)
    return path


@pytest.fixture(scope='module')
def full_bag(tmp_path_factory):
    messages, truth = synthetic_messages()
    return write_bag(tmp_path_factory.mktemp('bags') / 'full', messages), truth


def test_plotted_series_equal_the_messages(full_bag):
    path, truth = full_bag
    s = plot_bag.extract_series(path)
    for name, values in truth.items():
        np.testing.assert_array_equal(s[name].values, values, err_msg=name)
    # Time axis: receive time since the first message of the bag (which is at START_NS + 1 us).
    np.testing.assert_allclose(s['motor_position'].t, np.arange(N) * PERIOD_NS * 1e-9, atol=1e-9)
    np.testing.assert_allclose(s['commanded_speed'].t, np.array([0, 7, 14]) * 0.01, atol=1e-9)
    np.testing.assert_allclose(s['motor_position'].stamp,
                               (START_NS + np.arange(N) * PERIOD_NS) * 1e-9)
    assert np.isnan(s['policy_action'].stamp).all()  # Float64MultiArray has no header
    assert s['pelvis_height'].topic == '/cassie/ground_truth'


@pytest.mark.parametrize('storage,version', [('mcap', 9), ('sqlite3', 8), ('sqlite3', 9)])
def test_storages_and_metadata_versions_read_the_same(full_bag, tmp_path, storage, version):
    path, _ = full_bag
    ref = plot_bag.extract_series(path)
    messages, _ = synthetic_messages()
    other = plot_bag.extract_series(write_bag(tmp_path / 'bag', messages, storage, version))
    assert other.keys() == ref.keys()
    for name in ref:
        np.testing.assert_array_equal(other[name].values, ref[name].values, err_msg=name)
        np.testing.assert_array_equal(other[name].t, ref[name].t, err_msg=name)
    # A bare storage file (no metadata.yaml) reads too.
    bare = next(p for p in (tmp_path / 'bag').iterdir() if p.suffix in ('.mcap', '.db3'))
    np.testing.assert_array_equal(plot_bag.extract_series(bare)['policy_action'].values,
                                  ref['policy_action'].values)


def test_fast_dds_padding_is_accepted():
    ts, _ = types()
    with pytest.raises(SerdeError, match='size mismatch'):
        ts.deserialize_cdr(FASTDDS_JOINT_STATE, 'sensor_msgs/msg/JointState')
    msg = plot_bag.deserialize(FASTDDS_JOINT_STATE, 'sensor_msgs/msg/JointState')
    assert list(msg.name) == ['a'] and msg.position.tolist() == [1.0]
    assert len(msg.velocity) == len(msg.effort) == 0
    with pytest.raises(SerdeError):  # too short: a field runs past the end
        plot_bag.deserialize(FASTDDS_JOINT_STATE[:30], 'sensor_msgs/msg/JointState')
    try:  # the same from rmw_fastrtps itself, where rclpy is installed
        from rclpy.serialization import serialize_message
        from sensor_msgs.msg import JointState
    except ImportError:
        pass
    else:
        raw = serialize_message(JointState(name=list(C.MOTOR_NAMES), position=[0.5] * 10))
        with pytest.raises(SerdeError, match='size mismatch'):
            ts.deserialize_cdr(raw, 'sensor_msgs/msg/JointState')
        msg = plot_bag.deserialize(raw, 'sensor_msgs/msg/JointState')
        assert list(msg.name) == list(C.MOTOR_NAMES) and msg.position.tolist() == [0.5] * 10
    with pytest.raises(SerdeError, match='encapsulation'):
        plot_bag.deserialize(b'\x07\x07\x00\x00' + FASTDDS_JOINT_STATE[4:],
                             'sensor_msgs/msg/JointState')


def test_start_and_end_crop_on_the_recording_time_axis(full_bag):
    path, truth = full_bag
    s = plot_bag.extract_series(path, start=0.05, end=0.1)
    t = s['motor_position'].t
    assert t.min() >= 0.05 and t.max() <= 0.1 + 1e-9 and len(t) == 6
    np.testing.assert_array_equal(s['motor_position'].values, truth['motor_position'][5:11])


def test_all_five_figures_from_a_full_bag(full_bag, tmp_path, capsys):
    path, _ = full_bag
    out = tmp_path / 'plots'
    assert plot_bag.main([str(path), '--out', str(out), '--format', 'pdf']) == 0
    printed = capsys.readouterr()
    for name in plot_bag.PLOTS:
        assert (out / f'{name}.pdf').stat().st_size > 5000
        assert str(out / f'{name}.pdf') in printed.out
    assert printed.err == ''  # nothing missing


def test_missing_topics_are_named_and_the_rest_is_plotted(tmp_path, capsys):
    messages, _ = synthetic_messages(topics={'/cassie/joint_states'})
    path = write_bag(tmp_path / 'only_joints', messages)
    assert plot_bag.main([str(path)]) == 0
    err = capsys.readouterr().err
    out = tmp_path / 'only_joints_plots'  # default: next to the bag
    assert sorted(p.name for p in out.iterdir()) == ['motor_torques.png', 'pd_targets.png']
    assert 'state: not plotted' in err and '/cassie/ground_truth' in err
    assert 'ground_reaction_forces: not plotted' in err and '/cassie/foot_forces/left' in err
    assert 'policy_actions: not plotted' in err and '/cassie/policy_action' in err
    assert 'pd_targets: plotted without /cassie/pd_targets' in err


def test_a_bag_with_nothing_to_plot_is_an_error(tmp_path, capsys):
    ts, T = types()
    with Writer(tmp_path / 'other', version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection('/chatter', 'std_msgs/msg/String', typestore=ts)
        writer.write(conn, START_NS, ts.serialize_cdr(T['std_msgs/msg/String'](data='hi'),
                                                      'std_msgs/msg/String'))
    assert plot_bag.main([str(tmp_path / 'other')]) == 1
    err = capsys.readouterr().err
    assert 'nothing to plot' in err and '/chatter' in err
    assert not (tmp_path / 'other_plots').exists()


def _damage(kind: str, bag: Path) -> Path:
    storage = next(p for p in bag.iterdir() if p.suffix in ('.mcap', '.db3'))
    data = storage.read_bytes()
    if kind == 'truncated':
        storage.write_bytes(data[: len(data) // 2])
    elif kind == 'garbage':
        storage.write_bytes(bytes(range(256)) * 40)
    elif kind == 'zeroed_middle':
        storage.write_bytes(data[:200] + bytes(len(data) - 400) + data[-200:])
    elif kind == 'no_storage_file':
        storage.unlink()
    elif kind == 'bad_metadata':
        (bag / 'metadata.yaml').write_text('rosbag2_bagfile_information: [1, 2\n')
    elif kind == 'wrong_metadata':
        (bag / 'metadata.yaml').write_text('rosbag2_bagfile_information: {version: 8}\n')
    elif kind == 'no_metadata':
        (bag / 'metadata.yaml').unlink()
    return bag


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
@pytest.mark.parametrize('kind', ['truncated', 'garbage', 'zeroed_middle', 'no_storage_file',
                                  'bad_metadata', 'wrong_metadata', 'no_metadata'])
def test_damaged_bags_give_a_clear_error(tmp_path, capsys, storage, kind):
    messages, _ = synthetic_messages(topics={'/cassie/joint_states', '/cassie/policy_action'})
    bag = _damage(kind, write_bag(tmp_path / 'bag', messages, storage))
    assert plot_bag.main([str(bag), '--out', str(tmp_path / 'plots')]) == 1
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('plot_bag: error: '), err
    assert not (tmp_path / 'plots').exists()


def test_a_corrupt_message_names_its_topic(tmp_path, capsys):
    messages, _ = synthetic_messages(topics={'/cassie/policy_action'})
    msgtype, items = messages['/cassie/policy_action']
    items[3] = (items[3][0], items[3][1][:20])  # cut inside the data array
    bag = write_bag(tmp_path / 'bag', messages)
    assert plot_bag.main([str(bag)]) == 1
    err = capsys.readouterr().err
    assert '/cassie/policy_action' in err and 'cannot be decoded' in err


def test_missing_bag_and_bad_arguments(tmp_path, capsys):
    assert plot_bag.main([str(tmp_path / 'nope')]) == 1
    assert 'does not exist' in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        plot_bag.main([str(tmp_path), '--start', '2', '--end', '1'])
    assert exit_info.value.code == 2


def test_recorder_helpers():
    pytest.importorskip('rclpy')
    from rclpy.qos import (DurabilityPolicy, QoSProfile, ReliabilityPolicy)
    from rosbags.interfaces import QosDurability, QosReliability

    from cassie_rl_ros.tools import record

    assert record.wanted('/cassie/imu', []) and record.wanted('/clock', [])
    assert not record.wanted('/rosout', []) and not record.wanted('/cassie/imu', ['/clock'])
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL)
    best_effort = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
    assert record.subscription_qos([reliable]).reliability == ReliabilityPolicy.RELIABLE
    assert record.subscription_qos([reliable]).durability == DurabilityPolicy.TRANSIENT_LOCAL
    mixed = record.subscription_qos([reliable, best_effort])
    assert mixed.reliability == ReliabilityPolicy.BEST_EFFORT
    assert mixed.durability == DurabilityPolicy.VOLATILE
    assert mixed.depth == record.SUBSCRIPTION_DEPTH
    q = record.to_rosbags_qos(reliable)
    assert q.reliability == QosReliability.RELIABLE
    assert q.durability == QosDurability.TRANSIENT_LOCAL and q.depth == 10
    msgdef, rihs01 = record.TypeResolver().resolve('sensor_msgs/msg/JointState')
    assert 'float64[] effort' in msgdef and rihs01.startswith('RIHS01_')


@pytest.mark.parametrize('storage,version', [('mcap', 8), ('sqlite3', 9)])
def test_recorder_writes_a_bag_that_plot_bag_reads(tmp_path, storage, version):
    """The writer thread end to end, without ROS: queued messages land in a valid bag."""
    messages, truth = synthetic_messages(topics={'/cassie/policy_action', '/cassie/joint_states'})
    pytest.importorskip('rclpy')
    from cassie_rl_ros.tools import record

    resolver = record.TypeResolver()
    bag = record.BagWriterThread(tmp_path / 'bag', storage=storage, version=version)
    bag.start()
    for topic, (msgtype, items) in messages.items():
        bag.add_topic(topic, msgtype, *resolver.resolve(msgtype), [])
    for topic, (msgtype, items) in messages.items():
        for t, raw in items:
            bag.queue.put((topic, t, raw))
    bag.close()
    assert bag.counts == {t: N for t in messages}
    s = plot_bag.extract_series(tmp_path / 'bag')
    np.testing.assert_array_equal(s['policy_action'].values, truth['policy_action'])
    np.testing.assert_array_equal(s['motor_position'].values, truth['motor_position'])
    meta = (tmp_path / 'bag' / 'metadata.yaml').read_text()
    assert f'version: {version}' in meta and f'storage_identifier: {storage}' in meta
