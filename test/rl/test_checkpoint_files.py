"""Checkpoint files: clear errors for corrupt or mismatched files, loading, TorchScript export."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from cassie_rl_ros.policies import ActorCritic, ActorCriticConfig, EnsemblePolicy
from cassie_rl_ros.training import (CheckpointError, OnPolicyRunner, TrainConfig,
                                    export_torchscript, load_checkpoint, load_ensemble,
                                    load_policy, save_checkpoint)
from cassie_rl_ros.training.checkpoint import decode_tree, encode_tree
from rl_point_mass import make_point_mass_env, make_windy_point_mass_env
from rl_training import tiny_config


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A finished 2-iteration run on the point mass; tests copy it before damaging it."""
    tmp = tmp_path_factory.mktemp("trained")
    runner = OnPolicyRunner(tiny_config(tmp, max_iterations=2, export_torchscript=True),
                            make_point_mass_env)
    runner.learn()
    return runner.run_dir


@pytest.fixture
def checkpoint(trained_run, tmp_path):
    import shutil

    copy = tmp_path / "checkpoint"
    shutil.copytree(trained_run / "checkpoint", copy)
    return copy


def test_load_policy_accepts_a_run_a_checkpoint_folder_or_the_file(trained_run):
    reference, cfg = load_policy(trained_run)
    assert isinstance(cfg, TrainConfig) and cfg.runner.max_iterations == 2
    obs = torch.randn(5, 2)
    for path in (trained_run / "checkpoint", trained_run / "checkpoint" / "policy.safetensors",
                 trained_run / "best"):
        policy, _ = load_policy(path)
        assert policy.num_obs == 2 and policy.num_actions == 1
        assert policy.normalizer.frozen and not policy.training
        if path.name != "best":
            assert torch.equal(policy.act_deterministic(obs), reference.act_deterministic(obs))


def test_truncated_file_names_the_file(checkpoint):
    policy_file = checkpoint / "policy.safetensors"
    policy_file.write_bytes(policy_file.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"checkpoint/policy\.safetensors: corrupt or trunc"):
        load_checkpoint(checkpoint)
    (checkpoint / "manifest.json").unlink()  # without the manifest, the format check catches it
    with pytest.raises(CheckpointError, match=r"policy\.safetensors: not a valid safetensors"):
        load_policy(checkpoint)


def test_flipped_byte_is_caught_by_the_checksum(checkpoint):
    state_file = checkpoint / "state.safetensors"
    data = bytearray(state_file.read_bytes())
    data[-1] ^= 0xFF
    state_file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"state\.safetensors: corrupt: its SHA-256"):
        load_checkpoint(checkpoint)


def test_missing_file_names_it(checkpoint):
    (checkpoint / "state.json").unlink()
    with pytest.raises(CheckpointError, match=r"state\.json: missing"):
        load_checkpoint(checkpoint)


