"""PPO.update: finite losses, the KL line search, and the mirror loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cassie_rl_ros.algorithms import PPO, PPOConfig, gaussian_kl, mirror_loss
from cassie_rl_ros.policies import ActorCritic, ActorCriticConfig
from cassie_sim_ros.config import ConfigError
from rl_point_mass import PointMassEnv

SMALL_NET = ActorCriticConfig(actor_hidden=(16, 16), critic_hidden=(16, 16))


def _collect(ppo: PPO, env: PointMassEnv, obs: np.ndarray) -> np.ndarray:
    for _ in range(ppo.storage.num_steps):
        obs, rewards, dones, extras = env.step(ppo.act(obs))
        ppo.process_env_step(rewards, dones, extras)
    ppo.compute_returns(obs)
    return obs


def test_losses_stay_finite_with_every_option_on():
    torch.manual_seed(0)
    env = PointMassEnv(num_envs=8)
    cfg = PPOConfig(
        lr=1e-3,
        minibatch_size=32,
        clip_value_loss=True,
        entropy_coef=0.01,
        mirror_coef=0.5,
        kl_early_stop=True,
        kl_line_search=True,
    )
    policy = ActorCritic(
        2,
        1,
        ActorCriticConfig(
            actor_hidden=(16,), critic_hidden=(16,), learn_std=True, activation="elu"
        ),
    )
    ppo = PPO(
        policy,
        cfg,
        env.num_envs,
        num_steps=16,
        obs_mirror=env.obs_mirror,
        action_mirror=env.action_mirror,
    )
    obs = ppo.prepass(env, steps=200)
    for _ in range(3):
        obs = _collect(ppo, env, obs)
        stats = ppo.update()
        for key in (
            "policy_loss",
            "value_loss",
            "entropy",
            "kl",
            "clip_fraction",
            "mirror_loss",
            "explained_variance",
        ):
            assert math.isfinite(stats[key]), key
        assert stats["mirror_loss"] > 0
        assert 1 <= stats["epochs_run"] <= cfg.epochs
    assert all(torch.isfinite(p).all() for p in policy.parameters())


def test_kl_line_search_halves_until_each_accepted_step_is_under_target():
    torch.manual_seed(0)
    env = PointMassEnv(num_envs=8)
    target = 0.01
    cfg = PPOConfig(
        lr=10.0,
        target_kl=target,
        kl_line_search=True,
        max_line_search_halvings=30,
        minibatch_size=32,
        epochs=2,
        normalizer_update="frozen",
    )
    ppo = PPO(ActorCritic(2, 1, SMALL_NET), cfg, env.num_envs, num_steps=16)
    _collect(ppo, env, env.reset())
    stats = ppo.update()
    assert stats["line_search_halvings"] > 0
    assert 0 < stats["max_step_kl"] <= target
    assert ppo.optimizer.param_groups[0]["lr"] == cfg.lr


def test_kl_line_search_single_full_batch_step_checked_independently():
    torch.manual_seed(1)
    env = PointMassEnv(num_envs=8)
    target = 0.005
    cfg = PPOConfig(
        lr=10.0,
        target_kl=target,
        max_line_search_halvings=30,
        minibatch_size=128,
        epochs=1,
        normalizer_update="frozen",
    )
    ppo = PPO(ActorCritic(2, 1, SMALL_NET), cfg, env.num_envs, num_steps=16)
    _collect(ppo, env, env.reset())
    stats = ppo.update()
    assert stats["line_search_halvings"] > 0 and stats["line_search_rejections"] == 0
    # One minibatch = the whole rollout, so its accepted step's KL is the KL over the rollout
    # (clear() only rewinds the write index, the data is still there).
    s = ppo.storage
    with torch.no_grad():
        means = ppo.policy.action_mean(s.observations)
        kl = gaussian_kl(
            s.action_means, s.action_stds, means, ppo.policy.std.expand_as(means)
        ).mean()
    assert 0 < kl.item() <= target


def test_step_still_over_target_after_last_halving_is_undone():
    torch.manual_seed(0)
    env = PointMassEnv(num_envs=8)
    cfg = PPOConfig(
        lr=10.0,
        target_kl=1e-6,
        max_line_search_halvings=0,
        minibatch_size=32,
        normalizer_update="frozen",
    )
    ppo = PPO(ActorCritic(2, 1, SMALL_NET), cfg, env.num_envs, num_steps=16)
    before = {k: v.clone() for k, v in ppo.policy.state_dict().items()}
    _collect(ppo, env, env.reset())
    stats = ppo.update()
    # The first rejection spends the rollout's KL budget: no more actor tries after it.
    assert stats["line_search_rejections"] == 1 and stats["actor_steps"] == 0
    for key, value in ppo.policy.state_dict().items():
        if key.startswith("critic."):
            assert not torch.equal(value, before[key]), key  # the critic learned regardless
        else:
            assert torch.equal(value, before[key]), key
    assert not ppo.optimizer.state  # the actor's Adam moments were rolled back too
    assert ppo.critic_optimizer.state


def test_the_critic_learns_the_same_whatever_the_actors_line_search_does():
    critics = []
    for target_kl in (None, 1e-9):  # actor free vs. actor frozen by the line search
        torch.manual_seed(0)
        env = PointMassEnv(num_envs=8)
        cfg = PPOConfig(lr=1e-2, target_kl=target_kl, minibatch_size=32, epochs=2,
                        normalizer_update="frozen")
        ppo = PPO(ActorCritic(2, 1, SMALL_NET), cfg, env.num_envs, num_steps=16)
        _collect(ppo, env, env.reset())
        ppo.update()
        critics.append({k: v for k, v in ppo.policy.state_dict().items()
                        if k.startswith("critic.")})
    for key, value in critics[0].items():
        assert torch.equal(value, critics[1][key]), key


def test_kl_early_stop_ends_epochs():
    torch.manual_seed(0)
    env = PointMassEnv(num_envs=8)
    cfg = PPOConfig(
        lr=0.1,
        target_kl=1e-4,
        kl_early_stop=True,
        kl_line_search=False,
        epochs=5,
        minibatch_size=32,
        normalizer_update="frozen",
    )
    ppo = PPO(ActorCritic(2, 1, SMALL_NET), cfg, env.num_envs, num_steps=16)
    _collect(ppo, env, env.reset())
    assert ppo.update()["epochs_run"] == 1


# ---------------------------------------------------------------------------- mirror loss

# A 4-d obs whose first two entries swap sides, third flips sign and fourth is shared;
# a 2-d action whose entries swap sides.
OBS_MIRROR = torch.tensor(
    [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, -1, 0], [0, 0, 0, 1]], dtype=torch.float32
)
ACTION_MIRROR = torch.tensor([[0, 1], [1, 0]], dtype=torch.float32)


def _random_obs(n: int = 64) -> torch.Tensor:
    return torch.randn(n, 4, generator=torch.Generator().manual_seed(0)) * 3.0


def test_mirror_loss_vanishes_for_an_exactly_symmetric_linear_policy():
    torch.manual_seed(0)
    policy = ActorCritic(4, 2, ActorCriticConfig(actor_hidden=(), actor_output_gain=1.0))
    layer = policy.actor[0]
    with torch.no_grad():
        # W ← ½(W + M_a W M_s), b ← ½(b + M_a b) satisfies M_a W M_s = W since M² = I; with
        # the normaliser at identity, μ(M_s s) = W M_s s + b, so M_a μ(M_s s) = μ(s).
        layer.bias.normal_()
        layer.weight.copy_(0.5 * (layer.weight + ACTION_MIRROR @ layer.weight @ OBS_MIRROR))
        layer.bias.copy_(0.5 * (layer.bias + ACTION_MIRROR @ layer.bias))
    loss = mirror_loss(policy.action_mean, _random_obs(), OBS_MIRROR, ACTION_MIRROR)
    assert loss.item() < 1e-10


def test_mirror_loss_vanishes_for_a_symmetrised_nonlinear_policy_with_normaliser():
    torch.manual_seed(0)
    policy = ActorCritic(
        4, 2, ActorCriticConfig(actor_hidden=(32, 32), activation="tanh", actor_output_gain=1.0)
    )
    policy.normalizer.update(torch.randn(100, 4) * 2.0 + 1.0)  # asymmetric statistics on purpose

    def symmetrised(obs: torch.Tensor) -> torch.Tensor:
        # g(s) = ½(f(s) + M_a f(M_s s)); then M_a g(M_s s) = ½(M_a f(M_s s) + f(s)) = g(s).
        return 0.5 * (
            policy.action_mean(obs) + policy.action_mean(obs @ OBS_MIRROR.T) @ ACTION_MIRROR.T
        )

    obs = _random_obs()
    assert mirror_loss(symmetrised, obs, OBS_MIRROR, ACTION_MIRROR).item() < 1e-10
    assert mirror_loss(policy.action_mean, obs, OBS_MIRROR, ACTION_MIRROR).item() > 1e-3


def test_mirror_coef_without_mirror_matrices_is_a_config_error():
    with pytest.raises(ConfigError, match="mirror_coef"):
        PPO(ActorCritic(2, 1, SMALL_NET), PPOConfig(mirror_coef=1.0), num_envs=2, num_steps=4)


def _one_update(cfg: PPOConfig, iteration: int) -> tuple[dict[str, float], list[torch.Tensor]]:
    torch.manual_seed(0)
    env = PointMassEnv(num_envs=8)
    policy = ActorCritic(2, 1, SMALL_NET)
    ppo = PPO(policy, cfg, env.num_envs, num_steps=16,
              obs_mirror=env.obs_mirror, action_mirror=env.action_mirror)
    obs = ppo.prepass(env, steps=50)
    _collect(ppo, env, obs)
    stats = ppo.update(iteration)
    return stats, [p.detach().clone() for p in policy.parameters()]


def test_mirror_loss_starts_at_its_start_iteration():
    plain_stats, plain = _one_update(PPOConfig(minibatch_size=32), iteration=5)
    staged = PPOConfig(minibatch_size=32, mirror_coef=2.0, mirror_start_iteration=6)
    before_stats, before = _one_update(staged, iteration=5)
    after_stats, after = _one_update(staged, iteration=6)
    # Before its start the update is exactly the one without a mirror loss.
    assert before_stats["mirror_loss"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, plain))
    assert after_stats["mirror_loss"] > 0.0
    assert not all(torch.equal(a, b) for a, b in zip(after, plain))


def test_negative_mirror_start_iteration_is_a_config_error():
    with pytest.raises(ConfigError, match="mirror_start_iteration"):
        PPOConfig(mirror_start_iteration=-1)
