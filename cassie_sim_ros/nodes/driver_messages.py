"""The robot driver's outgoing messages, shared by the simulator node and the hardware bridge
so that a policy node cannot tell them apart: joint states, IMU and pelvis odometry, built once
and refilled for each state."""

from __future__ import annotations

from nav_msgs.msg import Odometry
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Imu, JointState

from cassie_sim_ros import constants as C
from cassie_sim_ros.sim_server import JOINT_NAMES

# Reliable, volatile, keep last 10 (rclpy's default for a depth): what `ros2 topic echo`,
# `ros2 bag record` and default subscribers match. Best effort would not reach reliable readers.
QOS_DEPTH = 10
IMU_COVARIANCE = {"orientation": 1e-6, "angular_velocity": C.GYRO_NOISE ** 2,
                  "linear_acceleration": C.ACCEL_NOISE ** 2}
BUILTIN_PARAMETERS = ("use_sim_time", "start_type_description_service")
"""Parameters every rclpy node has; not ours to check."""


def set_vector(msg, v) -> None:
    msg.x, msg.y, msg.z = float(v[0]), float(v[1]), float(v[2])


def set_quaternion(msg, q) -> None:
    """MuJoCo's w, x, y, z into a geometry_msgs Quaternion."""
    msg.w, msg.x, msg.y, msg.z = float(q[0]), float(q[1]), float(q[2]), float(q[3])


def set_stamp(stamp, seconds: float) -> None:
    stamp.sec, stamp.nanosec = divmod(round(seconds * 1e9), 1_000_000_000)


class DriverMessages:
    """``joint_states``, ``imu`` and ``odometry`` (frame ``odometry_frame`` → ``pelvis``) and a
    ``clock``; :meth:`fill` writes one state (a ``StateSnapshot`` or anything with its fields)."""

    def __init__(self, odometry_frame: str):
        self.joint_states = JointState(name=list(JOINT_NAMES))
        self.imu = Imu()
        self.imu.header.frame_id = "imu"
        for name, var in IMU_COVARIANCE.items():
            setattr(self.imu, f"{name}_covariance", [var, 0.0, 0.0, 0.0, var, 0.0, 0.0, 0.0, var])
        self.odometry = Odometry(child_frame_id="pelvis")
        self.odometry.header.frame_id = odometry_frame
        self.clock = Clock()

    def fill(self, s) -> None:
        js, imu, odom = self.joint_states, self.imu, self.odometry
        for stamp in (js.header.stamp, imu.header.stamp, odom.header.stamp, self.clock.clock):
            set_stamp(stamp, s.time)
        js.position = s.joint_position.tolist()
        js.velocity = s.joint_velocity.tolist()
        js.effort = s.joint_effort.tolist()
        set_quaternion(imu.orientation, s.imu_orientation)
        set_vector(imu.angular_velocity, s.imu_angular_velocity)
        set_vector(imu.linear_acceleration, s.imu_linear_acceleration)
        set_vector(odom.pose.pose.position, s.pelvis_position)
        set_quaternion(odom.pose.pose.orientation, s.pelvis_orientation)
        set_vector(odom.twist.twist.linear, s.pelvis_linear_velocity)
        set_vector(odom.twist.twist.angular, s.pelvis_angular_velocity)
