"""Actions to PD targets: what the env and the policy node both send to the motors."""

import numpy as np
import pytest

from cassie_rl_ros.envs.actions import clip_actions, motor_targets
from cassie_rl_ros.envs.cassie_env import CassieEnvConfig
from cassie_sim_ros import constants as C
from cassie_sim_ros.model import MOTOR_RANGE, load_model
from cassie_sim_ros.sim_server import PdCommand, PdTargetChecker


def test_small_actions_are_offsets_from_the_neutral_pose():
    action = np.linspace(-0.1, 0.1, 10)[None]
    np.testing.assert_array_equal(motor_targets(action, C.NEUTRAL_MOTOR_OFFSET[None]),
                                  C.NEUTRAL_MOTOR_OFFSET + action)


@pytest.mark.parametrize("sign", [-1.0, 1.0])
def test_the_largest_actions_give_targets_every_driver_accepts(sign):
    config = CassieEnvConfig()
    action = clip_actions(np.full((1, 10), sign * 100.0), config.action_clip)
    targets = motor_targets(action, C.NEUTRAL_MOTOR_OFFSET[None])[0]
    assert (targets >= MOTOR_RANGE[:, 0]).all() and (targets <= MOTOR_RANGE[:, 1]).all()
    model = load_model()
    np.testing.assert_allclose(MOTOR_RANGE, [model.jnt_range[model.joint(n).id]
                                             for n in C.MOTOR_NAMES])
    command = PdTargetChecker(model, position_margin=0.0).parse(list(C.MOTOR_NAMES), targets)
    assert isinstance(command, PdCommand), command
