"""The walking criterion (`cassie-rl eval`): what it runs and how it judges."""

import numpy as np

from cassie_rl_ros.envs.cassie_env import CassieEnvConfig
from cassie_rl_ros.training.evaluate import evaluate_walking, evaluation_env_config
from cassie_sim_ros.config import from_dict, to_dict


def test_evaluation_starts_standing_with_noise_and_without_training_aids():
    data = to_dict(CassieEnvConfig())
    data["reset"]["command_velocity"] = 0.8
    data["command"]["curriculum"]["enabled"] = True
    data["randomization"]["enabled"] = True
    data["sim"]["sensor_noise"] = False
    cfg = evaluation_env_config(from_dict(CassieEnvConfig, data), seconds=10.0)
    assert cfg.reset.command_velocity == 0.0 and not cfg.command.curriculum.enabled
    assert not cfg.randomization.enabled and cfg.pushes.rate == 0.0 and cfg.sim.sensor_noise
    assert cfg.terminations == {} and cfg.gait.step_frequency == (1.0, 1.0)


def test_a_robot_that_falls_fails_whatever_its_command():
    data = to_dict(CassieEnvConfig())
    data["sim"]["actuator"] = "fast"
    config = from_dict(CassieEnvConfig, data)
    limp = lambda obs: np.zeros((obs.shape[0], 10), np.float32)  # noqa: E731  (a fixed pose)
    result = evaluate_walking(limp, config, episodes=2, seconds=3.0, speeds=[0.0, 0.6])
    assert result["falls"] == 2 and result["passed"] == 0 and not result["all_passed"]
    for episode, command in zip(result["per_episode"], (0.0, 0.6)):
        assert episode["fell"] and not episode["passed"] and episode["command"] == command
        assert episode["min_height"] < 0.6
