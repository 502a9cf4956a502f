"""Packaging for cassie_rl_ros: one ament_python package holding two Python packages.

``cassie_sim_ros`` (MuJoCo model, simulator, estimator) and ``cassie_rl_ros`` (environments,
PPO, policies, training, ROS nodes, tools). The same file serves ``pip install`` in a venv and
``colcon build`` in a ROS 2 workspace.

Dependencies that are deliberately NOT in ``install_requires``:

* torch: install it first with ``pip install torch==2.13.0``. A bare ``torch`` requirement
  lets pip pick the newest release, which on Linux x86_64 is a multi-GB CUDA build.
* ROS 2 (rclpy, message packages): a colcon workspace gets them from the sourced ROS
  distribution; a plain venv gets the PyPI wheels through the ``ros`` extra.
"""

from glob import glob

from setuptools import find_packages, setup
from setuptools.dist import Distribution

PACKAGE = 'cassie_rl_ros'

# ROS executables: name under <prefix>/lib/cassie_rl_ros/ -> module run with ``python -m``.
# ``ros2 run`` and launch_ros look for executables there, not in <prefix>/bin, and pip never
# puts console scripts there, so each one is a small shell wrapper in scripts/ros/ installed as
# data. test/test_package.py reads this dict (with ast), keep it a literal.
ROS_EXECUTABLES = {
    'sim_node': 'cassie_sim_ros.nodes.sim_node',
    'policy_node': 'cassie_rl_ros.nodes.policy_node',
    'train_node': 'cassie_rl_ros.nodes.train_node',
    'plot_bag': 'cassie_rl_ros.tools.plot_bag',
    'hardware_bridge': 'cassie_rl_ros.nodes.hardware_bridge',
    'viewer_node': 'cassie_rl_ros.nodes.viewer_node',
}



class _Distribution(Distribution):
    """Makes ``pip install -e .`` install data_files too (ament marker, launch, lib wrappers).

    setuptools' editable_wheel installs data only if the distribution answers ``has_data()``,
    but the method is named ``has_data_files()``, so editable installs silently drop all
    data_files (seen with setuptools 84). The alias is harmless where that is fixed.
    """

    def has_data(self) -> bool:
        return self.has_data_files()


ROS_EXTRA = [
    'ros-rclpy',
    'ros-rmw-fastrtps-cpp',
    'ros-std-msgs',
    'ros-sensor-msgs',
    'ros-geometry-msgs',
    'ros-nav-msgs',
    'ros-std-srvs',
    'ros-rosgraph-msgs',
    'ros-diagnostic-msgs',
    'ros-ament-index-python',
]

setup(
    distclass=_Distribution,
    name=PACKAGE,
    version='0.1.0',
    description='Train and run walking controllers for the Cassie biped with MuJoCo, PyTorch '
    'and ROS 2',
    license='MIT',
    python_requires='>=3.10',
    packages=find_packages(exclude=['test', 'test.*', 'bench', 'bench.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', sorted(glob('launch/*.launch.py'))),
        ('share/' + PACKAGE + '/config', sorted(glob('config/*.yaml'))),
        # The shipped default policy (policy node, render.launch.py) and its 2-core reproduction.
        ('share/' + PACKAGE + '/policies/walk', sorted(glob('policies/walk/*'))),
        ('share/' + PACKAGE + '/policies/walk_fresh', sorted(glob('policies/walk_fresh/*'))),
        ('lib/' + PACKAGE, ['scripts/ros/' + name for name in ROS_EXECUTABLES]),
    ],
    install_requires=[
        'numpy',
        'pyyaml',
        'mujoco>=4.0',
        'safetensors',
        'rosbags>=0.11,<0.12',
        'tensorboard',
        'tqdm',
        'matplotlib',
        'imageio-ffmpeg',
    ],
    extras_require={
        'ros': ROS_EXTRA,
        'test': ['pytest', 'pytest-timeout', 'pytest-xdist'],
    },
    zip_safe=False,
    entry_points={
        'console_scripts': [
            'cassie-rl = cassie_rl_ros.tools.cli:main',
        ],
    },
)
