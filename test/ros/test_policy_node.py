"""policy_node over real Fast DDS: it drives the simulator node, obeys and checks commands, stops
on stale inputs, and acts exactly as the training env does.

Nodes run as subprocesses in a ROS domain of their own (``ros_env`` in test/conftest.py); the
test's probe plays the driver or listens in. No timing is asserted.
"""

from __future__ import annotations

import ast
import math
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import Twist  # noqa: E402
from sensor_msgs.msg import Imu, JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from cassie_rl_ros.bringup import (POLICY_NODE, RECORDED_TOPICS, RENDER_ARGUMENTS,  # noqa: E402
                                   SIM_NODE, lockstep_sim_parameters, node_command,
                                   render_nodes, render_sim_parameters)
from cassie_rl_ros.envs.cassie_env import CassieEnv, CassieEnvConfig  # noqa: E402
from cassie_rl_ros.training.evaluate import load_policy_fn  # noqa: E402
from cassie_sim_ros import constants as C  # noqa: E402
from cassie_sim_ros.config import from_dict, to_dict  # noqa: E402
from cassie_sim_ros.sim import CassieSim, SimConfig  # noqa: E402
from tiny_policy import train_tiny_policy  # noqa: E402
from ros_probe import ProbeNode, log_of, sched_fifo_threads  # noqa: E402  (conftest: sys.path)

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch" / "render.launch.py"
JOINTS = list(C.MOTOR_NAMES + C.PASSIVE_JOINT_NAMES)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    return train_tiny_policy(tmp_path_factory.mktemp("policy"))


class Probe(ProbeNode):
    """The test's own node: listens to the policy node and can play the robot's driver."""

    def __init__(self, name: str = "probe", read_targets: bool = True):
        super().__init__(name)
        self.actions: list[list[float]] = []
        self.targets: list[JointState] = []
        self.node.create_subscription(Float64MultiArray, "/cassie/policy_action",
                                      lambda m: self.actions.append(list(m.data)), 1000)
        if read_targets:
            self.read_targets()
        self.cmd_vel = self.node.create_publisher(Twist, "/cassie/cmd_vel", 10)
        self.joint_states = self.node.create_publisher(JointState, "/cassie/joint_states", 10)
        self.imu = self.node.create_publisher(Imu, "/cassie/imu", 10)
        self.reset = self.node.create_client(Trigger, "/cassie/reset")

    def read_targets(self):
        self.node.create_subscription(JointState, "/cassie/pd_targets", self.targets.append,
                                      1000)

    def publish_state(self, sensors, stamp_s: float):
        """One state as the simulator node publishes it."""
        sec, nanosec = divmod(round(stamp_s * 1e9), 1_000_000_000)
        js = JointState(name=JOINTS)
        js.header.stamp.sec, js.header.stamp.nanosec = sec, nanosec
        js.position = np.concatenate([sensors.motor_position[0],
                                      sensors.joint_position[0]]).tolist()
        js.velocity = np.concatenate([sensors.motor_velocity[0],
                                      sensors.joint_velocity[0]]).tolist()
        imu = Imu()
        imu.header.stamp = js.header.stamp
        q = sensors.imu_orientation[0]
        imu.orientation.w, imu.orientation.x, imu.orientation.y, imu.orientation.z = map(float, q)
        g = sensors.imu_angular_velocity[0]
        imu.angular_velocity.x, imu.angular_velocity.y, imu.angular_velocity.z = map(float, g)
        self.joint_states.publish(js)
        self.imu.publish(imu)


@pytest.fixture
def probe(ros_env):
    p = Probe()
    yield p
    p.close()


