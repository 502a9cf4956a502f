"""The kinematic gait of ``gait_prior`` actions: its feet follow the stride, its chains close."""

import dataclasses

import mujoco
import numpy as np
import pytest

from cassie_rl_ros.envs.actions import ActionOrigin, motor_targets
from cassie_rl_ros.envs.cassie_env import CassieEnv, CassieEnvConfig, GaitConfig
from cassie_rl_ros.envs.gait_prior import GaitPrior, GaitPriorConfig, foot_offset
from cassie_rl_ros.envs.observations import TaskInputs
from cassie_sim_ros import constants as C
from cassie_sim_ros.config import ConfigError
from cassie_sim_ros.model import MOTOR_QPOS_INDEX, STANDING_QPOS, load_model, mirror_qpos

GAIT = GaitConfig()
PRIOR = GaitPriorConfig(speeds=(0.0, 1.0), speed_spacing=0.5, phase_points=16)


@pytest.fixture(scope="module")
def prior():
    return GaitPrior(GAIT, PRIOR)


def test_a_stance_foot_stays_put_while_the_pelvis_moves_on():
    speed, cycle, swing = 0.8, GAIT.cycle_seconds, GAIT.swing_ratio
    phase = np.linspace(0.0, 1.0 - swing, 50, endpoint=False)
    forward, up = foot_offset(phase, speed, cycle, swing, step_height=0.1)
    np.testing.assert_allclose(np.diff(forward) / (np.diff(phase) * cycle), -speed)
    assert (up == 0).all()
    # The swing brings the foot from the back of the stride to its front, lifted in between.
    forward, up = foot_offset(np.array([1 - swing, 1 - swing / 2, 1 - 1e-9]), speed, cycle,
                              swing, step_height=0.1)
    half_stride = speed * (1 - swing) * cycle / 2
    np.testing.assert_allclose(forward, [-half_stride, 0.0, half_stride], atol=1e-6)
    np.testing.assert_allclose(up, [0.0, 0.1, 0.0], atol=1e-6)


def test_the_tables_soles_follow_the_gait_with_closed_chains(prior):
    model = load_model()
    data = mujoco.MjData(model)
    data.qpos[:] = STANDING_QPOS
    mujoco.mj_forward(model, data)
    standing = np.array([data.site("left_foot").xpos, data.site("right_foot").xpos])
    drop = STANDING_QPOS[2] - PRIOR.pelvis_height
    for j, speed in enumerate(prior.speeds):
        for i in range(PRIOR.phase_points):
            data.qpos[:] = prior.qpos[j, i]
            mujoco.mj_forward(model, data)
            for side, name in enumerate(("left_foot", "right_foot")):
                leg_phase = (i / PRIOR.phase_points + GAIT.leg_phase_offset[side]) % 1.0
                forward, up = foot_offset(leg_phase, speed, GAIT.cycle_seconds,
                                          GAIT.swing_ratio, PRIOR.step_height)
                want = standing[side] + [forward, 0.0, up - drop]
                np.testing.assert_allclose(data.site(name).xpos, want, atol=2e-3)
            equality = data.efc_type[:data.nefc] == mujoco.mjtConstraint.mjCNSTR_EQUALITY
            assert np.abs(data.efc_pos[:data.nefc][equality]).max() < 1e-3


def test_standing_height_without_steps_is_the_standing_pose():
    flat = GaitPrior(GAIT, GaitPriorConfig(step_height=0.0, pelvis_height=STANDING_QPOS[2],
                                           speeds=(0.0, 0.5), speed_spacing=0.5,
                                           phase_points=8))
    np.testing.assert_allclose(flat.table[0], np.tile(STANDING_QPOS[MOTOR_QPOS_INDEX], (8, 1)),
                               atol=0.01)


