"""``cassie-rl record``: record ROS 2 topics to a rosbag2 bag (MCAP), without a ROS install.

    cassie-rl record runs/walk1                     # all /cassie/* topics and /clock
    cassie-rl record runs/walk1 /cassie/joint_states /cassie/pd_targets --duration 30

Messages are taken from raw (still serialized) subscriptions and written unchanged with
``rosbags.rosbag2.Writer``; the bag (``metadata.yaml`` version 8 by default, readable by
``ros2 bag`` on Jazzy and Kilted) holds each topic's message definition, type hash and the QoS
profiles its publishers offered. Each message is stamped (system clock, ns) with the time its
callback ran, as ``ros2 bag record`` does.

Nothing is lost at 2 kHz: subscriptions keep a deep history (the middleware's receive threads
buffer while Python is busy), callbacks only queue the bytes, and a writer thread writes them.
SIGINT / SIGTERM (or ``--duration``) stop the recording: messages still buffered in the
subscriptions are taken (for at most 0.5 s), everything queued is written, then the bag is closed
(metadata.yaml written, MCAP summary complete).
A second SIGINT skips that drain and closes the bag at once.

Topics are discovered continuously (``get_topic_names_and_types``, every 0.25 s); a topic is
subscribed once it has a publisher, with QoS that matches every publisher (reliable only when all
of them are reliable, transient local only when all of them are).
"""

from __future__ import annotations

import argparse
import queue
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PREFIXES = ('/cassie/',)
DEFAULT_TOPICS = ('/clock',)
SUBSCRIPTION_DEPTH = 10000
"""History depth of each subscription: 5 s of a 2 kHz topic buffered while Python catches up."""
DISCOVERY_PERIOD_S = 0.25
DRAIN_LIMIT_S = 0.5
"""After a stop, the longest time spent taking the messages still buffered in subscriptions."""
_STOP = object()


class RecordError(Exception):
    """A problem that ends the recording with a message (no traceback)."""


# ----------------------------------------------------------------------------- pure helpers


def wanted(topic: str, requested: list[str]) -> bool:
    """Whether ``topic`` is recorded: listed explicitly, or the default set when none are listed."""
    if requested:
        return topic in requested
    return topic.startswith(DEFAULT_PREFIXES) or topic in DEFAULT_TOPICS


def normalize_topic(name: str) -> str:
    return name if name.startswith('/') else '/' + name


def to_rosbags_qos(profile):
    """An rclpy ``QoSProfile`` as a ``rosbags.interfaces.Qos`` (what metadata.yaml stores)."""
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness,
                                    QosReliability, QosTime)

    def duration(d) -> QosTime:
        ns = d.nanoseconds
        return QosTime(ns // 1_000_000_000, ns % 1_000_000_000)

    def enum(cls, value):
        try:
            return cls[value.name]
        except KeyError:
            return cls.UNKNOWN

    return Qos(
        history=enum(QosHistory, profile.history),
        depth=int(profile.depth),
        reliability=enum(QosReliability, profile.reliability),
        durability=enum(QosDurability, profile.durability),
        deadline=duration(profile.deadline),
        lifespan=duration(profile.lifespan),
        liveliness=enum(QosLiveliness, profile.liveliness),
        liveliness_lease_duration=duration(profile.liveliness_lease_duration),
        avoid_ros_namespace_conventions=bool(profile.avoid_ros_namespace_conventions),
    )


def subscription_qos(offered: list):
    """QoS that matches all ``offered`` publisher profiles, with a deep keep-last history."""
    from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)

    reliable = bool(offered) and all(p.reliability == ReliabilityPolicy.RELIABLE for p in offered)
    latched = bool(offered) and all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL
                                    for p in offered)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=SUBSCRIPTION_DEPTH,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


