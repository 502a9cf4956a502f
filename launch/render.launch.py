"""Watch a policy walk: the simulator (real time), the policy node and the viewer.

    ros2 launch cassie_rl_ros render.launch.py policy:=runs/walk speed:=0.5
    ros2 launch cassie_rl_ros render.launch.py policy:=runs/walk video:=walk.mp4 seconds:=10
    ros2 launch cassie_rl_ros render.launch.py record:=true bag:=bags/walk1
    ros2 run teleop_twist_keyboard teleop_twist_keyboard --ros-args -r cmd_vel:=/cassie/cmd_vel

Without a ROS install, ``cassie-rl render --ros`` starts the same nodes with the same parameters
(``cassie_rl_ros/bringup.py``; keep the two in step).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction, Shutdown
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

# name -> (default, description); the same as RENDER_ARGUMENTS in cassie_rl_ros/bringup.py.
ARGUMENTS = {
    'variant': ('regular', 'spring variant of the simulated robot: regular | stiff | soft'),
    'policy': ('', "saved policy (run folder, checkpoint or policy.safetensors); '' = the "
               'shipped default policy'),
    'speed': ('0.0', 'initial forward speed command (m/s)'),
    'video': ('', 'headless: render offscreen to this MP4 (or PNG frames into this folder) '
              "instead of opening a window; '' = window"),
    'seconds': ('0.0', 'headless: stop recording the video after this much sim time (0: until '
                'shutdown)'),
    'record': ('false', 'also record the topics to a rosbag2 bag'),
    'bag': ('cassie_bag', 'bag folder to create when record is true (must not exist)'),
}
RECORDED_TOPICS = ['/clock', '/cassie/joint_states', '/cassie/imu', '/cassie/ground_truth',
                   '/cassie/pd_targets', '/cassie/policy_action', '/cassie/cmd_vel',
                   '/cassie/step_frequency', '/cassie/foot_forces/left',
                   '/cassie/foot_forces/right', '/cassie/foot_positions/left',
                   '/cassie/foot_positions/right', '/cassie/state_estimate']


def simulator_matching_the_policy(context):
    """The simulator in real time, with the physics timestep, actuators and gains the policy was
    trained with (cassie_rl_ros.bringup.render_sim_parameters)."""
    from cassie_rl_ros.bringup import render_sim_parameters

    matching = render_sim_parameters(LaunchConfiguration('policy').perform(context))
    sim_yaml = PathJoinSubstitution([FindPackageShare('cassie_rl_ros'), 'config', 'sim.yaml'])
    return [Node(package='cassie_rl_ros', executable='sim_node', name='sim_node',
                 output='screen',
                 parameters=[sim_yaml, {'variant': LaunchConfiguration('variant'),
                                        'mode': 'realtime', **matching}])]


def generate_launch_description():
    arguments = [DeclareLaunchArgument(name, default_value=default, description=description)
                 for name, (default, description) in ARGUMENTS.items()]
    sim = OpaqueFunction(function=simulator_matching_the_policy)
    policy = Node(package='cassie_rl_ros', executable='policy_node', name='policy_node',
                  output='screen',
                  parameters=[{'policy': ParameterValue(LaunchConfiguration('policy'),
                                                        value_type=str),
                               'speed': ParameterValue(LaunchConfiguration('speed'),
                                                       value_type=float),
                               'use_sim_time': True, 'reset_sim_on_start': True}])
    # Closing the window, or a finished video, ends the whole launch.
    viewer = Node(package='cassie_rl_ros', executable='viewer_node', name='viewer_node',
                  output='screen', on_exit=Shutdown(reason='viewer closed'),
                  parameters=[{'use_sim_time': True,
                               'speed': ParameterValue(LaunchConfiguration('speed'),
                                                       value_type=float),
                               'video': ParameterValue(LaunchConfiguration('video'),
                                                       value_type=str),
                               'seconds': ParameterValue(LaunchConfiguration('seconds'),
                                                         value_type=float)}])
    record = ExecuteProcess(
        cmd=['ros2', 'bag', 'record', '-o', LaunchConfiguration('bag'), '--topics',
             *RECORDED_TOPICS],
        output='screen', condition=IfCondition(LaunchConfiguration('record')))
    return LaunchDescription([*arguments, sim, policy, viewer, record])
