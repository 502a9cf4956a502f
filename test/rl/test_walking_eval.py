"""The walking criterion (`cassie-rl eval`): what it runs and how it judges."""

import json

import numpy as np
import pytest

from cassie_rl_ros.envs.cassie_env import CassieEnvConfig
from cassie_rl_ros.training.evaluate import evaluate_walking, evaluation_env_config, main
from cassie_sim_ros.config import from_dict, to_dict
from tiny_policy import train_tiny_policy


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
        assert 0.0 <= episode["swing_airborne"] <= 1.0
    assert 0.0 <= result["mean_swing_airborne"] <= 1.0


def test_each_episode_says_which_way_it_was_pushed_from_the_robot():
    config = from_dict(CassieEnvConfig, {**to_dict(CassieEnvConfig()), "episode_seconds": 1.0})
    limp = lambda obs: np.zeros((obs.shape[0], 10), np.float32)  # noqa: E731
    quiet = evaluate_walking(limp, config, episodes=2, seconds=0.2)
    assert [e["push_heading_deg"] for e in quiet["per_episode"]] == [None, None]
    sideways = evaluate_walking(limp, config, episodes=4, seconds=0.2, push_force=50.0)
    headings = [e["push_heading_deg"] for e in sideways["per_episode"]]
    assert all(abs(abs(h) - 90.0) < 0.2 for h in headings), headings
    anywhere = evaluate_walking(limp, config, episodes=6, seconds=0.2, push_force=50.0,
                                push_direction="random")
    headings = [e["push_heading_deg"] for e in anywhere["per_episode"]]
    assert all(-180.0 <= h <= 180.0 for h in headings) and len(set(headings)) == 6, headings


def test_one_episode_is_commanded_zero_two_add_the_top_speed():
    config = from_dict(CassieEnvConfig, {**to_dict(CassieEnvConfig()), "episode_seconds": 1.0})
    limp = lambda obs: np.zeros((obs.shape[0], 10), np.float32)  # noqa: E731
    for episodes, commands in ((1, [0.0]), (2, [0.0, 1.0])):
        result = evaluate_walking(limp, config, episodes=episodes, seconds=0.5)
        assert [e["command"] for e in result["per_episode"]] == commands


def test_step_lengths_are_measured_at_touchdown_along_the_starting_heading():
    from cassie_rl_ros.training.evaluate import StepLengths

    heading = np.array([0.0, np.pi / 2])  # episode 1 walks along +y
    steps = StepLengths(heading)
    up, down = 0.0, 300.0
    # Left lands 0.3 ahead, then right lands 0.2 ahead, then left 0.3 again; the first
    # touchdown is not recorded (record=False, as during the settling seconds).
    sequence = [((down, up), (0.0, 0.0), False),   # right lifts
                ((down, down), (0.0, 0.25), False),  # right lands: not recorded
                ((up, down), (0.0, 0.25), True),
                ((down, down), (0.55, 0.25), True),  # left lands 0.3 ahead
                ((down, up), (0.55, 0.25), True),
                ((down, down), (0.55, 0.75), True),  # right lands 0.2 ahead
                ((up, down), (0.55, 0.75), True),
                ((down, down), (1.05, 0.75), True)]  # left lands 0.3 ahead
    for (fl, fr), (xl, xr), record in sequence:
        forces = np.zeros((2, 2, 3))
        forces[:, :, 2] = [fl, fr]
        positions = np.zeros((2, 2, 3))
        positions[0, :, 0] = [xl, xr]  # episode 0 along x
        positions[1, :, 1] = [xl, xr]  # episode 1 along y
        steps.update(forces, positions, record)
    for episode in (0, 1):
        gait = steps.summary(episode)
        assert gait["step_length_left"] == pytest.approx(0.3)
        assert gait["step_length_right"] == pytest.approx(0.2)
        assert gait["step_asymmetry"] == pytest.approx(0.1 / 0.25)
    in_place = StepLengths(np.zeros(1))
    for fl, fr, xl in ((300.0, 0.0, 0.0), (300.0, 300.0, 0.01), (0.0, 300.0, 0.01),
                       (300.0, 300.0, 0.0)):
        forces = np.zeros((1, 2, 3))
        forces[0, :, 2] = [fl, fr]
        positions = np.zeros((1, 2, 3))
        positions[0, 0, 0] = xl
        in_place.update(forces, positions)
    assert in_place.summary(0)["step_asymmetry"] is None  # stepping in place


def test_a_foot_counts_as_airborne_only_in_full_swing_and_off_the_ground():
    from cassie_rl_ros.envs.rewards import CONTACT_FORCE, swing_airborne, swing_share

    # Phase 0.8 with legs offset (0, 0.5) and swing ratio 0.4: left in mid-swing, right in
    # mid-stance; phase 0.6 is the edge of the left swing window (ramped, not full).
    swing = swing_share(np.array([0.8, 0.8, 0.6]), 0.4, (0.0, 0.5))
    np.testing.assert_allclose(swing, [[1.0, 0.0], [1.0, 0.0], [0.5, 0.0]])
    forces = np.zeros((3, 2, 3))
    forces[:, :, 2] = [[0.0, 300.0], [CONTACT_FORCE + 100.0, 0.0], [0.0, 0.0]]
    np.testing.assert_array_equal(swing_airborne(swing, forces),
                                  [[True, False], [False, False], [False, False]])



def test_each_kept_policy_is_evaluated_on_its_own(tmp_path, capsys):
    run = train_tiny_policy(tmp_path / "runs", "runner.max_iterations=2",
                            "runner.keep_policy_interval=1")
    kept = sorted(str(p) for p in (run / "policies").iterdir() if p.is_dir())
    assert len(kept) == 2
    capsys.readouterr()  # the training's output
    options = ["--episodes", "1", "--seconds", "0.5", "--push-force", "0"]
    assert main([*kept, "--each", *options]) == 0
    out = capsys.readouterr()
    reports = json.loads(out.out)
    assert [r["policy"] for r in reports] == [[k] for k in kept]
    assert [r["nominal"]["episodes"] for r in reports] == [1, 1]
    assert [line.split(":")[0] for line in out.err.splitlines()] == kept
    # A bad path among them: refused before anything is evaluated.
    assert main([kept[0], str(tmp_path / "missing"), "--each", *options]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "missing" in out.err
