"""``policy_node``: a trained policy driving Cassie (the simulator node or the robot's driver).

    ros2 run cassie_rl_ros policy_node --ros-args -p policy:=runs/walk -p use_sim_time:=true
    cassie-rl policy runs/walk --ros-args -p speed:=0.5
    ros2 topic pub /cassie/cmd_vel geometry_msgs/msg/Twist "{linear: {x: 0.5}}"

A thin shell over ``cassie_rl_ros.policy_runner.PolicyRunner`` (commands, staleness, resets and
the policy step live there, without ROS).

Subscribes ``cassie/joint_states`` (sensor_msgs/JointState: 10 motors + 6 passive joints by
name), ``cassie/imu`` (sensor_msgs/Imu), ``cassie/cmd_vel`` (geometry_msgs/Twist: linear.x
forward, linear.y lateral, angular.z yaw rate) and ``cassie/step_frequency`` (std_msgs/Float64).
A ``state_est`` policy runs the training env's state estimator on the joint states and IMU
rather than reading ``cassie/state_estimate``, whose nav_msgs/Odometry lacks the acceleration and
the height above the terrain that its observation needs.
Publishes ``cassie/pd_targets`` (sensor_msgs/JointState: motor names, position targets, velocity
and effort 0) and the raw policy output on ``cassie/policy_action`` (std_msgs/Float64MultiArray,
10 values in motor order). All reliable, keep last 10, as the simulator node.

Parameters (read once at start):

* ``policy``: saved policy path, or several (an ensemble); '' = the shipped default policy.
* ``speed``: initial forward speed command (m/s). ``step_frequency``: initial stepping frequency.
* ``trigger``: ``state`` (default) acts on each new state, i.e. a joint state and an IMU reading
  with the same stamp (within ``sync_tolerance`` s) at least one policy period after the last
  one acted on: lowest latency, and the only mode that works with the simulator's ``lockstep``
  mode, whose clock advances only when a target arrives. ``timer`` acts on a timer of one policy
  period on the node's clock (``use_sim_time``: follows /clock) on the latest inputs: a fixed
  rate whatever the driver's state rate.
* ``torch_threads``: torch intra-op threads (1: the networks are small).
* ``rt_priority``: SCHED_FIFO priority (1..98) of the thread that runs the policy steps, as
  on a robot computer; 0 = normal scheduling. Needs root, CAP_SYS_NICE or an rtprio limit,
  else a warning.
* ``estimator_rate``: ``state_est`` policies only: the rate (Hz) joint state + IMU pairs arrive
  at, which the node's state estimator (the env's ``CassieEstimator``, one update per pair)
  integrates over; 0 = the policy's training rate (``env.estimator_rate``). Set the simulator
  node's ``publish_rate`` to the same value.
* ``reset_sim_on_start``: call ``cassie/reset`` once when the first target goes out, so the
  policy takes over a standing robot (the simulator's hold mode does not balance). Simulator
  only; render.launch.py sets it.
* ``wait_for_readers``: ``state`` trigger: the first target (and the first after every reader
  left, e.g. a restarted driver) waits until this many readers of pd_targets are matched, the
  driver among them (default 1). 2 lets a recorder started beforehand (``ros2 bag record``, a
  test's probe) hear a lockstep run from its first target. A wait of over 5 s for more than
  one reader is logged.
* ``use_sim_time``: run on /clock (the simulator) instead of the system clock.

In ``state`` mode a target goes out only once the driver reads pd_targets (a node that
publishes the joint states and subscribes to the targets, as the simulator node and the
hardware bridge do): a first target that reached only another reader (``ros2 bag record``)
would leave a lockstep driver waiting. A driver split over two nodes gets them after 5 s (once
``wait_for_readers`` readers are matched).
Readers count once DDS has matched them to the publisher, which can come seconds after the
graph lists them; a recorder that subscribes once the graph lists the publisher (as
``ros2 bag record`` does) matches on its own side at once.

Either way the gait clock advances by the trained policy period per published target. Inputs
older than 3 policy periods (node clock) stop the publishing, with a warning, until fresh ones
arrive. On shutdown the node logs ``stats {json}``: steps, state-to-target latency.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time

import numpy as np
from geometry_msgs.msg import Twist
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Float64, Float64MultiArray
from std_srvs.srv import Trigger

from cassie_sim_ros import constants as C
from cassie_sim_ros.nodes.driver_messages import QOS_DEPTH
from cassie_sim_ros.nodes.node_main import command_line, ros_session, spinning

from ..policy_runner import PolicyError, PolicyRunner, default_policy_path

RETRY_PERIOD_S = 0.02
"""Wall-clock period of the check for a state that arrived before the driver read pd_targets."""
LOG_THROTTLE_S = 2.0
DRIVER_WAIT_S = 5.0
"""Wall seconds a state waits for a driver (a node that publishes joint states and reads
pd_targets) before any reader of pd_targets will do (a driver split over two nodes)."""
DEADLOCK_WAIT_S = 1.0
"""Wall seconds without a new state, while the newest is not yet due, before saying why."""
TRIGGERS = ("state", "timer")


def _stamp_ns(stamp, zero_is_unstamped: bool) -> int | None:
    """A header stamp in ns; None for an unstamped message (all zero) on the system clock,
    where zero cannot be a real time. On sim time zero is the simulation's first instant."""
    ns = stamp.sec * 1_000_000_000 + stamp.nanosec
    return None if ns == 0 and zero_is_unstamped else ns


