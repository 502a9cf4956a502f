"""Environment for starting ROS 2 node processes the same way everywhere (tests, bring-up).

Pure: imports no ROS package, so it can be used before (or without) rclpy.

Why each variable:

* ``ROS_DOMAIN_ID``: nodes only discover peers in the same domain. Giving each test its own
  domain keeps parallel tests (pytest-xdist workers, other runs on the machine) from seeing each
  other's topics.
* ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``: discovery stays on this host; nothing is sent to
  the network, and nodes on other machines in the same domain are not picked up.
* ``ROS_LOG_DIR``: rcl writes a log file per process; pointing it at a temporary folder keeps
  ``~/.ros/log`` clean and keeps the logs with the test that made them.
* ``RMW_IMPLEMENTATION=rmw_fastrtps_cpp``: the one middleware the PyPI wheels (the ``ros``
  extra) ship; fixing it means a ROS install with another default behaves the same.
* ``AMENT_PREFIX_PATH``: a sourced ROS setup (colcon workspace) sets it; a plain venv with the
  PyPI wheels does not, and then ``ament_index_python`` (package share lookups, launch_ros)
  raises. The wheels and this package install their ament index under ``sys.prefix``, so that
  is the prefix to use when none is set.
"""

from __future__ import annotations

import os
import sys


def ros_subprocess_env(domain_id: int, log_dir: str) -> dict[str, str]:
    """Return a copy of ``os.environ`` set up to run a ROS 2 node in ``domain_id``."""
    if not 0 <= domain_id <= 232:
        raise ValueError(f'ROS_DOMAIN_ID must be in 0..232, got {domain_id}')
    env = dict(os.environ)
    env['ROS_DOMAIN_ID'] = str(domain_id)
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    env['ROS_LOG_DIR'] = str(log_dir)
    env['RMW_IMPLEMENTATION'] = 'rmw_fastrtps_cpp'
    if not env.get('AMENT_PREFIX_PATH'):
        env['AMENT_PREFIX_PATH'] = sys.prefix
    return env
