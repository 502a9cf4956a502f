"""``sim_node``: Cassie in MuJoCo on the topics a real-robot driver would use.

    python -m cassie_sim_ros.nodes.sim_node --ros-args --params-file config/sim.yaml \
        -p mode:=lockstep
    cassie-rl sim --ros-args -p publish_rate:=1000.0

A thin shell over ``cassie_sim_ros.sim_server.SimServer``. The physics runs in the main thread
(paced to the wall clock in ``realtime`` mode, driven by targets in ``lockstep`` mode); an
executor thread receives messages, checks them and queues them, so only the main thread ever
touches the simulation. Topics, parameters and safety rules are listed in the README.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from dataclasses import fields

from geometry_msgs.msg import PointStamped, Wrench, WrenchStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Imu, JointState
from std_srvs.srv import Trigger

from cassie_sim_ros import constants as C
from cassie_sim_ros.config import ConfigError, from_dict
from cassie_sim_ros.nodes.driver_messages import (BUILTIN_PARAMETERS, QOS_DEPTH, DriverMessages,
                                                  set_quaternion, set_stamp, set_vector)
from cassie_sim_ros.nodes.node_main import (command_line, reject_plain_arguments, ros_session,
                                            realtime_thread, spinning)
from cassie_sim_ros.sim_server import (Event, PdCommand, RealtimePacer, Rejection, SimNodeConfig,
                                       SimServer, StateSnapshot, Throttle, quat_rotate_inverse)

LOG_EVERY_S = 5.0


class SimNode(Node):
    def __init__(self):
        # Overrides are declared as given (so `-p publish_rate:=400`, an int, is fine and a
        # misspelt name is caught below); SimNodeConfig checks every type and value.
        super().__init__("sim_node", automatically_declare_parameters_from_overrides=True)
        names = [f.name for f in fields(SimNodeConfig)]
        unknown = [n for n in self.get_parameters_by_prefix("") if n not in names
                   and n not in BUILTIN_PARAMETERS and not n.startswith("qos_overrides.")]
        if unknown:
            raise ConfigError(f"unknown parameter {unknown[0]}; parameters are {', '.join(names)}")
        params = {}
        for name in names:
            if not self.has_parameter(name):
                default = getattr(SimNodeConfig, name)
                default = list(default) if isinstance(default, tuple) else default
                self.declare_parameter(name, default)
            value = self.get_parameter(name).value
            params[name] = value if isinstance(value, (str, bool, int, float)) else list(value)
        self.server = SimServer(from_dict(SimNodeConfig, params))  # ConfigError names the param
        self.config = self.server.config
        self.inbox: queue.Queue = queue.Queue()
        self.throttle = Throttle(1.0)
        self.counts = {"accepted_targets": 0, "rejected_targets": 0}
        pub = self.create_publisher
        self.joint_pub = pub(JointState, "cassie/joint_states", QOS_DEPTH)
        self.imu_pub = pub(Imu, "cassie/imu", QOS_DEPTH)
        self.truth_pub = pub(Odometry, "cassie/ground_truth", QOS_DEPTH)
        self.foot_pubs = [pub(WrenchStamped, f"cassie/foot_forces/{side}", QOS_DEPTH)
                          for side in C.SIDES]
        self.foot_position_pubs = [pub(PointStamped, f"cassie/foot_positions/{side}", QOS_DEPTH)
                                   for side in C.SIDES]
        self.estimate_pub = (pub(Odometry, "cassie/state_estimate", QOS_DEPTH)
                             if self.server.estimator is not None else None)
        self.clock_pub = pub(Clock, "/clock", QOS_DEPTH)
        self.make_messages()
        self.create_subscription(JointState, "cassie/pd_targets", self.on_target, QOS_DEPTH)
        self.create_subscription(Wrench, "cassie/push", self.on_push, QOS_DEPTH)
        self.create_service(Trigger, "cassie/reset", self.on_reset)
        self.get_logger().info(
            f"{self.config.mode} mode, {self.config.actuator} actuators, {self.config.variant} "
            f"springs, physics {1 / self.config.timestep:g} Hz, state "
            + (f"{self.config.publish_rate:g} Hz" if self.config.mode == "realtime" else
               f"every {self.config.policy_period:g} s policy period"))

    # ------------------------------------------------------------ callbacks (executor thread)

    def reject(self, rejection: Rejection):
        held = self.throttle(rejection.kind)
        if held is not None:
            more = f" ({held} more like it suppressed)" if held else ""
            self.get_logger().error(f"rejected: {rejection.message}{more}")

    def on_target(self, msg: JointState):
        try:
            cmd = self.server.parse_command(msg.name, msg.position, msg.velocity, msg.effort)
        except Exception as err:  # never die on a message
            cmd = Rejection("malformed", f"PD target could not be read: {err!r}")
        key = "accepted_targets" if isinstance(cmd, PdCommand) else "rejected_targets"
        self.counts[key] += 1
        if isinstance(cmd, Rejection):
            self.reject(cmd)
        else:
            self.inbox.put(("target", cmd))

    def on_push(self, msg: Wrench):
        try:
            f, t = msg.force, msg.torque
            push = self.server.parse_push((f.x, f.y, f.z), (t.x, t.y, t.z))
        except Exception as err:  # never die on a message
            push = Rejection("push", f"push could not be read: {err!r}")
        if isinstance(push, Rejection):
            self.reject(push)
        else:
            self.inbox.put(("push", push))

    def on_reset(self, request, response):
        done = threading.Event()
        self.inbox.put(("reset", done))
        response.success = done.wait(timeout=5.0)
        response.message = ("reset to the standing keyframe" if response.success else
                            "the simulation loop did not answer within 5 s")
        return response

    # ------------------------------------------------------------ simulation (main thread)

    def process(self, item) -> bool:
        """Apply one queued input; True when it was a target (lockstep advances on those)."""
        kind, payload = item
        if kind == "target":
            if self.config.mode == "lockstep":
                self.log_events(self.server.lockstep(payload))
            else:
                self.log_events(self.server.apply(payload))
            return True
        if kind == "push":
            self.server.push(*payload)
        elif kind == "reset":
            self.server.reset()
            self.get_logger().info(f"reset to the standing keyframe at t = "
                                   f"{self.server.time:.3f} s")
            payload.set()
            if self.config.mode == "lockstep":
                self.publish(self.server.snapshot())  # the policy's next observation
        return False

    def log_events(self, events: list[Event]):
        log, t = self.get_logger(), self.server.time
        for event in events:
            if event is Event.WATCHDOG_ENGAGED:
                log.warning(f"watchdog: no valid PD target for {self.config.watchdog_timeout:g} s "
                            f"of sim time (t = {t:.3f} s): damping mode (P = 0, D only)")
            elif event is Event.WATCHDOG_RELEASED:
                log.info(f"watchdog: valid PD target at t = {t:.3f} s, control resumed")
            elif event is Event.DIVERGED:
                log.error(f"simulation diverged at t = {t:.3f} s: reset to the standing keyframe")

    def run_realtime(self):
        refused = realtime_thread(self.config.rt_priority)
        if refused:
            self.get_logger().warning(refused)
        pacer = self.pacer = RealtimePacer(self.server.steps_per_publish * self.server.timestep)
        self.publish(self.server.snapshot())  # t = 0; also pays for the first publish's setup
        pacer.start()
        next_log = time.monotonic() + LOG_EVERY_S
        while self.context.ok():
            while not self.inbox.empty():
                self.process(self.inbox.get_nowait())
            # Step ahead, then publish when the wall clock reaches the state's sim time.
            self.log_events(self.server.step_realtime())
            state = self.server.snapshot()
            wait = pacer.time_to_next()
            if wait > 0:
                time.sleep(wait)
            self.publish(state)
            pacer.done()
            if time.monotonic() >= next_log:
                next_log += LOG_EVERY_S
                wall, rtf, missed = pacer.window()
                self.get_logger().info(f"real-time factor {rtf:.3f} over {wall:.1f} s, "
                                       f"{missed} missed publish periods")

    def run_lockstep(self):
        # Until the first target, the initial state (one snapshot, so noise draws stay the
        # same run to run) goes out again whenever a new reader of a state topic appears: a
        # policy whose subscriptions match one by one still gets it on each. Same stamp each
        # time; a policy acts once per stamp.
        initial, readers, started = self.server.snapshot(), [0] * 3, False
        while self.context.ok():
            try:
                item = self.inbox.get(timeout=0.02)
            except queue.Empty:
                if not started:
                    now = [p.get_subscription_count()
                           for p in (self.joint_pub, self.imu_pub, self.truth_pub)]
                    if any(n > seen for n, seen in zip(now, readers)):
                        self.publish(initial)
                    readers = now
                continue
            if self.process(item):
                self.publish(self.server.snapshot())
                started = True

    def stats(self) -> dict:
        stats = dict(self.pacer.totals()) if hasattr(self, "pacer") else {}
        return {"sim_time": self.server.time, **stats, **self.counts}

    # ------------------------------------------------------------ messages

    def make_messages(self):
        """The outgoing messages, built once: each publish only fills in the numbers."""
        self.messages = DriverMessages(odometry_frame="world")  # ground truth
        self.feet = [WrenchStamped() for _ in C.SIDES]
        self.foot_points = [PointStamped() for _ in C.SIDES]
        for msg in (*self.feet, *self.foot_points):
            msg.header.frame_id = "world"
        # The estimate lives in the estimator's own odometry frame: it starts at x = y = 0.
        self.estimate = Odometry(child_frame_id="pelvis")
        self.estimate.header.frame_id = "odom"

    def publish(self, s: StateSnapshot):
        m = self.messages
        m.fill(s)
        for msg in (self.estimate, *self.feet, *self.foot_points):
            set_stamp(msg.header.stamp, s.time)
        self.clock_pub.publish(m.clock)
        self.joint_pub.publish(m.joint_states)
        self.imu_pub.publish(m.imu)
        self.truth_pub.publish(m.odometry)
        for pub, w, force in zip(self.foot_pubs, self.feet, s.foot_forces):
            set_vector(w.wrench.force, force)
            pub.publish(w)
        for pub, point, position in zip(self.foot_position_pubs, self.foot_points,
                                        s.foot_positions):
            set_vector(point.point, position)
            pub.publish(point)
        e = s.estimate
        if self.estimate_pub is not None and e is not None and e.valid[0]:
            est = self.estimate
            quat = e.pelvis_orientation[0]
            set_vector(est.pose.pose.position, e.pelvis_position[0])
            set_quaternion(est.pose.pose.orientation, quat)
            # nav_msgs/Odometry carries the twist in the child (pelvis) frame.
            set_vector(est.twist.twist.linear,
                       quat_rotate_inverse(quat, e.pelvis_translational_velocity[0]))
            set_vector(est.twist.twist.angular, e.pelvis_rotational_velocity[0])
            self.estimate_pub.publish(est)


def main(args: list[str] | None = None) -> int:
    """Run the node; ``args`` is the argument list without the program name (default: sys.argv)."""
    argv = command_line(args)
    code = reject_plain_arguments("sim_node", argv, SimNodeConfig)
    if code is not None:
        return code
    with ros_session("sim_node", argv):
        try:
            node = SimNode()
        except ConfigError as err:
            print(f"sim_node: bad parameter: {err}", file=sys.stderr)
            return 2
        with spinning(node):
            try:
                node.run_lockstep() if node.config.mode == "lockstep" else node.run_realtime()
            finally:
                node.get_logger().info(f"stats {json.dumps(node.stats())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