class PolicyNode(Node):
    def __init__(self):
        super().__init__("policy_node")
        policy = self.declare_parameter(
            "policy", "", ParameterDescriptor(dynamic_typing=True,
                                              description="policy path(s); '' = default")).value
        speed = self.declare_parameter("speed", 0.0).value
        step_frequency = self.declare_parameter("step_frequency", 1.0).value
        self.trigger = self.declare_parameter("trigger", "state").value
        sync_tolerance = self.declare_parameter("sync_tolerance", 0.0).value
        torch_threads = self.declare_parameter("torch_threads", 1).value
        self.rt_priority = self.declare_parameter("rt_priority", 0).value
        reset_sim = self.declare_parameter("reset_sim_on_start", False).value
        self.wait_for_readers = self.declare_parameter("wait_for_readers", 1).value
        estimator_rate = float(self.declare_parameter("estimator_rate", 0.0).value)
        if self.trigger not in TRIGGERS:
            raise PolicyError(f"trigger: {self.trigger!r} is not one of {', '.join(TRIGGERS)}")
        if not isinstance(self.wait_for_readers, int) or self.wait_for_readers < 1:
            raise PolicyError(f"wait_for_readers: {self.wait_for_readers!r} is not an integer "
                              ">= 1 (readers of pd_targets before the first target)")
        if not (np.isfinite(sync_tolerance) and sync_tolerance >= 0):
            raise PolicyError(f"sync_tolerance: must be seconds >= 0, got {sync_tolerance}")
        if not (isinstance(self.rt_priority, int) and 0 <= self.rt_priority <= 98):
            raise PolicyError(f"rt_priority: {self.rt_priority!r} is not allowed; allowed values: "
                              "0 (normal scheduling) or a SCHED_FIFO priority in 1..98")
        # Dynamic typing: a string, a string array, or whatever YAML made of the text.
        paths = [str(p) for p in (policy if isinstance(policy, (list, tuple)) else [policy])
                 if p not in ("", None)]
        paths = paths or [str(default_policy_path())]
        import torch

        if torch_threads > 0:
            torch.set_num_threads(int(torch_threads))
        self.runner = PolicyRunner.load(paths, speed=float(speed),
                                        step_frequency=float(step_frequency),
                                        estimator_rate=estimator_rate or None)
        for feedback in self.runner.initial_feedback:
            if feedback.warning or feedback.error:
                self.get_logger().warning(feedback.warning or feedback.error)
        self.tolerance_ns = int(round(sync_tolerance * 1e9))
        self.publishing = False
        """True while targets go out; a change either way is logged once."""
        self.pending = False
        self.driver_matched = False
        """Set once a driver reads the targets; cleared when no reader is left (restart)."""
        self.waiting_since: float | None = None  # wall time a due state first waited for it
        self.readers_warned = False
        self.last_input = time.monotonic()  # wall time of the last joint state or IMU message
        self.deadlock_warned: int | None = None  # the early state already reported
        self.latencies: list[float] = []
        self.stats = {"steps": 0, "rejected_inputs": 0, "stale_periods": 0, "bad_outputs": 0}

        self.targets_msg = JointState(name=list(C.MOTOR_NAMES))
        self.targets_msg.velocity = [0.0] * C.NUM_MOTORS
        self.targets_msg.effort = [0.0] * C.NUM_MOTORS
        self.action_msg = Float64MultiArray()
        # A simulator started before this node holds the standing pose without balance and may
        # have fallen by now: reset it once, when the policy is ready to take over.
        self.reset_client = self.create_client(Trigger, "cassie/reset") if reset_sim else None
        self.targets_pub = self.create_publisher(JointState, "cassie/pd_targets", QOS_DEPTH)
        self.action_pub = self.create_publisher(Float64MultiArray, "cassie/policy_action",
                                                QOS_DEPTH)
        self.joint_states_sub = self.create_subscription(
            JointState, "cassie/joint_states", self.on_joint_state, QOS_DEPTH)
        self.create_subscription(Imu, "cassie/imu", self.on_imu, QOS_DEPTH)
        self.create_subscription(Twist, "cassie/cmd_vel", self.on_cmd_vel, QOS_DEPTH)
        self.create_subscription(Float64, "cassie/step_frequency", self.on_step_frequency,
                                 QOS_DEPTH)
        # Timer mode acts here; state mode only checks for stale inputs here.
        self.create_timer(self.runner.dt, self.on_timer)
        if self.trigger == "state":
            self.create_timer(RETRY_PERIOD_S, self.on_retry,
                              clock=Clock(clock_type=ClockType.STEADY_TIME))
        cfg = self.runner.config
        self.get_logger().info(
            f"policy {', '.join(paths)}: {cfg.observation.state} observations, {cfg.action} "
            f"actions, {1.0 / self.runner.dt:.4g} Hz ({self.runner.dt:g} s), trigger "
            f"{self.trigger}; command {self.runner.command}, step frequency "
            f"{self.runner.step_frequency:g}")

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def stamp_ns(self, stamp) -> int | None:
        return _stamp_ns(stamp, zero_is_unstamped=not self.get_parameter("use_sim_time").value)

    # ------------------------------------------------------------ inputs

    def on_joint_state(self, msg: JointState):
        t0 = time.perf_counter()
        self.last_input = time.monotonic()
        try:
            note = self.runner.joint_state(msg.name, msg.position, msg.velocity, msg.effort,
                                           self.now(), self.stamp_ns(msg.header.stamp))
        except (ValueError, TypeError) as err:
            return self.rejected(f"joint states ignored: {err}")
        self.noted(note)
        self.maybe_act(t0)

    def on_imu(self, msg: Imu):
        t0 = time.perf_counter()
        self.last_input = time.monotonic()
        q, w, a = msg.orientation, msg.angular_velocity, msg.linear_acceleration
        try:
            note = self.runner.imu((q.w, q.x, q.y, q.z), (w.x, w.y, w.z), (a.x, a.y, a.z),
                                   self.now(), self.stamp_ns(msg.header.stamp))
        except (ValueError, TypeError) as err:
            return self.rejected(f"IMU reading ignored: {err}")
        self.noted(note)
        self.maybe_act(t0)

    def rejected(self, message: str):
        self.stats["rejected_inputs"] += 1
        self.get_logger().error(message, throttle_duration_sec=LOG_THROTTLE_S)

    def noted(self, note: str | None):
        if note:
            self.get_logger().info(note)

    def on_cmd_vel(self, msg: Twist):
        before = self.runner.command
        self.feedback(self.runner.set_command(msg.linear.x, msg.linear.y, msg.angular.z),
                      before, "velocity command")

    def on_step_frequency(self, msg: Float64):
        before = (self.runner.step_frequency,)
        self.feedback(self.runner.set_step_frequency(msg.data), before, "step frequency")

    def feedback(self, fb, before, what: str):
        log = self.get_logger()
        if fb.error:
            log.error(fb.error, throttle_duration_sec=LOG_THROTTLE_S)
        elif fb.warning:
            log.warning(fb.warning, throttle_duration_sec=LOG_THROTTLE_S)
        if fb.applied != before:
            log.info(f"{what} now {', '.join(f'{v:g}' for v in fb.applied)}")

    # ------------------------------------------------------------ acting

    def maybe_act(self, t0: float):
        if self.trigger != "state" or not self.runner.state_due(self.tolerance_ns):
            return
        if not self.driver_listens():
            self.pending = True
            if self.waiting_since is None:
                self.waiting_since = time.monotonic()
            return
        self.act(t0)

    def driver_listens(self) -> bool:
        """Whether the targets reach the node whose states we act on.

        Until then (discovery) a lockstep driver would wait forever for a target sent now, and
        another reader (a bag recorder, a plotter) must not count: the target would reach it
        and not the driver. The driver is a node that publishes the joint states and reads the
        targets; every reader the graph lists must be matched to the publisher too.
        """
        if self.driver_matched and self.targets_pub.get_subscription_count() > 0:
            return True
        readers = self.get_subscriptions_info_by_topic(self.targets_pub.topic_name)
        drivers = {(i.node_namespace, i.node_name) for i in
                   self.get_publishers_info_by_topic(self.joint_states_sub.topic_name)}
        matched = self.targets_pub.get_subscription_count()
        enough = matched >= max(1, self.wait_for_readers)
        self.driver_matched = enough and matched >= len(readers) and any(
            (i.node_namespace, i.node_name) in drivers for i in readers)
        waited = (self.waiting_since is not None
                  and time.monotonic() - self.waiting_since > DRIVER_WAIT_S)
        if waited and not enough and self.wait_for_readers > 1 and not self.readers_warned:
            self.readers_warned = True
            self.get_logger().warning(
                f"the first target waits for {self.wait_for_readers} matched readers of "
                f"{self.targets_pub.topic_name} (wait_for_readers); {matched} so far")
        if not self.driver_matched and enough and waited:
            self.get_logger().warning(
                f"no node both publishes {self.joint_states_sub.topic_name} and reads "
                f"{self.targets_pub.topic_name} after {DRIVER_WAIT_S:g} s: publishing to the "
                "readers there are")
            self.driver_matched = True
        if self.driver_matched:
            self.waiting_since = None  # a later wait (a restarted driver) starts its own clock
            self.readers_warned = False
        return self.driver_matched

    def on_retry(self):
        if self.pending and self.driver_listens():
            self.pending = False
            if self.runner.state_due(self.tolerance_ns):
                self.act(time.perf_counter())
        early = self.runner.early_state(self.tolerance_ns)
        if (early is not None and time.monotonic() - self.last_input > DEADLOCK_WAIT_S
                and early != self.deadlock_warned):
            self.deadlock_warned = early
            self.get_logger().error(
                f"the newest state (t = {early * 1e-9:.4f} s) comes before this policy's next "
                f"step ({self.runner.dt:g} s after the last) and nothing newer arrived for "
                f"{DEADLOCK_WAIT_S:g} s: a lockstep driver waits for a target while the policy "
                f"waits for a state. Set the driver's policy_period to {self.runner.dt:g}")

    def on_timer(self):
        reason = self.runner.stale(self.now())
        if reason is None:
            if self.trigger == "timer":
                self.act(time.perf_counter())
            return
        self.stats["stale_periods"] += 1
        if self.publishing:
            self.publishing = False
            self.get_logger().warning(f"inputs stale ({reason}): stopped publishing PD targets; "
                                      "the driver's watchdog takes over")

    def act(self, t0: float):
        if self.reset_client is not None:
            if self.reset_client.service_is_ready():
                self.reset_client.call_async(Trigger.Request())
                self.get_logger().info("reset the simulator: the policy takes over from "
                                       "standing")
            else:
                self.get_logger().warning("reset_sim_on_start: no cassie/reset service")
            self.reset_client = None
        try:
            out = self.runner.step(self.now())
        except PolicyError as err:
            self.stats["bad_outputs"] += 1
            self.get_logger().error(str(err), throttle_duration_sec=LOG_THROTTLE_S)
            return
        if out is None:
            return
        msg = self.targets_msg
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.position = out.targets.tolist()
        self.targets_pub.publish(msg)
        self.latencies.append(time.perf_counter() - t0)
        self.action_msg.data = out.action.tolist()
        self.action_pub.publish(self.action_msg)
        self.stats["steps"] += 1
        if not self.publishing:
            self.publishing = True
            self.get_logger().info(f"inputs fresh: publishing PD targets on "
                                   f"{self.targets_pub.topic_name}")

    def summary(self) -> dict:
        stats = dict(self.stats)
        if self.latencies:
            ms = np.array(self.latencies) * 1e3
            stats.update(latency_median_ms=round(float(np.median(ms)), 4),
                         latency_p99_ms=round(float(np.percentile(ms, 99)), 4),
                         latency_max_ms=round(float(ms.max()), 4))
        return stats


