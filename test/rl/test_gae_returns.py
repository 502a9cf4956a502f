"""GAE(λ) in RolloutStorage against a hand computation, including timeout bootstrapping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cassie_rl_ros.algorithms import PPO, PPOConfig, RolloutStorage, Transition
from cassie_rl_ros.policies import ActorCritic, ActorCriticConfig


def _fill(storage: RolloutStorage, rewards, values, dones, time_outs, terminal_values) -> None:
    for t in range(storage.num_steps):
        storage.add(
            Transition(
                observations=torch.zeros(2, 1),
                actions=torch.zeros(2, 1),
                log_probs=torch.zeros(2),
                action_means=torch.zeros(2, 1),
                action_stds=torch.ones(2, 1),
                values=torch.tensor(values[t]),
                rewards=torch.tensor(rewards[t]),
                dones=torch.tensor(dones[t]),
                time_outs=torch.tensor(time_outs[t]),
                terminal_values=torch.tensor(terminal_values[t]),
            )
        )


def test_gae_matches_hand_computation_with_timeout_bootstrap():
    storage = RolloutStorage(num_steps=3, num_envs=2, num_obs=1, num_actions=1)
    # Columns are envs. Env 0 runs on; env 1 times out after t=1 (bootstrapped with V=8) and
    # terminates after t=2 (its terminal value 100 must be ignored: not a timeout).
    _fill(
        storage,
        rewards=[[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]],
        values=[[0.5, 1.0], [1.0, 2.0], [1.5, 4.0]],
        dones=[[False, False], [False, True], [False, True]],
        time_outs=[[False, False], [False, True], [False, False]],
        terminal_values=[[0.0, 0.0], [0.0, 8.0], [0.0, 100.0]],
    )
    storage.compute_returns(last_values=torch.tensor([2.0, 2.0]), gamma=0.5, lam=0.5)

    # Env 0, γλ = 0.25:
    #   δ2 = 3 + 0.5·2.0 − 1.5 = 2.5                 A2 = 2.5
    #   δ1 = 2 + 0.5·1.5 − 1.0 = 1.75                A1 = 1.75 + 0.25·2.5 = 2.375
    #   δ0 = 1 + 0.5·1.0 − 0.5 = 1.0                 A0 = 1.0 + 0.25·2.375 = 1.59375
    # Env 1:
    #   t=2 terminated: δ2 = 1 − 4 = −3              A2 = −3
    #   t=1 timed out:  δ1 = (1 + 0.5·8) − 2 = 3     A1 = 3
    #   δ0 = 1 + 0.5·2 − 1 = 1                       A0 = 1 + 0.25·3 = 1.75
    expected_adv = torch.tensor([[1.59375, 1.75], [2.375, 3.0], [2.5, -3.0]])
    torch.testing.assert_close(storage.advantages, expected_adv)
    torch.testing.assert_close(storage.returns, expected_adv + storage.values)


def test_compute_returns_refuses_a_partial_rollout():
    storage = RolloutStorage(num_steps=3, num_envs=2, num_obs=1, num_actions=1)
    with pytest.raises(RuntimeError):
        storage.compute_returns(torch.zeros(2), gamma=0.99, lam=0.95)


def test_process_env_step_stores_terminal_value_only_for_timeouts():
    policy = ActorCritic(2, 1, ActorCriticConfig(actor_hidden=(8,), critic_hidden=(8,)))
    ppo = PPO(policy, PPOConfig(), num_envs=3, num_steps=1)
    ppo.act(np.zeros((3, 2), dtype=np.float32))
    terminal_obs = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]], dtype=np.float32)
    ppo.process_env_step(
        rewards=np.zeros(3, dtype=np.float32),
        dones=np.array([True, True, False]),
        extras={
            "time_outs": np.array([True, False, False]),
            "terminal_obs": terminal_obs,
            "log": {},
        },
    )
    with torch.no_grad():
        v_terminal = policy.value(torch.from_numpy(terminal_obs))
    torch.testing.assert_close(
        ppo.storage.terminal_values[0],
        torch.stack([v_terminal[0], torch.tensor(0.0), torch.tensor(0.0)]),
    )
