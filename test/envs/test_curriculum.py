"""The forward-speed curriculum: raises only on earned success, and drives the env's commands."""

import numpy as np
import pytest

from cassie_rl_ros.envs.cassie_env import CassieEnv, CassieEnvConfig
from cassie_rl_ros.envs.curriculum import SpeedCurriculum, SpeedCurriculumConfig
from cassie_sim_ros.config import ConfigError, from_dict, to_dict
from cassie_sim_ros.sim import SimConfig

CONFIG = SpeedCurriculumConfig(enabled=True, start=0.3, step=0.2, tolerance=0.1,
                               success_rate=0.5, min_episodes=4)


def end(curriculum, errors, timed_out, steps=10, commands=None):
    """Four episodes with these mean speed errors (commanded at the limit unless given)."""
    ids = np.arange(4)
    curriculum.record(np.asarray(errors, float) * steps)
    commands = np.full(4, curriculum.limit) if commands is None else np.asarray(commands)
    curriculum.episodes_ended(ids, np.full(4, steps), np.asarray(timed_out), commands)


def test_the_limit_grows_only_when_enough_episodes_track_the_command():
    c = SpeedCurriculum(CONFIG, top=1.0, num_envs=4)
    assert c.limit == 0.3
    end(c, [0.05, 0.05, 0.5, 0.5], [True, False, True, True])  # 1 success of 4
    assert c.limit == 0.3
    end(c, [0.05, 0.05, 0.5, 0.5], [True, True, True, True])  # 2 of 4
    assert c.limit == pytest.approx(0.5)
    for _ in range(5):
        end(c, [0.0] * 4, [True] * 4)
    assert c.limit == 1.0  # never past the command range
    assert (c.error_sum == 0).all()


def test_only_episodes_commanded_near_the_limit_count():
    c = SpeedCurriculum(CONFIG, top=1.0, num_envs=4)
    # Standing still at slow commands is within tolerance, but says nothing about walking.
    for _ in range(3):
        end(c, [0.0, 0.05, 0.05, 0.5], [True] * 4, commands=[0.0, 0.05, 0.05, 0.3])
    assert c.limit == 0.3 and c.ended == 3  # only the 0.3 m/s episodes were scored
    end(c, [0.05] * 4, [True] * 4)  # four more at the limit, tracked: 4 of 7 succeed
    assert c.limit == pytest.approx(0.5)


def test_disabled_is_the_whole_range_and_bad_values_are_named():
    assert SpeedCurriculum(SpeedCurriculumConfig(), top=0.8, num_envs=2).limit == 0.8
    with pytest.raises(ConfigError, match="success_rate.*allowed values"):
        SpeedCurriculumConfig(success_rate=0.0)
    with pytest.raises(ConfigError, match="command.curriculum.step"):
        from_dict(CassieEnvConfig, {"command": {"curriculum": {"step": -1}}})


def test_env_draws_commands_under_the_limit_and_keeps_it_across_state_restores():
    cfg = CassieEnvConfig(sim=SimConfig(timestep=0.002, actuator="fast"), policy_substeps=15,
                          episode_seconds=0.06, terminations={})
    command = {"forward": [0.0, 1.0], "zero_probability": 0.0,
               "curriculum": {"enabled": True, "start": 0.2, "step": 0.2, "tolerance": 5.0,
                              "min_episodes": 4}}  # every command within a step of the limit
    cfg = from_dict(CassieEnvConfig, {**to_dict(cfg), "command": command})
    env = CassieEnv(cfg, num_envs=4)
    assert env.task.command[:, 0].max() <= 0.2
    saved = env.get_state()
    for _ in range(2):  # 2-step episodes, all time out with errors under 5 m/s: one raise
        _, _, dones, extras = env.step(np.zeros((4, 10), np.float32))
    assert dones.all() and extras["time_outs"].all()
    assert env.curriculum.limit == pytest.approx(0.4)
    assert extras["log"]["curriculum/forward_max"] == pytest.approx(0.4)
    env.set_state(saved)
    assert env.curriculum.limit == pytest.approx(0.2)

    # A run resumed on more envs starts fresh episodes but keeps the stage it had reached.
    for _ in range(2):
        env.step(np.zeros((4, 10), np.float32))
    wider = CassieEnv(cfg, num_envs=6)
    wider.restore_progress(env.get_state())
    wider.reset()
    assert wider.curriculum.limit == pytest.approx(0.4)
    assert wider.curriculum.error_sum.shape == (6,)
    assert wider.task.command[:, 0].max() <= 0.4


def test_evaluation_config_judges_the_whole_range_from_standing():
    cfg = from_dict(CassieEnvConfig, {"command": {"curriculum": {"enabled": True}},
                                      "reset": {"command_velocity": 0.5}})
    judged = cfg.for_evaluation()
    assert not judged.command.curriculum.enabled and judged.reset.command_velocity == 0.0
    assert judged.command.forward == cfg.command.forward and judged.rewards == cfg.rewards
    env = CassieEnv(judged, num_envs=1)
    assert env.curriculum.limit == cfg.command.forward[1]
