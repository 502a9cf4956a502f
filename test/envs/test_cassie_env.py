"""CassieEnv: the VecEnv contract, observation layouts, mirror symmetry, rewards and configs."""

import numpy as np
import pytest

from cassie_rl_ros.envs.cassie_env import CassieEnv, CassieEnvConfig, TermConfig
from cassie_rl_ros.envs.observations import (ObservationBuilder, ObservationConfig, TaskInputs,
                                             action_mirror_matrix)
from cassie_rl_ros.envs.reference import (ReferenceError, ReferenceTrajectory, load_reference,
                                          save_reference)
from cassie_rl_ros.envs.rewards import REWARD_TERMS, StepContext
from cassie_rl_ros.envs.vec_env import check_mirror_matrix
from cassie_sim_ros import constants as C
from cassie_sim_ros.config import ConfigError, apply_overrides, from_dict, to_dict
from cassie_sim_ros.model import STANDING_QPOS, mirror_qpos, mirror_qvel
from cassie_sim_ros.sim import CassieSim, SimConfig

FAST = SimConfig(timestep=0.002, actuator="fast")


def small_config(**changes) -> CassieEnvConfig:
    return CassieEnvConfig(**{"sim": FAST, "policy_substeps": 15, **changes})


@pytest.fixture(scope="module")
def reference_file(tmp_path_factory):
    """A short trajectory in the original .bin format, recorded from the project's sim."""
    sim = CassieSim(FAST)
    rows = []
    for k in range(40):
        qpos, qvel = sim.qpos[0], sim.qvel[0]
        motor_q, motor_qd = sim.motor_state()
        rows.append((k * 0.002, qpos, qvel, sim.motor_torque()[0], motor_q[0], motor_qd[0]))
        sim.step(1)
    traj = ReferenceTrajectory(*(np.array([r[i] for r in rows]) for i in range(6)))
    path = tmp_path_factory.mktemp("ref") / "stand.bin"
    save_reference(path, traj)
    return path


@pytest.mark.parametrize("changes", [
    {},
    {"observation": ObservationConfig(state="true_state")},
    {"observation": ObservationConfig(command="full", step_frequency=False, clock=False)},
    {"privileged_critic": False},
    {"observation": ObservationConfig(state="state_est")},
    {"randomization": from_dict(type(CassieEnvConfig().randomization), {"enabled": True})},
])
def test_every_variant_resets_and_steps_with_finite_outputs(changes):
    env = CassieEnv(small_config(**changes), num_envs=3)
    obs = env.reset()
    assert obs.shape == (3, env.num_obs) and obs.dtype == np.float32
    for _ in range(5):
        obs, rew, done, extras = env.step(np.zeros((3, 10), np.float32))
    assert np.isfinite(obs).all() and np.isfinite(rew).all()
    assert rew.shape == (3,) and done.dtype == bool
    assert set(extras) >= {"time_outs", "terminal_obs", "log"}
    check_mirror_matrix(env.obs_mirror, env.num_obs, "obs")
    check_mirror_matrix(env.action_mirror, 10, "action")
    if env.num_critic_obs:
        assert extras["critic_obs"].shape == (3, env.num_critic_obs)


def test_reference_variants_use_the_trajectory(reference_file):
    env = CassieEnv(small_config(action="delta", reference_path=str(reference_file),
                                 observation=ObservationConfig(reference=True, clock=False),
                                 rewards={"imitation_joints": TermConfig(0.5),
                                          "imitation_com": TermConfig(0.3),
                                          "imitation_orientation": TermConfig(0.1),
                                          "imitation_spring": TermConfig(0.1)}), num_envs=2)
    # robot sensors 39 + reference state 40 + forward command + stepping frequency
    assert env.num_obs == 39 + 40 + 1 + 1
    _, rew, _, extras = env.step(np.zeros((2, 10), np.float32))
    # Starting on the trajectory and holding its pose, the imitation reward is high.
    assert extras["log"]["reward/imitation_joints"] > 0.8
    assert np.all(rew > 0.5)


def test_reference_files_that_are_not_trajectories_are_refused(tmp_path, reference_file):
    truncated = tmp_path / "cut.bin"
    truncated.write_bytes(reference_file.read_bytes()[:-7])
    with pytest.raises(ReferenceError, match="truncated"):
        load_reference(truncated)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(np.random.default_rng(0).random(98 * 3).tobytes())
    with pytest.raises(ReferenceError, match="quaternion"):
        load_reference(garbage)
    assert load_reference(reference_file).qpos.shape == (40, 35)


