"""PPOConfig and ActorCriticConfig go through the generic config loader and validate ranges."""

from __future__ import annotations

import pytest
import yaml

from cassie_rl_ros.algorithms import PPOConfig
from cassie_rl_ros.policies import ActorCriticConfig
from cassie_sim_ros.config import (
    ConfigError,
    apply_overrides,
    dump_yaml,
    from_dict,
    load_yaml,
    to_dict,
)


@pytest.mark.parametrize("cls", [PPOConfig, ActorCriticConfig])
def test_defaults_round_trip_through_dict_and_yaml(cls, tmp_path):
    cfg = cls()
    assert from_dict(cls, to_dict(cfg)) == cfg
    path = tmp_path / "cfg.yaml"
    path.write_text(dump_yaml(cfg))
    assert load_yaml(cls, path) == cfg
    assert from_dict(cls, yaml.safe_load(dump_yaml(cfg))) == cfg


def test_overrides_parse_tuples_literals_and_null():
    ac = apply_overrides(
        ActorCriticConfig(), ["actor_hidden=[64, 32]", "activation=elu", "learn_std=true"]
    )
    assert ac.actor_hidden == (64, 32) and ac.activation == "elu" and ac.learn_std
    ppo = apply_overrides(PPOConfig(), ["target_kl=null", "lr=0.0003", "normalizer_update=frozen"])
    assert ppo.target_kl is None and ppo.lr == 0.0003 and ppo.normalizer_update == "frozen"


@pytest.mark.parametrize(
    "cls, data, field",
    [
        (PPOConfig, {"gamma": 1.5}, "gamma"),
        (PPOConfig, {"lr": 0.0}, "lr"),
        (PPOConfig, {"minibatch_size": 0}, "minibatch_size"),
        (PPOConfig, {"target_kl": -0.1}, "target_kl"),
        (PPOConfig, {"normalizer_update": "sometimes"}, "normalizer_update"),
        (ActorCriticConfig, {"actor_hidden": [0]}, "actor_hidden"),
        (ActorCriticConfig, {"init_std": 0.0}, "init_std"),
        (ActorCriticConfig, {"activation": "gelu"}, "activation"),
    ],
)
def test_invalid_values_raise_config_error_naming_the_field(cls, data, field):
    with pytest.raises(ConfigError, match=field):
        from_dict(cls, data)


def test_an_override_adds_a_reward_term_but_no_unknown_key():
    from cassie_rl_ros.envs.cassie_env import CassieEnvConfig

    base = CassieEnvConfig()
    assert "lateral_position" not in base.rewards
    cfg = apply_overrides(base, ["rewards.lateral_position={weight: 0.1, params: {scale: 2.0}}"])
    assert cfg.rewards["lateral_position"].weight == 0.1
    assert cfg.rewards["lateral_position"].params == {"scale": 2.0}
    for bad, named in (("rewards.lateral_position.weight=0.1", "rewards.lateral_position"),
                       ("rewards.no_such_term={weight: 1.0}", "no_such_term"),
                       ("sim.no_such_key=1", "sim.no_such_key"),
                       ("rewards.lateral_position={weigth: 1.0}", "weigth")):
        with pytest.raises(ConfigError, match=named):
            apply_overrides(base, [bad])
