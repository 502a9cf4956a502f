"""``viewer_node``: shows the simulator node's robot, in MuJoCo's viewer or offscreen to a video.

    ros2 run cassie_rl_ros viewer_node --ros-args -p use_sim_time:=true
    ros2 run cassie_rl_ros viewer_node --ros-args -p video:=walk.mp4 -p seconds:=10.0

The ROS side of ``cassie-rl render`` (started by ``render.launch.py`` and ``cassie-rl render
--ros``). It subscribes ``cassie/ground_truth`` (nav_msgs/Odometry: the pelvis pose, and the
actual forward speed from its pelvis-frame twist) and ``cassie/joint_states``; the closed chains'
unpublished joints are solved (``tools.render.StateMirror``). It also follows ``cassie/cmd_vel``
and ``cassie/step_frequency`` to show the commanded speed.

Keys (window): Up/Down speed ±0.1 m/s and PageUp/PageDown stepping frequency ±0.1, published
on ``cassie/cmd_vel`` / ``cassie/step_frequency``; Left/Right a 200 N push on ``cassie/push``;
Backspace calls ``cassie/reset``. The policy node clamps commands to its trained range.

Parameters: ``video`` ('' = window; a path ending in .mp4 = MP4, else a folder of PNG frames),
``seconds`` (video length in sim time, 0 = until shutdown; the node exits when done, which
ends render.launch.py), ``speed`` and ``step_frequency`` (the commands the keys start from),
``width``, ``height``, ``fps`` (video frame rate in sim time), ``fast`` (no shadows or
reflections). Closing the window also exits the node.
"""

from __future__ import annotations

import math
import os
import queue
import sys
import threading
import time

import rclpy
from geometry_msgs.msg import Twist, Wrench
from nav_msgs.msg import Odometry
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64
from std_srvs.srv import Trigger

from cassie_sim_ros.nodes.driver_messages import QOS_DEPTH
from cassie_sim_ros.nodes.node_main import command_line, ros_session, spinning


class ViewerNode(Node):
    def __init__(self):
        super().__init__("viewer_node")
        p = self.declare_parameter
        self.video = p("video", "").value
        self.seconds = float(p("seconds", 0.0).value)
        self.command = [float(p("speed", 0.0).value), 0.0, 0.0]
        self.step_frequency = float(p("step_frequency", 1.0).value)
        self.width = int(p("width", 640).value)
        self.height = int(p("height", 480).value)
        self.fps = float(p("fps", 30.0).value)
        self.fast = bool(p("fast", False).value)
        self.lock = threading.Lock()
        self.pelvis = None  # (stamp s, position, quaternion w x y z, forward speed)
        self.joints = None  # (names, positions)
        self.create_subscription(Odometry, "cassie/ground_truth", self.on_truth, QOS_DEPTH)
        self.create_subscription(JointState, "cassie/joint_states", self.on_joints, QOS_DEPTH)
        self.create_subscription(Twist, "cassie/cmd_vel", self.on_cmd_vel, QOS_DEPTH)
        self.create_subscription(Float64, "cassie/step_frequency", self.on_frequency, QOS_DEPTH)
        self.cmd_pub = self.create_publisher(Twist, "cassie/cmd_vel", QOS_DEPTH)
        self.freq_pub = self.create_publisher(Float64, "cassie/step_frequency", QOS_DEPTH)
        self.push_pub = self.create_publisher(Wrench, "cassie/push", QOS_DEPTH)
        self.reset_client = self.create_client(Trigger, "cassie/reset")

    # ------------------------------------------------------------ messages (executor thread)

    def on_truth(self, msg: Odometry):
        pose = msg.pose.pose
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        q = pose.orientation
        with self.lock:
            self.pelvis = (stamp, (pose.position.x, pose.position.y, pose.position.z),
                           (q.w, q.x, q.y, q.z), msg.twist.twist.linear.x)

    def on_joints(self, msg: JointState):
        with self.lock:
            self.joints = (list(msg.name), list(msg.position))

    def on_cmd_vel(self, msg: Twist):
        values = (msg.linear.x, msg.linear.y, msg.angular.z)
        if all(math.isfinite(v) for v in values):
            self.command = list(values)

    def on_frequency(self, msg: Float64):
        if math.isfinite(msg.data):
            self.step_frequency = msg.data

    def latest(self):
        with self.lock:
            return self.pelvis, self.joints

    # ------------------------------------------------------------ keys (main thread)

    def apply(self, what: str, amount: float):
        from ..tools.render import push_force

        if what == "speed":
            self.command[0] = round(self.command[0] + amount, 6)
            twist = Twist()
            twist.linear.x, twist.linear.y, twist.angular.z = self.command
            self.cmd_pub.publish(twist)
        elif what == "frequency":
            self.step_frequency = round(self.step_frequency + amount, 6)
            self.freq_pub.publish(Float64(data=self.step_frequency))
        elif what == "push":
            pelvis, _ = self.latest()
            if pelvis is not None:
                w, x, y, z = pelvis[2]
                yaw = math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
                force = push_force(yaw, amount)
                msg = Wrench()
                msg.force.x, msg.force.y, msg.force.z = (float(f) for f in force)
                self.push_pub.publish(msg)
        elif what == "reset":
            if self.reset_client.service_is_ready():
                self.reset_client.call_async(Trigger.Request())
            else:
                self.get_logger().warning("cassie/reset is not available")

    def status(self, pelvis) -> str:
        from ..tools.render import status_text

        return status_text(self.command, self.step_frequency, pelvis[3], pelvis[0])