class TypeResolver:
    """Message definition and RIHS01 hash of a type, for the bag's schema records.

    Types come from rosbags' Kilted typestore; a type it lacks (a custom package) is read from
    the installed interface files (``share/<package>/msg/<Type>.msg`` under AMENT_PREFIX_PATH).
    """

    def __init__(self):
        from rosbags.typesys import Stores, get_typestore

        self.typestore = get_typestore(Stores.ROS2_KILTED)
        self.cache: dict[str, tuple[str, str]] = {}

    def _load_from_share(self, msgtype: str) -> None:
        from ament_index_python.packages import (PackageNotFoundError,
                                                 get_package_share_directory)
        from rosbags.typesys import get_types_from_msg

        pending, tries = [msgtype], 0
        while pending and tries < 64:
            tries += 1
            name = pending.pop()
            package, _, type_name = name.split('/')
            try:
                share = Path(get_package_share_directory(package))
            except (PackageNotFoundError, KeyError, ValueError) as err:
                raise RecordError(f'no definition for {name}: package {package} not found '
                                  f'({err})') from None
            path = share / 'msg' / f'{type_name}.msg'
            if not path.exists():
                raise RecordError(f'no definition for {name}: {path} does not exist')
            types = get_types_from_msg(path.read_text(), name)
            self.typestore.register(types)
            # Nested types the definition uses that the store does not know yet.
            for nested in re.findall(r"'([A-Za-z0-9_]+/msg/[A-Za-z0-9_]+)'", repr(types)):
                if nested not in self.typestore.fielddefs:
                    pending.append(nested)

    def resolve(self, msgtype: str) -> tuple[str, str]:
        """(message definition text, RIHS01 hash) of ``msgtype`` (e.g. ``sensor_msgs/msg/Imu``)."""
        if msgtype not in self.cache:
            if msgtype not in self.typestore.fielddefs:
                self._load_from_share(msgtype)
            msgdef, _ = self.typestore.generate_msgdef(msgtype, ros_version=2)
            self.cache[msgtype] = (msgdef, self.typestore.hash_rihs01(msgtype))
        return self.cache[msgtype]


# ----------------------------------------------------------------------------- bag writer


@dataclass
class BagWriterThread:
    """Owns the rosbags ``Writer``; everything reaches it through ``queue`` in arrival order."""

    path: Path
    storage: str = 'mcap'
    version: int = 8
    queue: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    counts: dict = field(default_factory=dict)
    error: BaseException | None = None

    def start(self) -> None:
        """Create the bag; raises RecordError when it cannot be created."""
        self.connections: dict[str, object] = {}
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name='bag_writer', daemon=True)
        self.thread.start()
        self.ready.wait()
        if self.error is not None:
            self.thread.join()
            raise RecordError(f'cannot create the bag {self.path}: {self.error}')

    def add_topic(self, topic: str, msgtype: str, msgdef: str, rihs01: str, qos: list) -> None:
        self.queue.put(('topic', topic, msgtype, msgdef, rihs01, qos))

    def _run(self) -> None:
        # Everything touching the writer runs in this thread (sqlite3 insists on it).
        from rosbags.rosbag2 import StoragePlugin, Writer

        try:
            plugin = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}[self.storage]
            writer = Writer(self.path, version=self.version, storage_plugin=plugin)
            writer.open()
        except Exception as err:
            self.error = err
            self.ready.set()
            return
        self.ready.set()
        get, connections, counts = self.queue.get, self.connections, self.counts
        write = writer.write
        while True:
            item = get()
            if item is _STOP:
                break
            if self.error is not None:
                continue  # keep emptying the queue so nothing blocks
            try:
                if len(item) == 3:
                    topic, stamp, data = item
                    write(connections[topic], stamp, data)
                    counts[topic] += 1
                else:
                    _, topic, msgtype, msgdef, rihs01, qos = item
                    connections[topic] = writer.add_connection(
                        topic, msgtype, msgdef=msgdef, rihs01=rihs01, offered_qos_profiles=qos)
                    counts[topic] = 0
            except Exception as err:  # disk full, ...: reported by close()
                self.error = err
        try:
            writer.close()
        except Exception as err:
            self.error = self.error or err

    def close(self) -> None:
        """Write what is queued, then close the bag (metadata.yaml, MCAP summary)."""
        self.queue.put(_STOP)
        self.thread.join()
        if self.error is not None:
            raise RecordError(f'writing {self.path} failed: {self.error!r}')