def test_the_right_leg_is_the_left_half_a_cycle_later_mirrored(prior):
    half = PRIOR.phase_points // 2
    for j in range(len(prior.speeds)):
        for i in range(PRIOR.phase_points):
            mirrored = mirror_qpos(prior.qpos[j, (i + half) % PRIOR.phase_points])
            np.testing.assert_allclose(mirrored[7:], prior.qpos[j, i][7:], atol=2e-3)


def test_positions_interpolate_the_table_and_hold_its_ends(prior):
    np.testing.assert_allclose(prior.motor_positions(np.array([3 / 16]), np.array([0.5])),
                               prior.table[1, 3][None])
    between = prior.motor_positions(np.array([3.5 / 16]), np.array([0.25]))
    corners = prior.table[0:2, 3:5].reshape(4, 10)
    np.testing.assert_allclose(between[0], corners.mean(axis=0))
    np.testing.assert_allclose(prior.motor_positions(np.array([0.0]), np.array([5.0])),
                               prior.table[-1, 0][None])
    # The phase wraps: just below 1 is between the last point and the first.
    np.testing.assert_allclose(prior.motor_positions(np.array([1 - 0.5 / 16]), np.array([0.0])),
                               (prior.table[0, -1] + prior.table[0, 0])[None] / 2)


def test_env_targets_are_the_gait_plus_the_action_at_the_commanded_stride():
    config = CassieEnvConfig(action="gait_prior", gait_prior=PRIOR, policy_substeps=4)
    env = CassieEnv(config, num_envs=3, seed=1)
    env.task.command[:, 0] = [0.0, 0.5, 0.5]
    env.task.step_frequency[:] = [1.0, 1.0, 2.0]
    phase = env.task.phase.copy()
    action = np.full((3, 10), 0.01)
    env.step(action)
    gait = GaitPrior(GAIT, PRIOR).motor_positions(phase, np.array([0.0, 0.5, 0.25]))
    np.testing.assert_allclose(env.sim.pd_command()["p_target"], gait + action)
    # The policy node's ActionOrigin gives the same targets for the same task.
    task = TaskInputs(phase=phase, command=env.task.command.copy(),
                      step_frequency=env.task.step_frequency.copy(),
                      target_heading=np.zeros(3))
    np.testing.assert_allclose(motor_targets(action, ActionOrigin(config).pose(task)),
                               gait + action)


def test_no_delta_origin_is_the_neutral_pose_whatever_the_task():
    task = TaskInputs(phase=np.array([0.3]), command=np.array([[0.7, 0.0, 0.0]]),
                      step_frequency=np.ones(1), target_heading=np.zeros(1))
    np.testing.assert_array_equal(ActionOrigin(CassieEnvConfig()).pose(task),
                                  C.NEUTRAL_MOTOR_OFFSET[None])


@pytest.mark.parametrize("field,value", [("step_height", -0.1), ("pelvis_height", 1.3),
                                         ("speeds", (1.0, 0.0)), ("phase_points", 2)])
def test_a_bad_gait_prior_config_names_the_key(field, value):
    with pytest.raises(ConfigError, match=f"gait_prior.{field}"):
        dataclasses.replace(GaitPriorConfig(), **{field: value})


def test_joint_imitation_follows_the_gait_prior_without_a_reference_file():
    from cassie_rl_ros.envs.cassie_env import TermConfig
    from cassie_rl_ros.envs.rewards import imitation_joints

    config = CassieEnvConfig(action="gait_prior", gait_prior=PRIOR, policy_substeps=4,
                             rewards={"imitation_joints": TermConfig(1.0)})
    env = CassieEnv(config, num_envs=2, seed=2)
    _, rewards, _, _ = env.step(np.zeros((2, 10)))
    gait = GaitPrior(GAIT, PRIOR).joint_positions(env.task.phase, env.task.command[:, 0])
    ctx = dataclasses.replace(env._context(env._foot_pos), reference_qpos=gait)
    np.testing.assert_allclose(rewards, imitation_joints(ctx))
    with pytest.raises(ConfigError, match="reference_path"):
        CassieEnvConfig(action="gait_prior", rewards={"imitation_com": TermConfig(1.0)})
