"""PolicyRunner: the deployed policy without ROS: the env's observation and action path, commands,
stale inputs, resets, and which policies it refuses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cassie_rl_ros.envs.cassie_env import CassieEnv, CassieEnvConfig
from cassie_rl_ros.envs.observations import quat_yaw
from cassie_rl_ros.policies.actor_critic import ActorCritic
from cassie_rl_ros.policy_runner import (STALE_PERIODS, PolicyError, PolicyRunner,
                                         default_policy_path, load_policy_files)
from cassie_rl_ros.training.checkpoint import load_policy, save_policy
from cassie_rl_ros.training.config import TrainConfig
from cassie_rl_ros.training.evaluate import load_policy_fn
from cassie_sim_ros import constants as C
from cassie_sim_ros.config import from_dict, to_dict
from cassie_sim_ros.sim import CassieSim
from tiny_policy import train_tiny_policy

JOINTS = list(C.MOTOR_NAMES + C.PASSIVE_JOINT_NAMES)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    return train_tiny_policy(tmp_path_factory.mktemp("policy"))


@pytest.fixture(scope="module")
def no_delta_policy_dir(tmp_path_factory):
    return train_tiny_policy(tmp_path_factory.mktemp("no_delta"), "env.action=no_delta")


@pytest.fixture(scope="module")
def gait_prior_policy_dir(tmp_path_factory):
    return train_tiny_policy(tmp_path_factory.mktemp("gait_prior"), "env.action=gait_prior",
                             "env.gait_prior.speed_spacing=0.6",
                             "env.gait_prior.phase_points=16")


@pytest.fixture
def runner(policy_dir):
    return PolicyRunner.load(policy_dir, speed=0.5)


def feed(runner: PolicyRunner, sensors, now: float, stamp_ns: int | None = None):
    """Hand the runner one sensor reading the way the simulator node publishes it: a joint
    state (motors then passive joints, float64 lists) and an IMU message (floats)."""
    position = np.concatenate([sensors.motor_position[0], sensors.joint_position[0]]).tolist()
    velocity = np.concatenate([sensors.motor_velocity[0], sensors.joint_velocity[0]]).tolist()
    effort = sensors.motor_torque[0].tolist() + [0.0] * 6
    notes = [runner.joint_state(JOINTS, position, velocity, effort, now, stamp_ns),
             runner.imu([float(x) for x in sensors.imu_orientation[0]],
                        sensors.imu_angular_velocity[0].tolist(),
                        sensors.imu_linear_acceleration[0].tolist(), now, stamp_ns)]
    return " / ".join(n for n in notes if n)


def exact_env_config(config: CassieEnvConfig) -> CassieEnvConfig:
    """The policy's env without what makes two runs differ: sensor and observation noise,
    pushes, terminations (the env would reset itself)."""
    data = to_dict(config)
    data["sim"]["sensor_noise"] = False
    data["observation"]["noise_scale"] = 0.0
    data["pushes"]["rate"] = 0.0
    data["terminations"] = {}
    return from_dict(CassieEnvConfig, data)


@pytest.mark.parametrize("action_mode", ["no_delta", "gait_prior"])
def test_node_path_gives_bit_identical_actions_to_the_env_path(request, action_mode):
    policy_dir = request.getfixturevalue(f"{action_mode}_policy_dir")
    policy_fn, env_config = load_policy_fn([str(policy_dir)])
    runner = PolicyRunner.load(policy_dir, speed=0.6)
    env = CassieEnv(exact_env_config(env_config), num_envs=1, seed=3)
    env.reset()  # random heading and phase
    env.set_commands(command=np.array([[0.6, 0.0, 0.0]]), step_frequency=np.ones(1))
    sensors = env.sim.sensors()
    # The robot knows its heading only from the IMU: anchor both there, start both in phase.
    env.task.target_heading[:] = quat_yaw(sensors.imu_orientation)
    runner.task.phase[:] = env.task.phase
    env_obs = env.obs_builder.build(sensors, env.task)
    for k in range(40):
        feed(runner, env.sim.sensors(), now=k * runner.dt)
        out = runner.step(now=k * runner.dt)
        env_action = policy_fn(env_obs)
        assert np.array_equal(out.observation, env_obs[0]), k
        assert np.array_equal(out.action, env_action[0].astype(np.float64)), k
        env_obs, _, done, _ = env.step(env_action)
        assert not done.any()
        assert np.array_equal(out.targets, env.sim.pd_command()["p_target"][0]), k
        assert runner.task.phase[0] == env.task.phase[0]
        assert runner.task.target_heading[0] == env.task.target_heading[0]


def test_an_ensemble_averages_its_members(policy_dir):
    single = PolicyRunner.load(policy_dir)
    pair = PolicyRunner.load([policy_dir, policy_dir])
    sensors = CassieSim(single.config.sim).sensors()
    for runner in (single, pair):
        feed(runner, sensors, 0.0)
    assert np.array_equal(single.step(0.0).action, pair.step(0.0).action)


def test_commands_outside_the_trained_range_are_clamped_with_a_warning(runner):
    low, high = runner.config.command.forward
    fb = runner.set_command(high + 1.0, 0.3, -2.0)
    assert fb.applied == (high, 0.0, 0.0) and fb.error is None
    assert "clamped" in fb.warning and "forward" in fb.warning and "yaw_rate" in fb.warning
    assert runner.command == (high, 0.0, 0.0)
    fb = runner.set_command(0.5 * (low + high))
    assert fb.warning is None and runner.command[0] == 0.5 * (low + high)
    low_f, high_f = runner.config.gait.step_frequency
    fb = runner.set_step_frequency(high_f + 0.5)
    assert fb.applied == (high_f,) and "clamped" in fb.warning


def test_non_finite_commands_are_ignored_with_an_error(runner):
    runner.set_command(0.5)
    for bad in ((math.nan, 0.0, 0.0), (0.2, math.inf, 0.0), (0.2, 0.0, -math.inf)):
        fb = runner.set_command(*bad)
        assert fb.error and "not finite" in fb.error and fb.warning is None
        assert runner.command == (0.5, 0.0, 0.0)
    fb = runner.set_step_frequency(math.nan)
    assert fb.error and runner.step_frequency == 1.0


def test_initial_commands_are_clamped_too(policy_dir):
    runner = PolicyRunner.load(policy_dir, speed=5.0)
    assert runner.command[0] == runner.config.command.forward[1]
    assert runner.initial_feedback[0].warning


def test_stale_inputs_stop_the_steps_until_fresh_ones_arrive(runner):
    sim = CassieSim(runner.config.sim)
    assert runner.step(0.0) is None and "waiting" in runner.stale(0.0)
    feed(runner, sim.sensors(), 1.0)
    assert runner.step(1.0 + runner.dt) is not None
    limit = 1.0 + STALE_PERIODS * runner.dt
    assert runner.stale(limit - 1e-6) is None
    assert "no joint states" in runner.stale(limit + 1e-3)
    phase = runner.task.phase[0]
    assert runner.step(limit + 1e-3) is None
    assert runner.task.phase[0] == phase  # no step, no clock
    # Only the IMU keeps coming: still stale.
    s = sim.sensors()
    runner.imu(s.imu_orientation[0], s.imu_angular_velocity[0], now=2.0)
    assert "no joint states" in runner.stale(2.0)
    feed(runner, s, 2.0)
    assert runner.step(2.0) is not None


def test_a_non_finite_action_sends_no_target(runner):
    sim = CassieSim(runner.config.sim)
    feed(runner, sim.sensors(), 0.0)
    with torch.no_grad():  # a corrupted network: the one way a finite input gives NaN
        for parameter in runner.policy.parameters():
            parameter.fill_(float("nan"))
    with pytest.raises(PolicyError, match="action is not finite"):
        runner.step(0.0)


def test_a_yaw_jump_re_anchors_the_heading_and_keeps_the_phase(runner):
    sim = CassieSim(runner.config.sim)
    assert "anchored" in feed(runner, sim.sensors(), 0.0)
    for k in range(1, 6):
        runner.step(k * runner.dt)
        assert feed(runner, sim.sensors(), k * runner.dt) == ""
    phase = runner.task.phase[0]
    turned = sim.qpos[0]
    turned[3:7] = [math.cos(1.0), 0.0, 0.0, math.sin(1.0)]  # yaw 2 rad: a reset elsewhere
    sim.reset(qpos=turned)
    note = feed(runner, sim.sensors(), 6 * runner.dt)
    assert note and "reset" in note
    assert runner.task.target_heading[0] == pytest.approx(2.0, abs=1e-6)
    assert runner.task.phase[0] == phase
    out = runner.step(6 * runner.dt)
    assert out.observation[3] == pytest.approx(0.0, abs=1e-6)  # heading error


def test_time_going_backwards_is_a_restart(runner):
    sim = CassieSim(runner.config.sim)
    feed(runner, sim.sensors(), 10.0, stamp_ns=10_000_000_000)
    runner.step(10.0)
    runner.task.target_heading[0] = 0.7
    note = feed(runner, sim.sensors(), 0.5, stamp_ns=500_000_000)
    assert note and "went back" in note
    assert runner.task.target_heading[0] == pytest.approx(0.0, abs=1e-9)
    assert runner.step(0.5) is not None


def test_inputs_received_before_the_clock_went_back_are_stale(runner):
    sim = CassieSim(runner.config.sim)
    feed(runner, sim.sensors(), 10.0)
    assert runner.step(10.0) is not None
    # The driver stops, then the system clock is stepped back 5 s (NTP): no new message tells
    # the runner about the jump, so the last inputs must not look fresh for the next 5 s.
    assert "clock went back" in runner.stale(5.0)
    assert runner.step(5.0) is None


def test_an_unstamped_driver_is_acted_on_once_per_new_pair(runner):
    sim = CassieSim(runner.config.sim)
    s = sim.sensors()
    position = np.concatenate([s.motor_position[0], s.joint_position[0]])
    velocity = np.concatenate([s.motor_velocity[0], s.joint_velocity[0]])
    runner.joint_state(JOINTS, position, velocity, now=0.0)
    assert not runner.state_due()
    runner.imu(s.imu_orientation[0], s.imu_angular_velocity[0], now=0.0)
    assert runner.state_due()
    assert runner.step(0.0) is not None
    assert not runner.state_due()
    runner.imu(s.imu_orientation[0], s.imu_angular_velocity[0], now=0.01)
    assert not runner.state_due()  # only one stream moved on
    runner.joint_state(JOINTS, position, velocity, now=0.02)
    assert runner.state_due()


def test_state_due_waits_for_a_matching_pair_one_policy_period_apart(runner):
    sim = CassieSim(runner.config.sim)
    s = sim.sensors()
    dt_ns = runner.dt_ns
    position = np.concatenate([s.motor_position[0], s.joint_position[0]])
    velocity = np.concatenate([s.motor_velocity[0], s.joint_velocity[0]])
    runner.joint_state(JOINTS, position, velocity, now=0.0, stamp_ns=0)
    assert not runner.state_due()  # no IMU yet
    runner.imu(s.imu_orientation[0], s.imu_angular_velocity[0], now=0.0, stamp_ns=0)
    assert runner.state_due()
    runner.step(0.0)
    assert not runner.state_due()  # acted on it
    period = dt_ns // 6  # a state rate six times the policy rate
    for k in range(1, 6):
        runner.joint_state(JOINTS, position, velocity, now=0.0, stamp_ns=k * period)
        runner.imu(s.imu_orientation[0], s.imu_angular_velocity[0], now=0.0,
                   stamp_ns=k * period)
        assert not runner.state_due()
    runner.joint_state(JOINTS, position, velocity, now=0.0, stamp_ns=dt_ns)
    assert not runner.state_due()  # the IMU of that instant has not come yet
    runner.imu(s.imu_orientation[0], s.imu_angular_velocity[0], now=0.0, stamp_ns=dt_ns)
    assert runner.state_due()


def test_a_state_before_the_next_due_time_is_reported_as_early(runner):
    sim = CassieSim(runner.config.sim)
    feed(runner, sim.sensors(), 0.0, stamp_ns=0)
    assert runner.early_state() is None
    runner.step(0.0)
    assert runner.early_state() is None  # acted on it
    early = int(runner.dt_ns * 5 / 6)  # a lockstep driver at a shorter policy period
    feed(runner, sim.sensors(), 0.0, stamp_ns=early)
    assert not runner.state_due() and runner.early_state() == early
    feed(runner, sim.sensors(), 0.0, stamp_ns=runner.dt_ns)
    assert runner.state_due() and runner.early_state() is None


def test_malformed_inputs_raise_and_leave_the_last_good_ones(runner):
    sim = CassieSim(runner.config.sim)
    s = sim.sensors()
    feed(runner, s, 0.0)
    position = np.concatenate([s.motor_position[0], s.joint_position[0]])
    velocity = np.concatenate([s.motor_velocity[0], s.joint_velocity[0]])
    with pytest.raises(ValueError, match="lack left_hip_roll"):
        runner.joint_state(JOINTS[1:], position[1:], velocity[1:], now=0.01)
    bad = position.copy()
    bad[3] = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        runner.joint_state(JOINTS, bad, velocity, now=0.01)
    with pytest.raises(ValueError, match="unit quaternion"):
        runner.imu([0.5, 0.0, 0.0, 0.0], [0.0] * 3, now=0.01)
    # Names in any order are fine.
    order = np.random.default_rng(0).permutation(len(JOINTS))
    runner.joint_state([JOINTS[i] for i in order], position[order], velocity[order], now=0.02)
    assert np.array_equal(runner.sensors().motor_position[0], s.motor_position[0])


def _save_untrained(directory, env: dict, base: TrainConfig | None = None) -> None:
    data = to_dict(base or TrainConfig())
    data["env"].update(env)
    cfg = from_dict(TrainConfig, data)
    env_obj = CassieEnv(cfg.env, num_envs=1)
    policy = ActorCritic(env_obj.num_obs, 10, cfg.policy)
    directory.mkdir()
    save_policy(policy, cfg, directory)


def test_a_true_state_policy_is_refused_with_a_clear_error(tmp_path):
    _save_untrained(tmp_path / "truth", {"observation": {"state": "true_state"}})
    with pytest.raises(PolicyError, match="true_state.*no robot reports"):
        PolicyRunner.load(tmp_path / "truth")


def test_state_est_policies_run_the_envs_estimator_on_the_same_readings(tmp_path):
    policy_dir = train_tiny_policy(tmp_path, "env.observation.state=state_est")
    policy_fn, env_config = load_policy_fn([str(policy_dir)])
    runner = PolicyRunner.load(policy_dir, speed=0.6)
    env = CassieEnv(exact_env_config(env_config), num_envs=1, seed=3)
    # Hand the runner every reading the env's estimator gets, as a driver would publish them.
    period_ns = round(runner.estimator.dt * 1e9)
    clock = {"stamp": 0}
    update = env.estimator.update

    def update_both(sensors, ids=None, return_state=True):
        clock["stamp"] += period_ns
        runner.readings(sensors, clock["stamp"] * 1e-9, clock["stamp"])
        return update(sensors, ids=ids, return_state=return_state)

    env.estimator.update = update_both
    env.reset()
    env.set_commands(command=np.array([[0.6, 0.0, 0.0]]), step_frequency=np.ones(1))
    runner.task.phase[:] = env.task.phase
    env.task.target_heading[:] = runner.task.target_heading
    env_obs = env.obs_builder.build(env.sim.sensors(), env.task,
                                    estimate=env.estimator.state())
    for k in range(20):
        out = runner.step(clock["stamp"] * 1e-9)
        env_action = policy_fn(env_obs)
        assert np.array_equal(out.observation, env_obs[0]), k
        assert np.array_equal(out.action, env_action[0].astype(np.float64)), k
        env_obs, _, _, _ = env.step(env_action)


def test_a_state_est_policy_stops_when_its_estimator_stops_updating(tmp_path):
    runner = PolicyRunner.load(train_tiny_policy(tmp_path, "env.observation.state=state_est"))
    sim = CassieSim(runner.config.sim)
    period = runner.dt_ns // 4
    for k in range(8):
        feed(runner, sim.sensors(), k * period * 1e-9, stamp_ns=k * period)
    assert runner.stale(8 * period * 1e-9) is None
    # Both streams keep coming, but their stamps no longer match: no pair, no update.
    s = sim.sensors()
    position = np.concatenate([s.motor_position[0], s.joint_position[0]])
    velocity = np.concatenate([s.motor_velocity[0], s.joint_velocity[0]])
    for k in range(8, 8 + 4 * (STALE_PERIODS + 1)):
        now = k * period * 1e-9
        runner.joint_state(JOINTS, position, velocity, now=now, stamp_ns=k * period)
        runner.imu(s.imu_orientation[0], s.imu_angular_velocity[0], now=now,
                   stamp_ns=k * period + 1_000_000)
    assert "no state estimator update" in runner.stale(now)


def test_a_state_est_policy_says_when_pairs_come_at_another_rate_than_its_estimator(tmp_path):
    runner = PolicyRunner.load(train_tiny_policy(tmp_path, "env.observation.state=state_est"))
    sim = CassieSim(runner.config.sim)
    period = round(runner.estimator.dt * 1e9)
    notes = [feed(runner, sim.sensors(), k * period * 1e-9, stamp_ns=k * period)
             for k in range(5)]
    assert not any("estimator_rate" in n for n in notes)
    stamps = [round(k * 1.25 * period) for k in range(5, 10)]  # 400 Hz pairs for 500 Hz
    slow = [feed(runner, sim.sensors(), t * 1e-9, stamp_ns=t) for t in stamps]
    assert sum("set estimator_rate" in n for n in slow) == 1  # said once


def test_ensemble_members_must_map_actions_alike(tmp_path, policy_dir):
    _save_untrained(tmp_path / "clip", {"action_clip": 0.5}, load_policy(policy_dir)[1])
    with pytest.raises(PolicyError, match="action_clip"):
        load_policy_files([policy_dir, tmp_path / "clip"])


def test_gait_prior_ensemble_members_must_share_the_gait(tmp_path, gait_prior_policy_dir):
    base = load_policy(gait_prior_policy_dir)[1]
    higher = to_dict(base.env)["gait_prior"] | {"step_height": 0.12}
    _save_untrained(tmp_path / "high", {"gait_prior": higher}, base)
    with pytest.raises(PolicyError, match="gait_prior"):
        load_policy_files([gait_prior_policy_dir, tmp_path / "high"])


def test_an_ensemble_takes_only_commands_every_member_was_trained_on(tmp_path, policy_dir):
    base = load_policy(policy_dir)[1]
    slow = to_dict(base.env)["command"] | {"forward": [0.0, 0.6]}
    _save_untrained(tmp_path / "slow", {"command": slow}, base)
    runner = PolicyRunner.load([policy_dir, tmp_path / "slow"], speed=1.0)
    assert runner.command[0] == pytest.approx(0.6)
    assert "clamped" in (runner.initial_feedback[0].warning or "")
    disjoint = to_dict(base.env)["command"] | {"forward": [1.5, 2.0]}
    _save_untrained(tmp_path / "fast", {"command": disjoint}, base)
    with pytest.raises(PolicyError, match="forward ranges.*nothing in common"):
        load_policy_files([policy_dir, tmp_path / "fast"])


def test_a_policy_saved_mid_curriculum_is_commanded_only_what_it_was_trained_on(tmp_path,
                                                                                policy_dir):
    from cassie_rl_ros.training.checkpoint import TRAINED_FORWARD_MAX, load_checkpoint

    run = train_tiny_policy(tmp_path, "env.command.curriculum.enabled=true",
                            "env.command.curriculum.start=0.3", "runner.eval_interval=1")
    for saved in (run / "checkpoint", run / "best"):
        policy, cfg = load_policy(saved)
        assert cfg.env.command.forward == pytest.approx((0.0, 0.3)), saved
    # The checkpoint's own config keeps the whole range: a resumed run keeps its curriculum.
    assert load_checkpoint(run / "checkpoint").config.env.command.forward == (0.0, 1.0)
    runner = PolicyRunner.load(run / "best", speed=0.8)
    assert runner.command[0] == pytest.approx(0.3)
    assert "clamped" in (runner.initial_feedback[0].warning or "")
    # The limit travels in the policy file (copied as is by `cassie-rl ship`); a policy
    # trained on the whole range carries none.
    from safetensors import safe_open
    for saved, limit in ((run / "best", "0.3"), (policy_dir / "checkpoint", None)):
        with safe_open(str(saved / "policy.safetensors"), "pt") as f:
            assert f.metadata().get(TRAINED_FORWARD_MAX) == limit


def test_missing_policies_say_where_they_looked(tmp_path):
    with pytest.raises(PolicyError, match="no such policy"):
        PolicyRunner.load(tmp_path / "nothing")
    try:
        path = default_policy_path()
    except PolicyError as err:  # none shipped yet
        assert "no default policy" in str(err) and "policies/walk" in str(err)
    else:
        assert path.exists()


@pytest.fixture(autouse=True)
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
