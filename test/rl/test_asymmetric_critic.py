"""Asymmetric actor-critic: a critic that reads privileged observations the actor never sees."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cassie_rl_ros.algorithms import PPO, PPOConfig
from cassie_rl_ros.policies import ActorCritic, ActorCriticConfig
from rl_point_mass import WindyPointMassEnv

NET = ActorCriticConfig(actor_hidden=(16, 16), critic_hidden=(16, 16))


def test_without_critic_obs_the_critic_reads_the_actor_obs_as_before():
    policy = ActorCritic(2, 1, NET)
    assert policy.num_critic_obs is None and policy.critic_normalizer is None
    assert not any(k.startswith("critic_normalizer") for k in policy.state_dict())
    assert policy.critic[0].in_features == 2
    obs = torch.randn(4, 2)
    torch.testing.assert_close(policy.value(obs), policy.critic(policy.normalizer(obs))[:, 0])


def test_privileged_critic_reads_its_own_normalised_observations():
    policy = ActorCritic(2, 1, NET, num_critic_obs=4)
    assert policy.critic[0].in_features == 4
    assert {"critic_normalizer.mean", "critic_normalizer.var"} <= set(policy.state_dict())
    policy.critic_normalizer.update(torch.randn(100, 4) * 5.0 + 2.0)
    obs, critic_obs = torch.randn(4, 2), torch.randn(4, 4)
    expected = policy.critic(policy.critic_normalizer(critic_obs))[:, 0]
    torch.testing.assert_close(policy.value(obs, critic_obs), expected)
    with pytest.raises(ValueError, match="critic_obs"):
        policy.value(obs)
    # Acting needs the actor's observation only.
    assert policy.act_deterministic(obs).shape == (4, 1)


def test_timeouts_bootstrap_from_the_terminal_critic_observation():
    policy = ActorCritic(2, 1, NET, num_critic_obs=4)
    ppo = PPO(policy, PPOConfig(), num_envs=2, num_steps=1)
    with pytest.raises(ValueError, match="critic observations"):
        ppo.act(np.zeros((2, 2), np.float32))
    ppo.act(np.zeros((2, 2), np.float32), np.ones((2, 4), np.float32))
    terminal_critic = np.array([[1.0, 2.0, 0.3, 0.0], [0.0, 0.0, 0.0, 0.5]], np.float32)
    ppo.process_env_step(
        np.zeros(2, np.float32),
        np.array([True, False]),
        {"time_outs": np.array([True, False]), "terminal_obs": np.zeros((2, 2), np.float32),
         "terminal_critic_obs": terminal_critic, "log": {}},
    )
    with torch.no_grad():
        v_terminal = policy.value(torch.zeros(2, 2), torch.from_numpy(terminal_critic))
    torch.testing.assert_close(ppo.storage.terminal_values[0],
                               torch.stack([v_terminal[0], torch.tensor(0.0)]))
    torch.testing.assert_close(ppo.storage.critic_observations[0], torch.ones(2, 4))


def test_short_run_with_a_privileged_critic_trains_both_normalisers():
    torch.manual_seed(0)
    env = WindyPointMassEnv(num_envs=8)
    policy = ActorCritic(env.num_obs, env.num_actions, NET, env.num_critic_obs)
    ppo = PPO(policy, PPOConfig(lr=1e-3, minibatch_size=32), env.num_envs, num_steps=16)
    obs = ppo.prepass(env, steps=64)
    critic_obs = env.get_critic_observations()
    assert policy.critic_normalizer.count.item() == 64
    for _ in range(3):
        for _ in range(16):
            obs, rewards, dones, extras = env.step(ppo.act(obs, critic_obs))
            critic_obs = extras["critic_obs"]
            ppo.process_env_step(rewards, dones, extras)
        ppo.compute_returns(obs, critic_obs)
        stats = ppo.update()
        for key in ("policy_loss", "value_loss", "kl", "explained_variance"):
            assert math.isfinite(stats[key]), key
    assert policy.critic_normalizer.count.item() == 64 + 3 * 8 * 16
    # The wind column (index 2) is seen by the critic's normaliser only.
    assert policy.critic_normalizer.var[2].item() > 0