def test_mirrored_robot_with_mirrored_actions_sees_mirrored_observations():
    """Run one sim from a state and another from its mirror image with mirrored actions."""
    cfg = small_config(privileged_critic=False,
                       observation=ObservationConfig(command="full"),
                       reset=from_dict(type(CassieEnvConfig().reset),
                                       {"random_heading": False, "random_phase": False,
                                        "motor_noise": 0.0, "velocity_noise": 0.0}))
    env_a, env_b = CassieEnv(cfg, 1), CassieEnv(cfg, 1)
    rng = np.random.default_rng(3)
    qpos = STANDING_QPOS.copy()
    qpos[[7, 8, 9, 14, 20]] += rng.normal(0, 0.05, 5)
    qvel = np.zeros(32)
    qvel[[6, 7, 8]] = rng.normal(0, 0.2, 3)
    env_a.sim.reset(qpos=qpos, qvel=qvel)
    env_b.sim.reset(qpos=mirror_qpos(qpos), qvel=mirror_qvel(qvel))
    env_a.set_commands(command=np.array([[0.5, 0.2, 0.1]]))
    env_b.set_commands(command=np.array([[0.5, -0.2, -0.1]]))
    env_b.task.phase[:] = 0.5  # half a cycle later the legs have swapped roles
    env_a.task.target_heading[:] = 0.3
    env_b.task.target_heading[:] = -0.3
    m_s, m_a = env_a.obs_mirror, env_a.action_mirror
    for _ in range(8):
        action = rng.normal(0, 0.1, (1, 10)).astype(np.float32)
        obs_a, *_ = env_a.step(action)
        obs_b, *_ = env_b.step(action @ m_a.T)
        np.testing.assert_allclose(obs_b[0], m_s @ obs_a[0], atol=2e-2)
    # and a broken mirror matrix would not pass: the observation is far from symmetric
    assert np.abs(obs_b[0] - obs_a[0]).max() > 0.05


def test_actions_are_offsets_from_the_neutral_pose_and_non_finite_ones_are_dropped():
    env = CassieEnv(small_config(), num_envs=2)
    action = np.zeros((2, 10), np.float32)
    action[0, 3] = 0.2
    action[1, :] = np.nan
    env.step(action)
    targets = env.sim.pd_command()["p_target"]
    np.testing.assert_allclose(targets[0, 3], C.NEUTRAL_MOTOR_OFFSET[3] + 0.2)
    np.testing.assert_allclose(targets[1], C.NEUTRAL_MOTOR_OFFSET)


def test_falling_terminates_and_the_env_resets_itself():
    env = CassieEnv(small_config(), num_envs=2)
    for _ in range(120):  # a fixed pose does not keep Cassie up
        _, _, done, extras = env.step(np.zeros((2, 10), np.float32))
        if done.any():
            break
    assert done.any() and not extras["time_outs"][done].any()
    assert (env.sim.pelvis_pose()[0][done, 2] > 0.9).all()  # back on its feet


def test_reset_can_start_the_robot_moving_at_the_commanded_velocity():
    reset = type(CassieEnvConfig().reset)
    command = from_dict(type(CassieEnvConfig().command),
                        {"forward": [0.8, 0.8], "lateral": [-0.2, -0.2], "zero_probability": 0.0})
    for fraction in (0.0, 0.5):
        env = CassieEnv(small_config(command=command,
                                     reset=from_dict(reset, {"command_velocity": fraction})),
                        num_envs=3)
        env.reset()
        heading = env.task.target_heading
        vel = env.sim.pelvis_twist()[0]
        c, s = np.cos(heading), np.sin(heading)
        along, across = c * vel[:, 0] + s * vel[:, 1], -s * vel[:, 0] + c * vel[:, 1]
        assert along == pytest.approx(np.full(3, 0.8 * fraction), abs=0.02)
        assert across == pytest.approx(np.full(3, -0.2 * fraction), abs=0.02)
    with pytest.raises(ConfigError, match="command_velocity.*0 to 1"):
        reset(command_velocity=1.5)