# ----------------------------------------------------------------------------- ROS side


class _StopRequest:
    """Set by a signal handler or the duration timer; a second signal asks to skip the drain."""

    def __init__(self):
        self.stop_ns: int | None = None
        self.hurry = False
        self.reason = ''

    def request(self, reason: str) -> None:
        if self.stop_ns is None:
            self.stop_ns = time.time_ns()
            self.reason = reason
        else:
            self.hurry = True


def _make_node(requested: list[str], bag: BagWriterThread, stop: _StopRequest, context,
               with_info: bool):
    from rclpy.node import Node

    class Recorder(Node):
        def __init__(self):
            super().__init__('cassie_recorder', context=context)
            self.requested = requested
            self.subscribed: dict[str, object] = {}
            self.skipped: set[str] = set()
            self.types = TypeResolver()
            self.taken = 0
            self.late = 0
            self.with_info = with_info
            self.discover()
            self.create_timer(DISCOVERY_PERIOD_S, self.discover)

        def discover(self) -> None:
            if stop.stop_ns is not None:
                return
            for topic, types in self.get_topic_names_and_types():
                if topic in self.subscribed or topic in self.skipped or not wanted(
                        topic, self.requested):
                    continue
                publishers = self.get_publishers_info_by_topic(topic)
                if not publishers:
                    continue  # only subscribers so far: wait for a publisher and its QoS
                if len(types) > 1:
                    self.get_logger().warning(f'{topic} has several types {types}; '
                                              f'recording {types[0]}')
                self.subscribe(topic, types[0], [p.qos_profile for p in publishers],
                               str(publishers[0].topic_type_hash))

        def subscribe(self, topic: str, ros_type: str, offered: list, their_hash: str) -> None:
            try:
                msgtype = ros_type if ros_type.count('/') == 2 else ros_type.replace('/', '/msg/')
                msgdef, rihs01 = self.types.resolve(msgtype)
                msg_class = _import_type(ros_type)
            except Exception as err:
                self.skipped.add(topic)
                self.get_logger().error(f'not recording {topic} ({ros_type}): {err}')
                return
            if their_hash.startswith('RIHS01_') and their_hash != rihs01:
                self.get_logger().warning(
                    f'{topic}: the publisher\'s {msgtype} (type hash {their_hash}) differs from '
                    f'the definition stored in the bag ({rihs01}); recording it anyway')
            bag.add_topic(topic, msgtype, msgdef, rihs01, [to_rosbags_qos(p) for p in offered])
            put = bag.queue.put

            if self.with_info:
                def on_message(data, info, topic=topic):
                    stamp = info['received_timestamp'] or time.time_ns()
                    if stop.stop_ns is not None and stamp > stop.stop_ns:
                        self.late += 1  # received after the stop: not part of the recording
                        return
                    self.taken += 1
                    put((topic, stamp, data))
            else:
                def on_message(data, topic=topic):
                    self.taken += 1
                    put((topic, time.time_ns(), data))

            self.subscribed[topic] = self.create_subscription(
                msg_class, topic, on_message, subscription_qos(offered), raw=True)
            self.get_logger().info(f'recording {topic} ({msgtype})')

    return Recorder()


def _import_type(ros_type: str):
    """The Python class of ``pkg/msg/Name`` (what rosidl_runtime_py's get_message does)."""
    import importlib

    package, namespace, name = ros_type.split('/')
    return getattr(importlib.import_module(f'{package}.{namespace}'), name)


def _make_executor(context):
    """(executor, whether callbacks get the middleware's receive time).

    The C++ events executor costs a fraction of ``SingleThreadedExecutor`` per message (it keeps
    six 2 kHz topics on one core, where the other drops messages), but in rclpy 9 it fails on
    callbacks that take a MessageInfo, so with it messages are stamped when the callback runs.
    ``CASSIE_RECORD_EXECUTOR=single`` picks the standard executor and the receive times.
    """
    import os

    if os.environ.get('CASSIE_RECORD_EXECUTOR', 'events') != 'single':
        try:
            from rclpy.experimental import EventsExecutor

            return EventsExecutor(context=context), False
        except ImportError:
            pass
    from rclpy.executors import SingleThreadedExecutor

    return SingleThreadedExecutor(context=context), True


