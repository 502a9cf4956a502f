"""``hardware_bridge``: the simulator node's topics on the real Cassie, over its PD-mode UDP link.

    ros2 run cassie_rl_ros hardware_bridge                       # the lab's robot
    cassie-rl robot-sim &                                        # or the emulator ...
    cassie-rl bridge --ros-args -p robot_address:=127.0.0.1 -p robot_port:=25000 \\
        -p local_address:=127.0.0.1                             # ... on 127.0.0.1:25000

A thin shell over ``cassie_rl_ros.bridge.core.BridgeCore`` (modes, safety, counters). A
dedicated thread runs the UDP link: in ``realtime`` mode it sends one ``pd_in_t`` every 0.5 ms
of wall time (``select`` with a timeout until each deadline, receiving the robot's 2 kHz
``state_out_t`` stream meanwhile) and publishes every ``2000 / publish_rate``-th new state; in
``lockstep`` mode (with ``cassie-rl robot-sim --lockstep``) it answers each PD target with one
policy period of packets, each waiting for the robot's reply, then publishes, as the simulator
node's lockstep mode does. The ROS executor runs in a second thread; the main thread only waits
for Ctrl-C or SIGTERM.

Publishes what the simulator node publishes, from the robot's estimator (no ground truth):
``cassie/joint_states`` (10 motors + shin, tarsus, foot crank per leg), ``cassie/imu``,
``cassie/state_estimate`` (nav_msgs/Odometry, twist in the pelvis frame), plus ``/diagnostics``
(diagnostic_msgs/DiagnosticArray, every ``diagnostics_period``: mode, e-stop, packet loss,
round trip, loop jitter, dropped packets) and, in lockstep only, ``/clock`` (robot time).
Subscribes ``cassie/pd_targets`` (sensor_msgs/JointState by motor name). Parameters: the fields
of ``BridgeConfig``. On exit it logs ``stats {json}``.
"""

from __future__ import annotations

import gc
import json
import queue
import select
import socket
import sys
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Imu, JointState

from cassie_rl_ros.bridge.core import LOOP_PERIOD, PARAMETERS, BridgeConfig, BridgeCore, RobotState
from cassie_sim_ros.config import ConfigError, from_dict
from cassie_sim_ros.nodes.driver_messages import BUILTIN_PARAMETERS, QOS_DEPTH, DriverMessages
from cassie_sim_ros.nodes.node_main import (command_line, realtime_thread,
                                            reject_plain_arguments, ros_session, spinning)
from cassie_sim_ros.sim_server import PdCommand, Throttle

REPLY_TIMEOUT = 0.5
"""lockstep: seconds to wait for the robot's answer to one packet."""
MAX_LAG = 0.05
"""realtime: when the loop is this far behind (s), restart the schedule instead of bursting."""
SWITCH_INTERVAL = 0.0001
"""s: how long a thread may hold the GIL while another waits for it (Python's default: 5 ms)."""