def test_the_log_reports_the_forward_speed_along_the_commanded_heading():
    command = from_dict(type(CassieEnvConfig().command),
                        {"forward": [0.6, 0.6], "zero_probability": 0.0})
    env = CassieEnv(small_config(command=command, reset=from_dict(
        type(CassieEnvConfig().reset), {"command_velocity": 1.0})), num_envs=3)
    env.reset()
    _, _, _, extras = env.step(np.zeros((3, 10)))
    heading = env.task.target_heading
    vel = env.sim.pelvis_twist()[0]
    along = np.cos(heading) * vel[:, 0] + np.sin(heading) * vel[:, 1]
    log = extras["log"]
    assert log["speed/forward"] == pytest.approx(along.mean())
    assert log["speed/command"] == pytest.approx(0.6)
    assert log["speed/forward_error"] == pytest.approx(np.abs(along - 0.6).mean())
    assert log["speed/forward"] > 0.2  # it was launched forward: the sign is right


def test_time_out_is_reported_as_truncation():
    cfg = small_config(episode_seconds=0.09, terminations={})
    env = CassieEnv(cfg, num_envs=2)
    dones = [env.step(np.zeros((2, 10), np.float32))[2] for _ in range(3)]
    assert not dones[0].any() and dones[2].all()


def test_stepping_frequency_scales_the_phase_rate():
    cfg = small_config(reset=from_dict(type(CassieEnvConfig().reset), {"random_phase": False}))
    env = CassieEnv(cfg, num_envs=2)
    env.set_commands(step_frequency=np.array([1.0, 2.0]))
    env.step(np.zeros((2, 10), np.float32))
    assert env.task.phase[1] == pytest.approx(2 * env.task.phase[0])
    assert env.task.phase[0] == pytest.approx(env.dt / cfg.gait.cycle_seconds)


def _context(n=2, **changes):
    base = dict(dt=0.03, pelvis_pos=np.tile([0, 0, 0.95], (n, 1)),
                pelvis_quat=np.tile([1.0, 0, 0, 0], (n, 1)), pelvis_vel=np.zeros((n, 3)),
                pelvis_angvel=np.zeros((n, 3)), foot_pos=np.zeros((n, 2, 3)),
                foot_vel=np.zeros((n, 2, 3)), foot_force=np.zeros((n, 2, 3)),
                motor_pos=np.zeros((n, 10)), motor_vel=np.zeros((n, 10)),
                motor_torque=np.zeros((n, 10)), shin_pos=np.zeros((n, 2)),
                action=np.zeros((n, 10)), last_action=np.zeros((n, 10)), phase=np.zeros(n),
                swing_ratio=0.4, leg_phase_offset=(0.0, 0.5), command=np.zeros((n, 3)),
                target_heading=np.zeros(n))
    base.update(changes)
    return StepContext(**base)


def test_speed_reward_peaks_at_the_commanded_speed_along_the_commanded_heading():
    heading = np.array([np.pi / 2, np.pi / 2])
    ctx = _context(pelvis_vel=np.array([[0.0, 0.5, 0], [0.5, 0.0, 0]]),
                   command=np.array([[0.5, 0, 0], [0.5, 0, 0]]), target_heading=heading)
    reward = REWARD_TERMS["forward_velocity"](ctx)
    assert reward[0] == pytest.approx(1.0) and reward[1] < 0.2


def test_lateral_position_is_the_distance_from_the_line_along_the_commanded_heading():
    # Heading +y: 2 m along it is on the line; 0.5 m to its side is off it, whichever sign.
    ctx = _context(3, pelvis_pos=np.array([[0.0, 2.0, 0.95], [0.5, 2.0, 0.95],
                                           [-0.5, 0.0, 0.95]]),
                   target_heading=np.full(3, np.pi / 2))
    reward = REWARD_TERMS["lateral_position"](ctx, scale=2.0)
    np.testing.assert_allclose(reward, [1.0, np.exp(-1.0), np.exp(-1.0)])


def test_capture_point_rewards_feet_under_where_the_pelvis_would_come_to_rest():
    # Feet at x = 0; the pelvis 0.981 m up (time constant 1/sqrt(10) s). Still over the feet:
    # 1. Moving at 0.316 m/s: the capture point lies 0.1 m ahead. Feet stepped 0.1 m ahead of a
    # moving pelvis: 1 again. Backwards as far: the same score as forwards.
    feet = np.zeros((4, 2, 3))
    feet[:, 0, 1], feet[:, 1, 1] = 0.1, -0.1
    feet[2, :, 0] = 0.1
    vel = np.zeros((4, 3))
    vel[1:3, 0], vel[3, 0] = 0.1 / np.sqrt(0.981 / 9.81), -0.1 / np.sqrt(0.981 / 9.81)
    ctx = _context(4, pelvis_pos=np.tile([0.0, 0.0, 0.981], (4, 1)), pelvis_vel=vel,
                   foot_pos=feet)
    reward = REWARD_TERMS["capture_point"](ctx, scale=10.0)
    np.testing.assert_allclose(reward, [1.0, np.exp(-1.0), 1.0, np.exp(-1.0)])