def main(args: list[str] | None = None) -> int:
    """Run the node; ``args`` is the argument list without the program name (default: sys.argv).

    Arguments before ``--ros-args`` are policy paths (they set the ``policy`` parameter).
    """
    argv = command_line(args)
    split = argv.index("--ros-args") if "--ros-args" in argv else len(argv)
    extra, ros_args = argv[:split], argv[split:]
    parser = argparse.ArgumentParser(
        prog="policy_node", description="Run a trained Cassie policy as a ROS 2 node. "
        "Parameters: --ros-args -p name:=value (policy, speed, step_frequency, trigger, "
        "sync_tolerance, torch_threads, rt_priority, estimator_rate, reset_sim_on_start, "
        "use_sim_time).")
    parser.add_argument("policy", nargs="*", help="policy path(s); several: an ensemble")
    parsed = parser.parse_args(extra)
    if parsed.policy:
        if "--ros-args" not in ros_args:
            ros_args.append("--ros-args")
        value = parsed.policy[0] if len(parsed.policy) == 1 else json.dumps(parsed.policy)
        ros_args += ["-p", f"policy:={value}"]
    with ros_session("policy_node", ros_args):
        try:
            node = PolicyNode()
        except PolicyError as err:
            print(f"policy_node: error: {err}", file=sys.stderr)
            return 2
        # The policy, its normaliser and torch's modules are long-lived: keep the collector
        # from walking them in the middle of a policy step (the p99 latency).
        gc.freeze()
        # Each policy step runs in a callback on the spinner thread; the main thread only
        # waits, so Ctrl-C lands here and never halfway through rclpy's executor code.
        with spinning(node, rt_priority=node.rt_priority) as spinner:
            try:
                while spinner.is_alive():
                    spinner.join(timeout=0.2)
            finally:
                node.get_logger().info(f"stats {json.dumps(node.summary())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