def record(out_dir: Path, topics: list[str], duration: float | None, storage: str = 'mcap',
           version: int = 8, ros_args: list[str] | None = None, log=print) -> dict[str, int]:
    """Record until SIGINT/SIGTERM or ``duration`` seconds; returns messages written per topic."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    if out_dir.exists():
        raise RecordError(f'{out_dir} exists already; give a new directory for the bag')
    stop = _StopRequest()

    def on_signal(signum, _frame):
        if stop.stop_ns is not None:
            log('second signal: closing the bag now (messages still buffered in the '
                'subscriptions are dropped)')
        stop.request(signal.Signals(signum).name)

    # Handlers first: the bag folder appears while the writer starts, and a Ctrl-C from then on
    # must close it cleanly.
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    bag = BagWriterThread(out_dir, storage=storage, version=version)
    bag.start()
    context = rclpy.Context()
    try:
        node = executor = None
        try:
            try:
                rclpy.init(args=['record', *(ros_args or [])], context=context,
                           signal_handler_options=SignalHandlerOptions.NO)
            except Exception as err:  # bad --ros-args, ...
                raise RecordError(f'cannot start ROS: {err}') from None
            executor, with_info = _make_executor(context)
            node = _make_node(topics, bag, stop, context, with_info)
            executor.add_node(node)
            started = time.monotonic()
            while stop.stop_ns is None:
                executor.spin_once(timeout_sec=0.1)
                if duration is not None and time.monotonic() - started >= duration:
                    stop.request('duration')
            # Take what the middleware received before the stop (buffered in the subscriptions).
            drain_until = time.monotonic() + DRAIN_LIMIT_S
            while not stop.hurry and time.monotonic() < drain_until:
                before = node.taken + node.late
                executor.spin_once(timeout_sec=0.05)
                if node.taken + node.late == before:
                    break
            missing = [t for t in topics if t not in node.subscribed]
            if missing:
                log(f'warning: never saw a publisher on {", ".join(missing)}: not recorded')
        finally:
            if node is not None:
                node.destroy_node()
            if executor is not None:
                try:
                    executor.shutdown(timeout_sec=1.0)
                except Exception:
                    pass
            context.try_shutdown()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        bag.close()
    return dict(bag.counts)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ros_args: list[str] = []
    if '--ros-args' in argv:
        i = argv.index('--ros-args')
        argv, ros_args = argv[:i], argv[i:]
    parser = argparse.ArgumentParser(
        prog='cassie-rl record',
        description='Record ROS 2 topics to a rosbag2 bag (MCAP storage) until Ctrl-C. Without '
        'topics: every /cassie/* topic and /clock, including ones that appear later.')
    parser.add_argument('out_dir', type=Path, help='bag directory to create (must not exist)')
    parser.add_argument('topics', nargs='*',
                        help='topics to record (default: /cassie/* and /clock)')
    parser.add_argument('--duration', type=float, default=None, metavar='S',
                        help='stop after S seconds (default: run until Ctrl-C)')
    parser.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap',
                        help='storage plugin of the bag (default: mcap)')
    parser.add_argument('--bag-version', type=int, choices=(8, 9), default=8,
                        help='metadata.yaml version: 8 (Jazzy; Kilted reads it too, default) '
                        'or 9 (Kilted)')
    args = parser.parse_args(argv)
    if args.duration is not None and not args.duration > 0:
        parser.error('--duration must be > 0')
    topics = [normalize_topic(t) for t in args.topics]

    def log(text: str) -> None:
        print(f'record: {text}', file=sys.stderr, flush=True)

    try:
        counts = record(args.out_dir, topics, args.duration, storage=args.storage,
                        version=args.bag_version, ros_args=ros_args, log=log)
    except RecordError as err:
        log(f'error: {err}')
        return 1
    total = sum(counts.values())
    log(f'wrote {total} messages on {len(counts)} topics to {args.out_dir}')
    for topic, n in sorted(counts.items()):
        log(f'  {topic}: {n}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