def test_swing_foot_velocity_rewards_the_swing_foot_moving_at_stride_pace_along_the_heading():
    # phase 0.8: the left foot swings. Commanded 0.4 m/s along +y: a 0.4 swing ratio wants the
    # swing foot at 1 m/s along +y; the stance foot's velocity does not count.
    heading, command = np.full(3, np.pi / 2), np.tile([0.4, 0.0, 0.0], (3, 1))
    foot_vel = np.zeros((3, 2, 3))
    foot_vel[0, 0] = [0.0, 1.0, 0.0]  # the swing foot at stride pace
    foot_vel[1, 0] = [1.0, 0.0, 0.0]  # as fast, but sideways to the heading
    foot_vel[0, 1] = foot_vel[1, 1] = [0.0, -3.0, 0.0]  # the stance foot: not this term's job
    ctx = _context(3, phase=np.full(3, 0.8), foot_vel=foot_vel, command=command,
                   target_heading=heading)
    reward = REWARD_TERMS["swing_foot_velocity"](ctx)
    assert reward[0] == pytest.approx(1.0)
    assert reward[1] == pytest.approx(np.exp(-np.sqrt(2.0)))
    assert reward[2] == pytest.approx(np.exp(-1.0))  # standing still: 1 m/s short


def test_periodic_terms_punish_force_in_swing_and_speed_in_stance():
    # phase 0.8: the left leg (offset 0) swings, the right (offset 0.5, leg phase 0.3) stands.
    phase = np.array([0.8, 0.8])
    force = np.zeros((2, 2, 3))
    force[1, 0, 2] = 200.0  # env 1 leans on its swinging left foot
    ctx = _context(phase=phase, foot_force=force)
    np.testing.assert_allclose(ctx.swing()[0], [1.0, 0.0])
    r = REWARD_TERMS["swing_foot_force"](ctx)
    assert r[0] == pytest.approx(1.0) and r[1] < 0.5
    vel = np.zeros((2, 2, 3))
    vel[1, 1, 0] = 1.0  # env 1 slides its standing right foot
    r = REWARD_TERMS["stance_foot_speed"](_context(phase=phase, foot_vel=vel))
    assert r[0] == pytest.approx(1.0) and r[1] < 0.5


def test_a_negative_alive_weight_lowers_every_step_by_that_much():
    base = {"upright": TermConfig(0.5)}
    rewards = []
    for terms in (base, {**base, "alive": TermConfig(-0.4)}):
        env = CassieEnv(small_config(rewards=terms), num_envs=2, seed=4)
        rewards.append(env.step(np.zeros((2, 10)))[1])
    np.testing.assert_allclose(rewards[1], rewards[0] - 0.4, atol=1e-6)