def wait_for_log(proc, text: str, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while text not in log_of(proc):
        if time.monotonic() > end or proc.poll() is not None:
            return text in log_of(proc)
        time.sleep(0.05)
    return True


def env_actions(policy_dir: Path, speed: float, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The training env's actions from the standing start, without noise or randomness, and
    its PD targets of the first step."""
    policy_fn, env_config = load_policy_fn([str(policy_dir)])
    data = to_dict(env_config)
    data["sim"]["sensor_noise"] = False
    data["observation"]["noise_scale"] = 0.0
    data["pushes"]["rate"] = 0.0
    data["terminations"] = {}
    data["reset"].update(random_heading=False, random_phase=False, motor_noise=0.0,
                         velocity_noise=0.0, command_velocity=0.0)  # standing, as the sim node
    env = CassieEnv(from_dict(CassieEnvConfig, data), num_envs=1)
    env.reset()
    env.set_commands(command=np.array([[speed, 0.0, 0.0]]), step_frequency=np.ones(1))
    obs = env.obs_builder.build(env.sim.sensors(), env.task)  # with the command just set
    actions, first_targets = [], None
    for _ in range(steps):
        action = policy_fn(obs)
        actions.append(action[0].astype(np.float64))
        obs, _, _, _ = env.step(action)
        if first_targets is None:
            first_targets = env.sim.pd_command()["p_target"][0]
    return np.array(actions), first_targets


# ------------------------------------------------------------------ tests


def test_policy_node_drives_the_lockstep_simulator_exactly_as_the_env(start_node, probe,
                                                                       policy_dir):
    import torch

    torch.set_num_threads(1)  # the node runs torch on one thread too
    steps, speed = 40, 0.6
    _, env_config = load_policy_fn([str(policy_dir)])
    policy = start_node(list(node_command(POLICY_NODE, {
        "policy": str(policy_dir), "speed": speed, "use_sim_time": True, "trigger": "state"})))
    # The policy node first, so the simulator's one initial state finds its subscriptions.
    assert probe.spin_until(lambda: probe.node.count_subscribers("/cassie/imu") > 0
                            or policy.poll() is not None, 60.0), log_of(policy)
    assert policy.poll() is None, log_of(policy)
    sim = start_node(list(node_command(SIM_NODE, lockstep_sim_parameters(
        env_config, sensor_noise=False))))
    if not probe.spin_until(lambda: probe.actions, 20.0):
        # The initial state went out before every subscription matched: a reset sends it again.
        assert probe.reset.wait_for_service(timeout_sec=10.0), log_of(sim)
        probe.reset.call_async(Trigger.Request())
    assert probe.spin_until(lambda: len(probe.actions) >= steps, 60.0), (
        len(probe.actions), log_of(policy), log_of(sim))

    expected, expected_targets = env_actions(policy_dir, speed, steps)
    got = np.array(probe.actions[:steps])
    assert got.shape == (steps, 10)
    assert np.array_equal(got, expected), np.abs(got - expected).max()
    targets = probe.targets[0]
    assert list(targets.name) == list(C.MOTOR_NAMES)
    assert list(targets.velocity) == [0.0] * 10 and list(targets.effort) == [0.0] * 10
    # The env's targets: the action on its origin (the gait prior's pose at the start phase).
    assert np.array_equal(np.array(targets.position), expected_targets)
    assert "watchdog" not in log_of(sim)  # every target arrived in time


def test_commands_are_clamped_non_finite_ones_ignored_and_stale_inputs_stop_it(
        start_node, probe, policy_dir):
    node = start_node(list(node_command(POLICY_NODE, {
        "policy": str(policy_dir), "speed": 0.3, "trigger": "timer"})))
    sim = CassieSim(SimConfig(timestep=0.002))
    assert wait_for_log(node, "trigger timer", 60.0), log_of(node)
    clock = {"t": 0.0}

    def drive():  # the robot's driver at 100 Hz
        clock["t"] += 0.01
        probe.publish_state(sim.sensors(), clock["t"])

    assert probe.spin_until(lambda: probe.cmd_vel.get_subscription_count() > 0
                            and probe.joint_states.get_subscription_count() > 0, 20.0)
    probe.spin_for(1.0, drive)
    assert probe.spin_until(lambda: probe.targets, 10.0), log_of(node)
    assert wait_for_log(node, "inputs fresh: publishing"), log_of(node)

    probe.cmd_vel.publish(Twist())  # zero: inside the trained range
    twist = Twist()
    twist.linear.x, twist.angular.z = 7.0, 1.0
    probe.cmd_vel.publish(twist)
    probe.spin_for(0.3, drive)
    assert wait_for_log(node, "clamped"), log_of(node)
    assert "forward 7 m/s -> 1" in log_of(node) and "yaw_rate 1 rad/s -> 0" in log_of(node)
    assert wait_for_log(node, "velocity command now 1, 0, 0"), log_of(node)
    twist.linear.x = math.nan
    probe.cmd_vel.publish(twist)
    probe.spin_for(0.3, drive)
    assert wait_for_log(node, "not finite: ignored, keeping (1, 0, 0)"), log_of(node)

    # The driver stops: after 3 policy periods nothing more is published.
    probe.spin_for(0.5)
    assert wait_for_log(node, "inputs stale"), log_of(node)
    count = len(probe.targets)
    probe.spin_for(0.5)
    assert len(probe.targets) == count
    # It comes back: so does the policy.
    probe.spin_for(0.5, drive)
    assert len(probe.targets) > count
    assert node.poll() is None and "Traceback" not in log_of(node)


def test_a_lockstep_driver_with_a_shorter_period_is_named_not_waited_on_silently(
        start_node, probe, policy_dir):
    node = start_node(list(node_command(POLICY_NODE, {"policy": str(policy_dir)})))
    sim = CassieSim(SimConfig(timestep=0.002))
    assert wait_for_log(node, "trigger state", 60.0), log_of(node)
    assert probe.spin_until(lambda: probe.imu.get_subscription_count() > 0
                            and probe.joint_states.get_subscription_count() > 0, 20.0)
    probe.publish_state(sim.sensors(), 1.0)
    assert probe.spin_until(lambda: probe.targets, 10.0), log_of(node)
    probe.publish_state(sim.sensors(), 1.025)  # a driver stepping 25 ms for a 30 ms policy
    probe.spin_for(2.0)
    assert len(probe.targets) == 1
    assert wait_for_log(node, "Set the driver's policy_period to 0.03", 5.0), log_of(node)


class Recorder(ProbeNode):
    """Another reader of the targets (a bag recorder, a plotter): not the driver."""

    def __init__(self, listen: bool = True):
        super().__init__("recorder")
        self.targets: list[JointState] = []
        if listen:
            self.listen()

    def listen(self):
        self.node.create_subscription(JointState, "/cassie/pd_targets", self.targets.append, 100)


@pytest.fixture
def driver_without_reader(ros_env):
    """A driver that publishes states but does not read the targets yet, and a recorder."""
    driver, recorder = Probe("driver", read_targets=False), Recorder()
    yield driver, recorder
    recorder.close()
    driver.close()


class StateStream:
    """The driver's states every policy period (30 ms of stamps) while either node spins."""

    def __init__(self, driver: Probe):
        self.driver, self.t = driver, 1.0
        self.sensors = CassieSim(SimConfig(timestep=0.002)).sensors()

    def __call__(self):
        self.t += 0.03
        self.driver.publish_state(self.sensors, self.t)


def states_with_only_a_recorder_listening(start_node, driver, recorder, policy_dir):
    """Start the policy node; stream states for 1 s while only the recorder reads targets."""
    node = start_node(list(node_command(POLICY_NODE, {"policy": str(policy_dir)})))
    assert wait_for_log(node, "trigger state", 60.0), log_of(node)
    assert driver.spin_until(lambda: driver.imu.get_subscription_count() > 0
                             and driver.joint_states.get_subscription_count() > 0, 20.0)
    assert recorder.spin_until(
        lambda: recorder.node.count_publishers("/cassie/pd_targets") > 0, 20.0)
    stream = StateStream(driver)
    for _ in range(20):  # 1 s
        driver.spin_for(0.025, stream, period=0.03)
        recorder.spin_for(0.025)
    return node, stream


def test_the_first_target_waits_for_the_driver_not_for_any_reader(
        start_node, driver_without_reader, policy_dir):
    """A lockstep driver waits for the target of its first state: sent while only a recorder
    listened, it would reach the recorder and never the driver."""
    driver, recorder = driver_without_reader
    node, stream = states_with_only_a_recorder_listening(start_node, driver, recorder,
                                                         policy_dir)
    assert recorder.targets == [], log_of(node)
    driver.read_targets()
    assert driver.spin_until(lambda: driver.targets, 10.0, stream, period=0.03), log_of(node)
    assert recorder.spin_until(lambda: recorder.targets, 10.0)
    assert "no node both publishes" not in log_of(node)


def test_a_driver_split_over_two_nodes_gets_targets_after_a_warning(
        start_node, driver_without_reader, policy_dir):
    driver, recorder = driver_without_reader
    node, stream = states_with_only_a_recorder_listening(start_node, driver, recorder,
                                                         policy_dir)
    for _ in range(400):  # up to 20 s
        driver.spin_for(0.025, stream, period=0.03)
        recorder.spin_for(0.025)
        if recorder.targets:
            break
    assert recorder.targets, log_of(node)
    assert "no node both publishes /cassie/joint_states and reads /cassie/pd_targets" in \
        log_of(node)


def test_wait_for_readers_holds_the_first_target_until_a_recorder_reads_too(
        start_node, ros_env, policy_dir):
    """``wait_for_readers: 2``: a recorder started beforehand hears the first target."""
    driver = Probe("driver")
    recorder = None
    try:
        node = start_node(list(node_command(POLICY_NODE, {"policy": str(policy_dir),
                                                          "wait_for_readers": 2})))
        assert wait_for_log(node, "trigger state", 60.0), log_of(node)
        assert driver.spin_until(lambda: driver.imu.get_subscription_count() > 0
                                 and driver.joint_states.get_subscription_count() > 0, 20.0)
        stream = StateStream(driver)
        driver.spin_for(1.0, stream, period=0.03)
        assert driver.targets == [], "a target went out with one reader"
        assert wait_for_log(node, "the first target waits for 2 matched readers of "
                            "/cassie/pd_targets (wait_for_readers); 1 so far", 15.0), log_of(node)
        # As `ros2 bag record` does: subscribe once the graph lists the publisher, so this side
        # matches at once; the policy node's wait covers the publisher's side.
        recorder = Recorder(listen=False)
        assert recorder.spin_until(lambda: any(
            i.node_name == "policy_node"
            for i in recorder.node.get_publishers_info_by_topic("/cassie/pd_targets")), 20.0)
        recorder.listen()
        assert driver.spin_until(lambda: driver.targets, 20.0, stream, period=0.03), \
            log_of(node)
        assert recorder.spin_until(lambda: recorder.targets, 10.0)
        assert recorder.targets[0].header.stamp == driver.targets[0].header.stamp
    finally:
        if recorder is not None:
            recorder.close()
        driver.close()


def _exits_with(params: dict, message: str, ros_env) -> None:
    import subprocess

    result = subprocess.run(list(node_command(POLICY_NODE, params)), env=ros_env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_unusable_policies_exit_with_a_clear_message(ros_env, tmp_path):
    _exits_with({"policy": str(tmp_path / "none")}, "no such policy", ros_env)
    _exits_with({"policy": str(tmp_path / "none"), "wait_for_readers": 0},
                "wait_for_readers: 0 is not an integer >= 1", ros_env)


def test_rt_priority_runs_the_policy_steps_on_sched_fifo_or_says_why_not(
        start_node, ros_env, policy_dir):
    _exits_with({"policy": str(policy_dir), "rt_priority": 99},
                "rt_priority: 99 is not allowed", ros_env)
    node = start_node(list(node_command(POLICY_NODE, {"policy": str(policy_dir),
                                                      "rt_priority": 10})))
    end = time.monotonic() + 60.0
    while time.monotonic() < end and node.poll() is None:
        fifo = sched_fifo_threads(node.pid)
        refused = "rt_priority 10 refused" in log_of(node)
        if fifo or refused:
            break
        time.sleep(0.05)
    if refused:  # no right to it here: a warning, normal scheduling
        assert fifo == {}
    else:  # the thread that runs the callbacks only, not the main thread
        assert list(fifo.values()) == [10] and node.pid not in fifo, (fifo, log_of(node))


def test_without_a_policy_it_runs_the_shipped_default(start_node, ros_env):
    from cassie_rl_ros.policy_runner import PolicyError, default_policy_path

    try:
        shipped = default_policy_path()
    except PolicyError:  # none shipped: it says so
        return _exits_with({}, "no default policy", ros_env)
    node = start_node(list(node_command(POLICY_NODE, {})))
    assert wait_for_log(node, f"policy {shipped}: sensors observations", 60.0), log_of(node)


def test_render_runs_the_simulator_as_the_policy_was_trained(tmp_path):
    policy = train_tiny_policy(tmp_path, "env.sim.timestep=0.001", "env.policy_substeps=30",
                               "env.sim.actuator=fast", "env.sim.kp=[90, 90, 80, 90, 40, "
                               "90, 90, 80, 90, 40]")
    sim = dict(arg.split(":=", 1) for arg in
               render_nodes([str(policy)])[0].argv if ":=" in arg)
    assert float(sim["timestep"]) == 0.001 and sim["actuator"] == "fast"
    assert float(sim["policy_period"]) == pytest.approx(0.03)
    assert sim["mode"] == "realtime" and sim["kp"].startswith("[90.0, 90.0, 80.0")
    # 1 kHz physics, 30 ms policy: the fastest state rate up to 400 Hz that divides both
    assert float(sim["publish_rate"]) == pytest.approx(1000.0 / 3)
    assert render_sim_parameters([str(tmp_path / "missing")]) == {}
    overridden = render_nodes([str(policy)], sim_parameters={"timestep": 0.0005})[0].argv
    assert "timestep:=0.0005" in overridden


def test_render_launch_file_matches_the_bringup():
    source = LAUNCH.read_text()
    tree = ast.parse(compile(source, str(LAUNCH), "exec", ast.PyCF_ONLY_AST))
    assert "generate_launch_description" in {n.name for n in tree.body
                                             if isinstance(n, ast.FunctionDef)}
    for name in RENDER_ARGUMENTS:
        assert f"'{name}'" in source or f'"{name}"' in source, name
    for executable in ("sim_node", "policy_node", "viewer_node"):
        assert f"executable='{executable}'" in source
    for topic in RECORDED_TOPICS:
        assert topic in source
    nodes = {n.name: n.argv for n in render_nodes(["p"], record=True, video="v.mp4")}
    assert set(nodes) == {"sim_node", "policy_node", "viewer_node", "recorder"}
    assert "mode:=realtime" in nodes["sim_node"] and "'mode': 'realtime'" in source
    assert "use_sim_time:=true" in nodes["policy_node"]
    assert "reset_sim_on_start:=true" in nodes["policy_node"]
    assert "'reset_sim_on_start': True" in source
    assert "'use_sim_time': True" in source
    assert nodes["recorder"][:3] == (sys.executable, "-m", "cassie_rl_ros.tools.record")
