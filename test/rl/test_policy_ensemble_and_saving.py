"""EnsemblePolicy averaging and safetensors state_dict round trips."""

from __future__ import annotations

import torch
from safetensors.torch import load_file, save_file

from cassie_rl_ros.policies import ActorCritic, ActorCriticConfig, EnsemblePolicy

CFG = ActorCriticConfig(
    actor_hidden=(16, 16), critic_hidden=(16,), learn_std=True, actor_output_gain=1.0
)


def _trained_looking_policy(seed: int) -> ActorCritic:
    torch.manual_seed(seed)
    policy = ActorCritic(5, 3, CFG)
    policy.normalizer.update(torch.randn(40, 5) * (seed + 1) + seed)
    with torch.no_grad():
        policy.log_std.add_(0.1 * seed)
    return policy


def test_ensemble_averages_member_actions():
    members = [_trained_looking_policy(s) for s in range(3)]
    obs = torch.randn(8, 5)
    with torch.no_grad():
        expected = sum(m.act_deterministic(obs) for m in members) / 3
        torch.testing.assert_close(EnsemblePolicy(members).act_deterministic(obs), expected)
        torch.testing.assert_close(EnsemblePolicy(members[:1])(obs), members[0](obs))


def test_state_dict_round_trip_reproduces_actions_bit_for_bit(tmp_path):
    policy = _trained_looking_policy(1)
    save_file(policy.state_dict(), str(tmp_path / "policy.safetensors"))
    restored = ActorCritic(5, 3, CFG)
    restored.load_state_dict(load_file(str(tmp_path / "policy.safetensors")))
    obs = torch.randn(16, 5) * 4.0
    with torch.no_grad():
        assert torch.equal(restored.act_deterministic(obs), policy.act_deterministic(obs))
        assert torch.equal(restored.value(obs), policy.value(obs))
        assert torch.equal(restored.std, policy.std)
        for key, value in policy.normalizer.state_dict().items():
            assert torch.equal(restored.normalizer.state_dict()[key], value)


def test_ensemble_state_dict_round_trip(tmp_path):
    ensemble = EnsemblePolicy([_trained_looking_policy(s) for s in range(2)])
    save_file(ensemble.state_dict(), str(tmp_path / "ensemble.safetensors"))
    restored = EnsemblePolicy([ActorCritic(5, 3, CFG) for _ in range(2)])
    restored.load_state_dict(load_file(str(tmp_path / "ensemble.safetensors")))
    obs = torch.randn(4, 5)
    with torch.no_grad():
        assert torch.equal(restored(obs), ensemble(obs))