class HardwareBridge(Node):
    def __init__(self):
        super().__init__("hardware_bridge", automatically_declare_parameters_from_overrides=True)
        unknown = [n for n in self.get_parameters_by_prefix("") if n not in PARAMETERS
                   and n not in BUILTIN_PARAMETERS and not n.startswith("qos_overrides.")]
        if unknown:
            raise ConfigError(f"unknown parameter {unknown[0]}; parameters are "
                              f"{', '.join(PARAMETERS)}")
        params = {}
        for name in PARAMETERS:
            if not self.has_parameter(name):
                default = getattr(BridgeConfig, name)
                self.declare_parameter(name, list(default) if isinstance(default, tuple)
                                       else default)
            value = self.get_parameter(name).value
            params[name] = value if isinstance(value, (str, bool, int, float)) else list(value)
        self.core = BridgeCore(from_dict(BridgeConfig, params))  # ConfigError names the param
        self.config = cfg = self.core.config
        self.lockstep = cfg.mode == "lockstep"
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind(cfg.local)
        except OSError as err:
            self.sock.close()
            raise ConfigError(f"local_address/local_port: cannot bind {cfg.local_address}:"
                              f"{cfg.local_port}: {err.strerror} (the emulator needs "
                              "local_address:=127.0.0.1)") from None
        self.sock.setblocking(False)
        self.inbox: queue.Queue = queue.Queue()
        self.stop = threading.Event()
        self.throttle = Throttle(1.0)
        self.overruns = 0
        self.robot_time = 0.0

        pub = self.create_publisher
        self.joint_pub = pub(JointState, "cassie/joint_states", QOS_DEPTH)
        self.imu_pub = pub(Imu, "cassie/imu", QOS_DEPTH)
        self.odom_pub = pub(Odometry, "cassie/state_estimate", QOS_DEPTH)
        self.diag_pub = pub(DiagnosticArray, "/diagnostics", QOS_DEPTH)
        self.clock_pub = pub(Clock, "/clock", QOS_DEPTH) if self.lockstep else None
        self.make_messages()
        self.create_subscription(JointState, "cassie/pd_targets", self.on_target, QOS_DEPTH)
        self.create_timer(cfg.diagnostics_period, self.on_diagnostics)
        address, port = self.sock.getsockname()
        self.get_logger().info(
            f"{cfg.mode} link {address}:{port} <-> robot {cfg.robot_address}:{cfg.robot_port}; "
            f"radio e-stop channel {cfg.estop_channel}, mode switch channel {cfg.mode_channel}")

    # ------------------------------------------------------------ ROS side (executor thread)

    def on_target(self, msg: JointState):
        try:
            cmd = self.core.parse_target(msg.name, msg.position, msg.velocity, msg.effort)
        except Exception as err:  # never die on a message
            cmd = None
            self.log_rejection("malformed", f"PD target could not be read: {err!r}")
        if isinstance(cmd, PdCommand):
            if self.lockstep:
                self.inbox.put(cmd)
            else:
                self.core.set_target(cmd, time.monotonic())
        elif cmd is not None:
            self.log_rejection(cmd.kind, cmd.message)

    def log_rejection(self, kind: str, message: str):
        held = self.throttle(kind)
        if held is not None:
            more = f" ({held} more like it suppressed)" if held else ""
            self.get_logger().error(f"rejected: {message}{more}")

    def on_diagnostics(self):
        log = self.get_logger()
        while self.core.events:
            level, message = self.core.events.popleft()
            if level:  # (rclpy wants one severity per call site)
                log.warning(message)
            else:
                log.info(message)
        level, message, values = self.core.diagnostics(
            self.robot_time if self.lockstep else time.monotonic())
        status = DiagnosticStatus(level=bytes([level]), name="hardware_bridge: Cassie link",
                                  message=message,
                                  hardware_id=f"cassie@{self.config.robot_address}:"
                                              f"{self.config.robot_port}")
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)

    # ------------------------------------------------------------ UDP side (link thread)

    def drain(self, now: float) -> int:
        """Read every waiting datagram; returns how many were new valid states."""
        fresh = 0
        while True:
            try:
                data, source = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return fresh
            except ConnectionRefusedError:  # ICMP for an earlier send: the robot is not up
                continue
            except OSError as err:  # anything else must not end the loop (and the damping)
                if self.throttle("receive") is not None:
                    self.get_logger().error(f"cannot receive from the robot: {err.strerror}")
                return fresh
            fresh += self.core.receive(data, source, now)

    def send(self, now: float, damp: bool = False):
        try:
            self.sock.sendto(self.core.packet(now, damp), self.config.robot)
        except OSError as err:
            if self.throttle("send") is not None:
                self.get_logger().error(f"cannot send to the robot: {err.strerror}")

    def run_realtime(self):
        every = round(1.0 / (self.config.publish_rate * LOOP_PERIOD))
        fresh = 0
        next_due = time.monotonic()
        while not self.stop.is_set():
            while (wait := next_due - time.monotonic()) > 0:
                if select.select([self.sock], [], [], wait)[0]:
                    fresh += self.drain(time.monotonic())
            now = time.monotonic()
            fresh += self.drain(now)
            self.send(now)
            if fresh >= every:
                fresh = 0
                self.publish(self.core.snapshot(self.get_clock().now().nanoseconds * 1e-9))
            next_due += LOOP_PERIOD
            if now - next_due > MAX_LAG:
                self.overruns += 1
                next_due = now + LOOP_PERIOD

    def exchange(self) -> bool:
        """lockstep: one packet and the robot's answer (one physics step)."""
        self.send(self.robot_time)
        end = time.monotonic() + REPLY_TIMEOUT
        while (wait := end - time.monotonic()) > 0:
            if select.select([self.sock], [], [], wait)[0] and self.drain(
                    self.robot_time + LOOP_PERIOD):
                self.robot_time += LOOP_PERIOD
                return True
        if self.throttle("reply") is not None:
            self.get_logger().error(f"no answer from the robot within {REPLY_TIMEOUT:g} s "
                                    "(is `cassie-rl robot-sim --lockstep` running?)")
        return False

    def run_lockstep(self):
        steps = round(self.config.policy_period / LOOP_PERIOD)
        # Until the first target, the first observation (one exchange) goes out again whenever
        # a new reader of joint states or IMU appears, as the simulator node does: a policy
        # whose two subscriptions match one by one still gets both halves of it (same stamp;
        # it acts once per stamp).
        initial, readers, started = None, (0, 0), False
        while not self.stop.is_set():
            try:
                cmd = self.inbox.get(timeout=0.05)
            except queue.Empty:
                if not started:
                    now = (self.joint_pub.get_subscription_count(),
                           self.imu_pub.get_subscription_count())
                    if min(now) > 0 and any(n > seen for n, seen in zip(now, readers)):
                        if initial is None and self.exchange():
                            initial = self.core.snapshot(self.robot_time)
                        if initial is None:
                            continue  # no answer from the robot: ask again next time round
                        self.publish(initial)
                    readers = now
                continue
            self.core.set_target(cmd, self.robot_time)
            # A lost answer is asked for again: a period cut short would publish no state, and
            # the policy waits for one (lockstep both ways).
            done = 0
            while done < steps and not self.stop.is_set():
                done += self.exchange()
            if done == steps:
                self.publish(self.core.snapshot(self.robot_time))
                started = True

    def run_link(self):
        refused = realtime_thread(self.config.rt_priority)
        if refused:
            self.get_logger().warning(f"{refused} for the UDP loop")
        from rclpy._rclpy_pybind11 import InvalidHandle

        try:
            self.run_lockstep() if self.lockstep else self.run_realtime()
        except InvalidHandle:
            # Ctrl-C took ROS down under the loop (its publishers are gone): the loop ends here
            # and the damping packet below still goes out. Anything else is a real error.
            if self.context.ok() and not self.stop.is_set():
                raise
        finally:
            # Leave the robot damping, whatever the mode (it zeroes the input 100 ms later).
            self.core.clear_target()
            self.send(self.robot_time if self.lockstep else time.monotonic(), damp=True)

    # ------------------------------------------------------------ messages

    def make_messages(self):
        """The outgoing messages, built once: each publish only fills in the numbers."""
        self.messages = DriverMessages(odometry_frame="odom")  # the robot's estimator, as sim_node

    def publish(self, s: RobotState):
        m = self.messages
        m.fill(s)
        if self.clock_pub is not None:
            self.clock_pub.publish(m.clock)
        self.joint_pub.publish(m.joint_states)
        self.imu_pub.publish(m.imu)
        self.odom_pub.publish(m.odometry)

    def stats(self) -> dict:
        return {**self.core.totals(), "overruns": self.overruns}