def test_missing_tensor_names_it(checkpoint):
    (checkpoint / "manifest.json").unlink()
    policy_file = checkpoint / "policy.safetensors"
    from safetensors import safe_open

    with safe_open(str(policy_file), "pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(policy_file))
    del tensors["actor.2.bias"]
    save_file(tensors, str(policy_file), metadata=metadata)
    with pytest.raises(CheckpointError, match=r"policy\.safetensors: missing tensors actor\.2\.b"):
        load_policy(checkpoint)


def test_config_that_does_not_fit_the_weights_names_the_tensor(checkpoint):
    (checkpoint / "manifest.json").unlink()
    config_file = checkpoint / "config.yaml"
    data = yaml.safe_load(config_file.read_text())
    data["policy"]["actor_hidden"] = [32, 16]
    config_file.write_text(yaml.safe_dump(data))
    with pytest.raises(CheckpointError,
                       match=r"policy\.safetensors: tensor actor\.0\.weight has shape \(16, 2\)"):
        load_policy(checkpoint)


def test_bad_saved_config_names_the_file_and_key(checkpoint):
    (checkpoint / "manifest.json").unlink()
    config_file = checkpoint / "config.yaml"
    data = yaml.safe_load(config_file.read_text())
    data["ppo"]["learning_rate"] = 0.1
    config_file.write_text(yaml.safe_dump(data))
    with pytest.raises(CheckpointError, match=r"config\.yaml: unknown key ppo\.learning_rate"):
        load_checkpoint(checkpoint)


def test_resume_with_an_env_of_other_sizes_is_refused(trained_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    cfg = tiny_config(tmp_path, max_iterations=4, ppo={"mirror_coef": 0.0})
    with pytest.raises(CheckpointError, match=r"policy sizes .* = \(2, 1, None\), but the env "
                                              r"has \(2, 1, 4\)"):
        OnPolicyRunner(cfg, make_windy_point_mass_env, run, resume=True)


def test_interrupted_swap_is_recovered(checkpoint):
    backup = checkpoint.parent / ".checkpoint.old"
    checkpoint.rename(backup)  # the state between the two renames of a swap
    assert load_checkpoint(checkpoint).state["iteration"] == 2
    assert checkpoint.is_dir() and not backup.exists()


def test_save_replaces_the_previous_checkpoint(tmp_path):
    net = ActorCriticConfig(actor_hidden=(4,), critic_hidden=(4,))
    policy, cfg = ActorCritic(3, 2, net), TrainConfig(policy=net)
    save_checkpoint(tmp_path / "ckpt", policy, cfg, {"iteration": 1})
    save_checkpoint(tmp_path / "ckpt", policy, cfg, {"iteration": 2})
    assert load_checkpoint(tmp_path / "ckpt").state == {"iteration": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_optimizer_state_round_trips_exactly_without_pickle(tmp_path):
    policy = ActorCritic(3, 2, ActorCriticConfig(actor_hidden=(4,), learn_std=True))
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3, betas=(0.8, 0.9))
    for _ in range(3):
        optimizer.zero_grad()
        policy.evaluate(torch.randn(8, 3), torch.randn(8, 2))[0].sum().backward()
        optimizer.step()
    tensors = {}
    skeleton = json.loads(json.dumps(encode_tree(optimizer.state_dict(), tensors)))
    save_file(tensors, str(tmp_path / "opt.safetensors"))
    restored = decode_tree(skeleton, load_file(str(tmp_path / "opt.safetensors")),
                           tmp_path / "opt.safetensors")
    original = optimizer.state_dict()
    assert restored["param_groups"] == original["param_groups"]
    assert restored["state"].keys() == original["state"].keys()
    for index, state in original["state"].items():
        for key, value in state.items():
            assert torch.equal(restored["state"][index][key], value), (index, key)
    fresh = torch.optim.Adam(policy.parameters())
    fresh.load_state_dict(restored)


# ---------------------------------------------------------------------------- TorchScript

LOAD_WITHOUT_PACKAGE = """
import sys
for name in ("cassie_rl_ros", "cassie_sim_ros"):
    sys.modules[name] = None  # importing them now fails
import torch
model = torch.jit.load(sys.argv[1])
obs = torch.load(sys.argv[2], weights_only=True)
torch.save(model(obs), sys.argv[3])
"""


def _trained_looking_policy(seed: int, num_critic_obs: int | None = None) -> ActorCritic:
    torch.manual_seed(seed)
    policy = ActorCritic(5, 3, ActorCriticConfig(actor_hidden=(16, 16), actor_output_gain=1.0),
                         num_critic_obs)
    policy.normalizer.update(torch.randn(50, 5) * 3.0 + seed)
    return policy


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*:DeprecationWarning")
def test_torchscript_export_reproduces_the_deterministic_actions(tmp_path):
    policy = _trained_looking_policy(0, num_critic_obs=7)
    path = export_torchscript(policy, tmp_path / "policy.pt", TrainConfig())
    obs = torch.randn(32, 5) * 5.0
    torch.save(obs, tmp_path / "obs.pt")
    # Loaded in a separate interpreter that cannot import this package.
    subprocess.run([sys.executable, "-c", LOAD_WITHOUT_PACKAGE, str(path), str(tmp_path / "obs.pt"),
                    str(tmp_path / "actions.pt")], check=True, cwd=tmp_path, timeout=120)
    actions = torch.load(tmp_path / "actions.pt", weights_only=True)
    with torch.no_grad():
        torch.testing.assert_close(actions, policy.act_deterministic(obs), rtol=0, atol=1e-6)
    extra = {"meta.json": "", "config.yaml": ""}
    scripted = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["meta.json"])["num_obs"] == 5
    assert "runner:" in extra["config.yaml"].decode()
    assert not any("critic" in name for name, _ in scripted.named_parameters())


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*:DeprecationWarning")
def test_ensemble_export_and_loading_average_the_members(tmp_path, trained_run):
    members = [_trained_looking_policy(s) for s in range(3)]
    ensemble = EnsemblePolicy(members)
    scripted = torch.jit.load(str(export_torchscript(ensemble, tmp_path / "ensemble.pt")))
    obs = torch.randn(8, 5)
    with torch.no_grad():
        torch.testing.assert_close(scripted(obs), ensemble(obs), rtol=0, atol=1e-6)

    loaded, configs = load_ensemble([trained_run, trained_run / "best"])
    first, _ = load_policy(trained_run)
    second, _ = load_policy(trained_run / "best")
    obs = torch.randn(4, 2)
    with torch.no_grad():
        expected = (first(obs) + second(obs)) / 2
        torch.testing.assert_close(loaded(obs), expected)
    assert len(configs) == 2