def test_a_user_reward_term_is_named_by_module_path(tmp_path, monkeypatch):
    (tmp_path / "my_cassie_terms.py").write_text(
        "import numpy as np\n\n"
        "def always_half(ctx):\n"
        "    return np.full(ctx.pelvis_pos.shape[0], 0.5)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = small_config(rewards={"my_cassie_terms:always_half": TermConfig(1.0)})
    env = CassieEnv(cfg, num_envs=2)
    _, rew, _, _ = env.step(np.zeros((2, 10), np.float32))
    np.testing.assert_allclose(rew, 0.5)


def test_bad_env_configs_name_the_key():
    with pytest.raises(ConfigError, match="rewards.speedy.*unknown reward term"):
        small_config(rewards={"speedy": TermConfig(1.0)})
    with pytest.raises(ConfigError, match="^env.rewards.speedy.*unknown reward term"):
        from_dict(CassieEnvConfig, {"rewards": {"speedy": {"weight": 1.0}}}, "env")
    with pytest.raises(ConfigError, match="reference_path"):
        small_config(action="delta")
    with pytest.raises(ConfigError, match="action.*'no_delta', 'delta'"):
        apply_overrides(small_config(), ["action=sideways"])
    with pytest.raises(ConfigError, match="estimator_rate"):
        small_config(observation=ObservationConfig(state="state_est"), estimator_rate=300.0)


def test_observation_builder_is_the_same_for_node_and_env():
    """The policy node builds observations from messages with this same builder."""
    env = CassieEnv(small_config(), num_envs=1)
    env.step(np.zeros((1, 10), np.float32))
    builder = ObservationBuilder(env.config.observation)
    task = TaskInputs(phase=env.task.phase.copy(), command=env.task.command.copy(),
                      step_frequency=env.task.step_frequency.copy(),
                      target_heading=env.task.target_heading.copy())
    np.testing.assert_array_equal(builder.build(env.sim.sensors(), task), env.get_observations())
    assert np.array_equal(action_mirror_matrix() @ action_mirror_matrix(), np.eye(10))


def test_saved_state_continues_bit_for_bit():
    cfg = small_config(randomization=from_dict(type(CassieEnvConfig().randomization),
                                                {"enabled": True}),
                       pushes=from_dict(type(CassieEnvConfig().pushes), {"rate": 5.0}),
                       sim=SimConfig(timestep=0.002, actuator="faithful", sensor_noise=True))
    rng = np.random.default_rng(0)
    actions = rng.normal(0, 0.1, (12, 3, 10)).astype(np.float32)
    env = CassieEnv(cfg, num_envs=3, seed=4)
    for a in actions[:6]:
        env.step(a)
    saved = env.get_state()
    expected = [env.step(a) for a in actions[6:]]
    other = CassieEnv(cfg, num_envs=3, seed=99)
    other.set_state(saved)
    for a, (obs, rew, done, _) in zip(actions[6:], expected):
        obs2, rew2, done2, _ = other.step(a)
        np.testing.assert_array_equal(obs, obs2)
        np.testing.assert_array_equal(rew, rew2)
        np.testing.assert_array_equal(done, done2)


def test_state_est_observations_come_from_the_estimator_not_ground_truth():
    env = CassieEnv(small_config(observation=ObservationConfig(state="state_est")), num_envs=2)
    names = env.obs_builder.names
    for _ in range(5):
        obs, *_ = env.step(np.zeros((2, 10), np.float32))
    height = obs[:, names.index("est_height")]
    true_z = env.sim.pelvis_pose()[0][:, 2]
    # The estimate tracks the pelvis (to centimetres) but is not a copy of the truth.
    np.testing.assert_allclose(height, true_z, atol=0.05)
    assert not np.array_equal(height, true_z.astype(np.float32))
    vx = obs[:, names.index("est_vx")]
    np.testing.assert_allclose(vx, env.sim.pelvis_twist()[0][:, 0], atol=0.1)


def test_task_inputs_are_marked_for_a_fixed_scale_in_both_observations():
    env = CassieEnv(small_config(), num_envs=1)
    names = [env.obs_builder.names[i] for i in env.fixed_scale_obs]
    assert names == ["clock_sin", "clock_cos", "cmd_vx", "step_frequency"]
    assert env.fixed_scale_critic_obs == env.fixed_scale_obs  # the critic's starts alike


def test_a_resampled_command_is_rewarded_only_after_the_policy_saw_it():
    cfg = from_dict(CassieEnvConfig, {**to_dict(small_config(terminations={})),
                                      "command": {"forward": [0.0, 1.0], "zero_probability": 0.0,
                                                  "resample_seconds": 0.03},
                                      "rewards": {"forward_velocity": {"weight": 1.0}}})
    env = CassieEnv(cfg, num_envs=4)
    obs = env.reset()
    column = env.obs_builder.names.index("cmd_vx")
    for _ in range(3):
        seen = obs[:, column].astype(np.float64)
        obs, rewards, _, _ = env.step(np.zeros((4, 10), np.float32))
        vel = env.sim.pelvis_twist()[0]
        c, s = np.cos(env.task.target_heading), np.sin(env.task.target_heading)
        forward = c * vel[:, 0] + s * vel[:, 1]
        np.testing.assert_allclose(rewards, np.exp(-4.0 * np.abs(forward - seen)), rtol=1e-5)
        assert not np.allclose(obs[:, column], seen)  # a new command for the next step


def test_a_reset_state_has_its_contact_forces_computed():
    import mujoco

    sim = CassieSim(FAST)
    sim.step(200)
    sim.reset()
    # The same state through plain MuJoCo: mj_forward computes every stage, sensors included.
    data = mujoco.MjData(sim.model)
    data.qpos[:], data.qvel[:] = sim.qpos[0], sim.qvel[0]
    mujoco.mj_forward(sim.model, data)
    np.testing.assert_allclose(sim._sensordata[0], data.sensordata, atol=1e-6)
    assert (sim.foot_forces()[0, :, 2] > 1.0).all()  # the feet touch the floor at the keyframe