def _pose(mirror, pelvis, joints):
    return mirror.update(pelvis[1], pelvis[2], joints[0], joints[1])


def run_video(node: ViewerNode, mirror) -> int:
    """Offscreen frames at ``fps`` of sim time until ``seconds`` (or shutdown)."""
    from ..tools.render import FrameSink, Offscreen, even

    width, height = even(node.width), even(node.height)
    sink = FrameSink(node.video, width, height, node.fps)
    offscreen = Offscreen(mirror.model, width, height, node.fast)
    start = next_frame = None
    try:
        while rclpy.ok(context=node.context):
            pelvis, joints = node.latest()
            if pelvis is None or joints is None:
                time.sleep(0.01)
                continue
            stamp = pelvis[0]
            if start is None:
                start = next_frame = stamp
            if node.seconds > 0 and stamp - start >= node.seconds:
                break
            if stamp + 1e-9 < next_frame:
                time.sleep(0.002)
                continue
            next_frame += 1.0 / node.fps
            if stamp >= next_frame:  # fell behind: skip frames, keep the sim-time spacing
                next_frame = stamp + 1.0 / node.fps
            sink.write(offscreen.render(_pose(mirror, pelvis, joints), node.status(pelvis)))
    finally:
        offscreen.close()
        sink.close()
    node.get_logger().info(f"wrote {sink.count} frames to {node.video}")
    return 0


def run_window(node: ViewerNode, mirror) -> int:
    """MuJoCo's passive viewer at up to 60 Hz, following the pelvis."""
    import mujoco
    import mujoco.viewer

    from ..tools.render import KEY_HELP, KEYS, tracking_camera

    keys: queue.Queue = queue.Queue()

    def on_key(keycode: int):
        if keycode in KEYS:
            keys.put(KEYS[keycode])

    with mujoco.viewer.launch_passive(mirror.model, mirror.data, key_callback=on_key) as viewer:
        cam = tracking_camera(mirror.model)
        viewer.cam.type, viewer.cam.trackbodyid = cam.type, cam.trackbodyid
        viewer.cam.distance, viewer.cam.azimuth, viewer.cam.elevation = (
            cam.distance, cam.azimuth, cam.elevation)
        while viewer.is_running() and rclpy.ok(context=node.context):
            while not keys.empty():
                node.apply(*keys.get_nowait())
            pelvis, joints = node.latest()
            if pelvis is not None and joints is not None:
                with viewer.lock():
                    _pose(mirror, pelvis, joints)
                    viewer.set_texts((None, mujoco.mjtGridPos.mjGRID_TOPLEFT,
                                      node.status(pelvis), KEY_HELP))
                viewer.sync()
            time.sleep(1.0 / 60.0)
    return 0


def main(args: list[str] | None = None) -> int:
    argv = command_line(args)
    # Ctrl-C and SIGTERM finish the video (ros_session: KeyboardInterrupt in the main thread).
    with ros_session("viewer_node", argv):
        node = ViewerNode()
        headless = bool(node.video)
        if headless:
            # Before mujoco is imported: it picks its GL backend then.
            os.environ.setdefault("MUJOCO_GL", "egl")
        elif not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            node.get_logger().error("no display: set the video parameter to render offscreen")
            node.destroy_node()
            return 2
        from cassie_sim_ros.model import load_model

        from ..tools.render import StateMirror

        mirror = StateMirror(load_model())
        with spinning(node):
            return run_video(node, mirror) if headless else run_window(node, mirror)
    return 0


if __name__ == "__main__":
    sys.exit(main())