def main(args: list[str] | None = None) -> int:
    """Run the node; ``args`` is the argument list without the program name (default: sys.argv)."""
    argv = command_line(args)
    code = reject_plain_arguments("hardware_bridge", argv, BridgeConfig)
    if code is not None:
        return code
    with ros_session("hardware_bridge", argv):
        try:
            node = HardwareBridge()
        except ConfigError as err:
            print(f"hardware_bridge: bad parameter: {err}", file=sys.stderr)
            return 2
        # Everything built so far is long-lived: keep the collector from walking it
        # (shorter pauses in the 2 kHz loop).
        gc.freeze()
        # The UDP thread must get the GIL back within its 0.5 ms period when the executor
        # thread runs Python code: hand it over every 0.1 ms instead of every 5 ms.
        sys.setswitchinterval(SWITCH_INTERVAL)
        # The UDP loop and the executor each get a thread; the main thread only waits, so
        # Ctrl-C lands here and never inside rclpy's message handling.
        link = threading.Thread(target=node.run_link, name="cassie-udp", daemon=True)
        try:
            with spinning(node) as spinner:
                link.start()
                try:
                    while link.is_alive() and spinner.is_alive():
                        link.join(timeout=0.2)
                finally:
                    node.stop.set()
                    link.join(timeout=2.0)
                    node.get_logger().info(f"stats {json.dumps(node.stats())}")
        finally:
            # Last, and only once the UDP thread is out of it (it sends the damping packet).
            if link.is_alive():
                link.join(timeout=2.0)
            if not link.is_alive():
                node.sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
