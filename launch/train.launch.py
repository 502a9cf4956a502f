"""Train a Cassie policy with train_node (the runner of `cassie-rl train`).

    ros2 launch cassie_rl_ros train.launch.py
    ros2 launch cassie_rl_ros train.launch.py config:=my_train.yaml overrides:="runner.num_envs=16"
    ros2 launch cassie_rl_ros train.launch.py resume:=runs/walk

Ctrl-C lets the node finish its iteration and save a checkpoint; sigterm_timeout is how long
launch waits for that before escalating to SIGTERM (then SIGKILL).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = {
    'config': (PathJoinSubstitution([FindPackageShare('cassie_rl_ros'), 'config', 'train.yaml']),
               'training config YAML (TrainConfig: env, policy, ppo, runner)'),
    'overrides': ('', 'space-separated key.sub=value config overrides, e.g. "ppo.lr=3e-4"'),
    'resume': ('', 'run folder to continue from its checkpoint (empty: a new run)'),
    'init_from': ('', 'saved policy to warm start from (empty: none)'),
    'sigterm_timeout': ('120', 'seconds to wait after Ctrl-C for the iteration to finish and '
                        'the checkpoint to be saved'),
}
NODE_PARAMETERS = ('config', 'overrides', 'resume', 'init_from')


def generate_launch_description():
    arguments = [DeclareLaunchArgument(name, default_value=default, description=description)
                 for name, (default, description) in ARGUMENTS.items()]
    # value_type=str: pass the text as-is (launch would otherwise parse it as YAML, and an
    # empty string is not a valid parameter value then).
    parameters = {name: ParameterValue(LaunchConfiguration(name), value_type=str)
                  for name in NODE_PARAMETERS}
    node = Node(package='cassie_rl_ros', executable='train_node', name='train_node',
                output='screen', emulate_tty=True, parameters=[parameters],
                sigterm_timeout=LaunchConfiguration('sigterm_timeout'))
    return LaunchDescription([*arguments, node])
