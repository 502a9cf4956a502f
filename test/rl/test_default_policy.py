"""The shipped default policy (policies/walk/): it loads where the nodes look for it and walks
in the simulator at the commanded speeds, so a change to the observation, action or model code
that would break it fails here rather than on the robot."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cassie_rl_ros.policy_runner import PolicyError, PolicyRunner, default_policy_path
from cassie_rl_ros.training.evaluate import evaluate_walking, load_policy_fn


@pytest.fixture(scope="module")
def shipped():
    try:
        return default_policy_path()
    except PolicyError:
        pytest.skip("no default policy is shipped")


def test_the_default_policy_loads_with_what_the_robot_provides(shipped):
    runner = PolicyRunner.load(shipped)
    assert runner.dt == pytest.approx(0.03)  # 15 x 2 ms, as trained
    # Sensors only: the policy node can run it on hardware unchanged.
    assert runner.config.observation.state == "sensors"
    report = json.loads((shipped / "eval.json").read_text())
    assert report["nominal"]["episodes"] == 20


def test_the_default_policy_walks_at_the_commanded_speeds(shipped):
    act, config = load_policy_fn([str(shipped)])
    speeds = np.array([0.0, 0.5, 1.0])
    report = evaluate_walking(act, config, episodes=3, seconds=5.0, speeds=speeds)
    episodes = report["per_episode"]
    assert [e["fell"] for e in episodes] == [False] * 3, episodes
    # Looser than the criterion (a 5 s episode, 3 s of it judged): it walks, and at the speed.
    assert all(e["speed_error"] < 0.2 for e in episodes), episodes


def test_render_walks_the_default_policy_at_the_commanded_speed(shipped):
    """What `cassie-rl render` and render.launch.py run: PolicyRunner (the policy node's core)
    on the simulator it was trained in."""
    from cassie_rl_ros.tools.render import Rollout

    rollout = Rollout(PolicyRunner.load(shipped, speed=0.6))
    speeds, lowest = [], np.inf
    for _ in range(int(round(5.0 / rollout.runner.dt))):
        rollout.step()
        lowest = min(lowest, float(rollout.sim.pelvis_pose()[0][0, 2]))
        if rollout.time > 3.0:
            speeds.append(rollout.forward_speed())
    assert lowest > 0.6
    assert np.mean(speeds) == pytest.approx(0.6, abs=0.15)
