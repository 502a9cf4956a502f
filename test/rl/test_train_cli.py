"""``cassie-rl train``: config errors name the bad key; train and resume from the command line."""

from __future__ import annotations

import pytest
import yaml

from cassie_rl_ros.training import TrainConfig, default_config_path, load_checkpoint
from cassie_sim_ros.config import dump_yaml
from cassie_rl_ros.training.train import main
from cassie_sim_ros.config import load_yaml, to_dict
from rl_point_mass import make_point_mass_env
from rl_training import tiny_config

CONFIG_OPTIONS = ["runner.eval_interval=0", "runner.save_interval=1"]


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "train.yaml"
    data = to_dict(tiny_config(tmp_path / "runs", max_iterations=2))
    del data["env"]  # defaults, like a hand-written file
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_package_default_config_loads_and_round_trips(tmp_path):
    cfg = load_yaml(TrainConfig, default_config_path())
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_yaml(cfg))  # as every checkpoint stores it
    assert load_yaml(TrainConfig, saved) == cfg


@pytest.mark.parametrize(
    "yaml_patch, overrides, key",
    [
        ({"ppo": {"learning_rate": 0.1}}, [], "ppo.learning_rate"),
        ({}, ["runner.num_envz=4"], "runner.num_envz"),
        ({}, ["runner.num_envs=four"], "runner.num_envs"),
        ({}, ["runner.num_envs=0"], "runner.num_envs"),
        ({}, ["policy.activation=gelu"], "policy.activation"),
        ({"runner": {"eval_episodes": 0}}, [], "runner.eval_episodes"),
        ({}, ["env.episode_seconds=-1"], "env.episode_seconds"),
    ],
)
def test_bad_config_exits_2_naming_the_key(config_file, capsys, yaml_patch, overrides, key):
    data = yaml.safe_load(config_file.read_text())
    for section, values in yaml_patch.items():
        data.setdefault(section, {}).update(values)
    config_file.write_text(yaml.safe_dump(data))
    code = main(["--config", str(config_file), *overrides], make_env=make_point_mass_env)
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("cassie-rl train: error:") and key in err


def test_config_and_resume_together_are_refused(config_file, tmp_path, capsys):
    assert main(["--config", str(config_file), "--resume", str(tmp_path)]) == 2
    assert "not both" in capsys.readouterr().err


def test_resume_of_a_folder_without_a_checkpoint_is_refused(tmp_path, capsys):
    assert main(["--resume", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_train_then_resume_with_more_iterations(config_file, tmp_path, capsys):
    assert main(["--config", str(config_file), *CONFIG_OPTIONS],
                make_env=make_point_mass_env) == 0
    run_dir = tmp_path / "runs" / "run"
    assert load_checkpoint(run_dir / "checkpoint").state["iteration"] == 2
    # Training the same experiment again without --resume would overwrite it: refused.
    assert main(["--config", str(config_file)], make_env=make_point_mass_env) == 2
    assert "already holds a run" in capsys.readouterr().err

    assert main(["--resume", str(run_dir), "runner.max_iterations=3"],
                make_env=make_point_mass_env) == 0
    checkpoint = load_checkpoint(run_dir / "checkpoint")
    assert checkpoint.state["iteration"] == 3
    assert checkpoint.config.runner.max_iterations == 3
    assert checkpoint.config.runner.save_interval == 1  # kept from the run's own config


def test_init_from_warm_starts_a_new_run(config_file, tmp_path):
    assert main(["--config", str(config_file), *CONFIG_OPTIONS],
                make_env=make_point_mass_env) == 0
    source = tmp_path / "runs" / "run"
    assert main(["--config", str(config_file), "--init-from", str(source),
                 "runner.experiment_name=tuned", "runner.max_iterations=1"],
                make_env=make_point_mass_env) == 0
    tuned = load_checkpoint(tmp_path / "runs" / "tuned" / "checkpoint")
    assert tuned.config.runner.init_from == str(source)


def test_stages_resume_with_their_overrides_exactly_as_by_hand(config_file, tmp_path):
    import json

    import torch

    data = yaml.safe_load(config_file.read_text())
    data["runner"]["max_iterations"] = 3
    data["stages"] = [{"iteration": 2, "overrides": ["ppo.lr=0.0001"]}]
    config_file.write_text(yaml.safe_dump(data))
    staged = ["--config", str(config_file), *CONFIG_OPTIONS, "runner.experiment_name=staged"]
    assert main(staged, make_env=make_point_mass_env) == 0
    run = tmp_path / "runs" / "staged"
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [(h["iteration"], h["changes"]) for h in history] == [
        (0, {}), (2, {"ppo.lr": [data["ppo"]["lr"], 0.0001]})]
    # The same two steps by hand: train to 2, resume with the override to 3.
    by_hand = ["--config", str(config_file), *CONFIG_OPTIONS, "runner.experiment_name=hand",
               "stages=[]", "runner.max_iterations=2"]
    assert main(by_hand, make_env=make_point_mass_env) == 0
    hand = tmp_path / "runs" / "hand"
    assert main(["--resume", str(hand), "ppo.lr=0.0001", "runner.max_iterations=3"],
                make_env=make_point_mass_env) == 0
    a, b = load_checkpoint(run / "checkpoint"), load_checkpoint(hand / "checkpoint")
    assert a.state["iteration"] == b.state["iteration"] == 3 and a.config.ppo.lr == 0.0001
    for key, value in a.policy_state.items():
        assert torch.equal(value, b.policy_state[key]), key


def test_a_bad_stage_override_stops_before_training(config_file, capsys):
    data = yaml.safe_load(config_file.read_text())
    data["stages"] = [{"iteration": 1, "overrides": ["ppo.lrr=0.1"]}]
    config_file.write_text(yaml.safe_dump(data))
    assert main(["--config", str(config_file)], make_env=make_point_mass_env) == 2
    assert "stages[0]: unknown key ppo.lrr" in capsys.readouterr().err
