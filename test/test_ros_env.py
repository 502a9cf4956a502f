"""ros_subprocess_env and the node fixtures: a node started by ``start_node`` is reachable from
the test over DDS, and is stopped afterwards."""

from __future__ import annotations

import os
import sys
import time

import pytest

from cassie_rl_ros.ros_env import ros_subprocess_env

TALKER = """
import rclpy
from rclpy.executors import ExternalShutdownException
from std_msgs.msg import String

rclpy.init()
node = rclpy.create_node('talker')
pub = node.create_publisher(String, 'chatter', 10)
node.create_timer(0.05, lambda: pub.publish(String(data='hello')))
try:
    rclpy.spin(node)
except (KeyboardInterrupt, ExternalShutdownException):
    pass
"""


def test_env_isolates_domain_and_keeps_ament_prefix(monkeypatch, tmp_path):
    monkeypatch.delenv('AMENT_PREFIX_PATH', raising=False)
    env = ros_subprocess_env(17, str(tmp_path))
    assert env['ROS_DOMAIN_ID'] == '17'
    assert env['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'
    assert env['ROS_LOG_DIR'] == str(tmp_path)
    assert env['RMW_IMPLEMENTATION'] == 'rmw_fastrtps_cpp'
    assert env['AMENT_PREFIX_PATH'] == sys.prefix

    monkeypatch.setenv('AMENT_PREFIX_PATH', '/opt/ros/kilted')
    assert ros_subprocess_env(17, str(tmp_path))['AMENT_PREFIX_PATH'] == '/opt/ros/kilted'
    with pytest.raises(ValueError):
        ros_subprocess_env(300, str(tmp_path))


def test_started_node_is_heard_in_the_test_domain(start_node, ros_env):
    rclpy = pytest.importorskip('rclpy')
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String

    proc = start_node([sys.executable, '-c', TALKER])
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node('listener', context=context)
        heard = []
        node.create_subscription(String, 'chatter', lambda msg: heard.append(msg.data), 10)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + 20
        while not heard and time.monotonic() < deadline and proc.poll() is None:
            executor.spin_once(timeout_sec=0.1)
        assert heard, proc.log_path.read_text()
        assert heard[0] == 'hello'
    finally:
        rclpy.shutdown(context=context)
    assert os.environ['ROS_DOMAIN_ID'] == ros_env['ROS_DOMAIN_ID']
