"""OnPolicyRunner: exact resume, best policy, KL limit, NaN stop, clean stops, warm start,
resume on a different number of envs."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from cassie_rl_ros.training import (CheckpointError, OnPolicyRunner, TrainingDivergedError,
                                    load_checkpoint, load_policy)
from rl_point_mass import PointMassEnv, make_point_mass_env, make_windy_point_mass_env
from rl_training import read_metrics, tiny_config, with_runner

TIMING_KEYS = {"wall_time", "perf/collect_s", "perf/learn_s", "perf/collect_steps_per_s",
               "perf/steps_per_s"}


def _without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


@pytest.mark.parametrize("make_env", [make_point_mass_env, make_windy_point_mass_env],
                         ids=["symmetric_critic", "privileged_critic"])
def test_resume_continues_bit_for_bit(tmp_path, make_env):
    cfg = tiny_config(tmp_path, max_iterations=4, save_interval=10, ppo={"mirror_coef": 0.0})

    straight = OnPolicyRunner(with_runner(cfg, experiment_name="straight"), make_env)
    straight.learn()

    # Stop after 2 iterations (as Ctrl-C would), then resume in a fresh runner.
    first = OnPolicyRunner(with_runner(cfg, experiment_name="stopped"), make_env,
                           on_iteration=lambda m: first.request_stop() if m["iteration"] == 2
                           else None)
    first.learn()
    assert load_checkpoint(first.run_dir / "checkpoint").state["iteration"] == 2
    resumed = OnPolicyRunner(with_runner(cfg, experiment_name="stopped"), make_env, resume=True)
    assert resumed.iteration == 2
    resumed.learn()

    assert resumed.iteration == straight.iteration == 4
    assert resumed.env_steps == straight.env_steps
    for key, value in straight.policy.state_dict().items():
        assert torch.equal(resumed.policy.state_dict()[key], value), key
    assert _without_timing(read_metrics(resumed.run_dir)) == _without_timing(
        read_metrics(straight.run_dir))
    assert [row["iteration"] for row in read_metrics(resumed.run_dir)] == [1, 2, 3, 4]


def test_resume_drops_metrics_logged_after_the_checkpoint(tmp_path):
    cfg = tiny_config(tmp_path, max_iterations=3, eval_interval=0)
    runner = OnPolicyRunner(cfg, make_point_mass_env)
    runner.learn()
    # As if a crash came after iteration 4 was logged but before it was saved, and during
    # the writing of iteration 5's line:
    metrics = runner.run_dir / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"iteration": 4, "return/batch": 12345}\n'
                       + '{"iteration": 5, "return/ba')
    resumed = OnPolicyRunner(with_runner(cfg, max_iterations=5), make_point_mass_env,
                             resume=True)
    resumed.learn()
    rows = read_metrics(runner.run_dir)
    assert [row["iteration"] for row in rows] == [1, 2, 3, 4, 5]
    assert all(row["return/batch"] != 12345 for row in rows)


def test_kept_policies_are_the_weights_of_their_iteration(tmp_path):
    cfg = tiny_config(tmp_path, max_iterations=4, keep_policy_interval=2, eval_interval=0)
    seen = {}
    runner = OnPolicyRunner(cfg, make_point_mass_env, on_iteration=lambda m: seen.update(
        {m["iteration"]: {k: v.clone() for k, v in runner.policy.state_dict().items()}}))
    runner.learn()
    kept = sorted(p.name for p in (runner.run_dir / "policies").iterdir())
    assert kept == ["000002", "000004"]
    for name in kept:
        policy, _ = load_policy(runner.run_dir / "policies" / name)
        for key, value in policy.state_dict().items():
            assert torch.equal(value, seen[int(name)][key]), (name, key)
    assert '"iteration": 2' in (runner.run_dir / "policies" / "000002" / "kept.json").read_text()


def test_best_policy_is_the_one_with_the_highest_test_return(tmp_path):
    cfg = tiny_config(tmp_path, max_iterations=5, eval_interval=1, export_torchscript=True)
    runner = OnPolicyRunner(cfg, make_point_mass_env)
    runner.learn()
    rows = read_metrics(runner.run_dir)
    best_row = max(rows, key=lambda row: row["return/test"])
    best_dir = runner.run_dir / "best"
    info = (best_dir / "best.json").read_text()
    assert f'"iteration": {best_row["iteration"]}' in info
    assert runner.best_test_return == best_row["return/test"]
    assert (best_dir / "policy.pt").is_file()

    # Re-evaluating the saved best policy gives its logged test return exactly.
    best, _ = load_policy(best_dir)
    runner.policy.load_state_dict(best.state_dict())
    assert runner.evaluate() == best_row["return/test"]


def test_kl_stays_under_the_limit_with_the_line_search(tmp_path):
    target = 0.005
    cfg = tiny_config(tmp_path, max_iterations=4, eval_interval=0,
                      ppo={"lr": 0.05, "target_kl": target, "kl_line_search": True,
                           "max_line_search_halvings": 20})
    runner = OnPolicyRunner(cfg, make_point_mass_env)
    runner.learn()
    rows = read_metrics(runner.run_dir)
    assert sum(row["policy/line_search_halvings"] for row in rows) > 0  # the limit was binding
    for row in rows:
        assert row["policy/max_step_kl"] <= target
        for key in ("loss/policy", "loss/value", "policy/entropy", "policy/kl"):
            assert math.isfinite(row[key]), key


class _NanAfter(PointMassEnv):
    """Returns NaN rewards from step ``nan_step`` on."""

    nan_step = 40

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps = 0

    def step(self, actions):
        obs, rewards, dones, extras = super().step(actions)
        self.steps += 1
        if self.steps >= self.nan_step:
            rewards = np.full_like(rewards, np.nan)
        return obs, rewards, dones, extras


def test_nan_from_the_env_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = tiny_config(tmp_path, max_iterations=10, save_interval=2, eval_interval=0)
    runner = OnPolicyRunner(cfg, lambda c, n, t, s: _NanAfter(num_envs=n, seed=s))
    with pytest.raises(TrainingDivergedError, match=r"iteration 3: .*non-finite rewards"):
        runner.learn()  # steps 33..48 are iteration 3
    assert load_checkpoint(runner.run_dir / "checkpoint").state["iteration"] == 2
    assert [row["iteration"] for row in read_metrics(runner.run_dir)] == [1, 2]


def test_nan_weights_after_an_update_stop_the_run_without_saving(tmp_path):
    cfg = tiny_config(tmp_path, max_iterations=10, save_interval=1, eval_interval=0)
    runner = OnPolicyRunner(cfg, make_point_mass_env)
    update = runner.ppo.update

    def poisoned_update(iteration):
        stats = update(iteration)
        if runner.iteration == 1:
            with torch.no_grad():
                runner.policy.actor[0].weight.fill_(math.nan)
        return stats

    runner.ppo.update = poisoned_update
    with pytest.raises(TrainingDivergedError, match=r"iteration 2: non-finite actor\.0\.weight"):
        runner.learn()
    checkpoint = load_checkpoint(runner.run_dir / "checkpoint")
    assert checkpoint.state["iteration"] == 1
    assert torch.isfinite(checkpoint.policy_state["actor.0.weight"]).all()


def test_request_stop_saves_a_checkpoint_between_iterations(tmp_path):
    cfg = tiny_config(tmp_path, max_iterations=100, save_interval=50, eval_interval=0)
    runner = OnPolicyRunner(cfg, make_point_mass_env,
                            on_iteration=lambda m: runner.request_stop())
    runner.learn()
    assert runner.iteration == 1
    assert load_checkpoint(runner.run_dir / "checkpoint").state["iteration"] == 1


def test_keyboard_interrupt_while_collecting_saves_the_last_completed_iteration(tmp_path):
    class Interrupted(PointMassEnv):
        steps = 0

        def step(self, actions):
            Interrupted.steps += 1
            if Interrupted.steps == 16 * 2 + 5:  # inside iteration 3's rollout
                raise KeyboardInterrupt
            return super().step(actions)

    cfg = tiny_config(tmp_path, max_iterations=10, save_interval=50, eval_interval=0)
    runner = OnPolicyRunner(cfg, lambda c, n, t, s: Interrupted(num_envs=n, seed=s))
    with pytest.raises(KeyboardInterrupt):
        runner.learn()
    assert load_checkpoint(runner.run_dir / "checkpoint").state["iteration"] == 2
    resumed = OnPolicyRunner(with_runner(cfg, max_iterations=3), make_point_mass_env,
                             resume=True)
    resumed.learn()
    assert resumed.iteration == 3


@pytest.mark.parametrize("normalizer_update", ["running", "frozen"])
def test_warm_start_keeps_the_normaliser_statistics(tmp_path, normalizer_update):
    source_cfg = tiny_config(tmp_path, experiment_name="source", max_iterations=2,
                             prepass_steps=200, eval_interval=0)
    source = OnPolicyRunner(source_cfg, make_point_mass_env)
    source.learn()
    assert source.policy.normalizer.count.item() > 0

    cfg = tiny_config(tmp_path, experiment_name="tuned", max_iterations=2, eval_interval=0,
                      prepass_steps=200, init_from=str(source.run_dir),
                      ppo={"normalizer_update": normalizer_update})
    tuned = OnPolicyRunner(cfg, make_point_mass_env)
    # The warm start replaces the fresh weights and skips the pre-pass.
    for key, value in source.policy.state_dict().items():
        assert torch.equal(tuned.policy.state_dict()[key], value), key
    tuned.learn()
    before, after = source.policy.normalizer, tuned.policy.normalizer
    if normalizer_update == "frozen":
        for name in ("mean", "var", "count"):
            assert torch.equal(getattr(after, name), getattr(before, name)), name
    else:  # statistics continue from the loaded ones
        samples = 2 * cfg.runner.num_envs * cfg.runner.num_steps_per_env
        assert after.count.item() == before.count.item() + samples


@pytest.mark.parametrize("learn_std", [True, False])
def test_warm_start_inherits_a_learned_std_but_not_over_a_fixed_one(tmp_path, learn_std):
    source_cfg = tiny_config(tmp_path, experiment_name="source", max_iterations=2,
                             eval_interval=0)
    source_cfg = dataclasses.replace(
        source_cfg, policy=dataclasses.replace(source_cfg.policy, learn_std=True))
    source = OnPolicyRunner(source_cfg, make_point_mass_env)
    source.learn()
    assert not torch.allclose(source.policy.std, torch.tensor(0.3))  # the std moved

    cfg = tiny_config(tmp_path, experiment_name="tuned", init_from=str(source.run_dir))
    cfg = dataclasses.replace(
        cfg, policy=dataclasses.replace(cfg.policy, learn_std=learn_std, init_std=0.1))
    tuned = OnPolicyRunner(cfg, make_point_mass_env)
    assert torch.equal(tuned.policy.actor[0].weight, source.policy.actor[0].weight)
    expected = source.policy.std if learn_std else torch.full_like(source.policy.std, 0.1)
    assert torch.allclose(tuned.policy.std, expected)


def test_warm_start_from_a_policy_for_other_observations_is_refused(tmp_path):
    source = OnPolicyRunner(tiny_config(tmp_path, experiment_name="windy", max_iterations=1,
                                        eval_interval=0), make_windy_point_mass_env)
    source.learn()
    policy_file = source.run_dir / "checkpoint" / "policy.safetensors"
    # Same actor sizes, but the critic reads 4 privileged values instead of the 2 obs: the
    # actor side is copied, the critic stays fresh.
    tuned = OnPolicyRunner(tiny_config(tmp_path, experiment_name="plain",
                                       init_from=str(policy_file)), make_point_mass_env)
    assert torch.equal(tuned.policy.actor[0].weight, source.policy.actor[0].weight)
    assert tuned.policy.critic_normalizer is None

    class Wider(PointMassEnv):
        def get_observations(self):
            return np.concatenate([super().get_observations(), np.zeros((self.num_envs, 1),
                                                                        np.float32)], axis=1)

    def make_wider(c, n, t, s):
        env = Wider(num_envs=n, seed=s)
        env.num_obs, env.obs_mirror = 3, None
        return env

    with pytest.raises(CheckpointError, match=r"policy\.safetensors: policy sizes .* = \(2, 1"):
        OnPolicyRunner(tiny_config(tmp_path, experiment_name="wider", init_from=str(policy_file),
                                   ppo={"mirror_coef": 0.0}), make_wider)


def test_a_new_run_refuses_to_overwrite_an_existing_one(tmp_path):
    cfg = tiny_config(tmp_path, max_iterations=1, eval_interval=0)
    OnPolicyRunner(cfg, make_point_mass_env).learn()
    with pytest.raises(CheckpointError, match="already holds a run"):
        OnPolicyRunner(cfg, make_point_mass_env)


def test_short_cassie_run_has_finite_losses_and_kl_under_the_limit(tmp_path):
    from cassie_rl_ros.envs.cassie_env import CassieEnvConfig, make_env

    target = 0.01
    cfg = tiny_config(tmp_path, max_iterations=2, eval_interval=2, eval_episodes=1,
                      num_envs=2, num_steps_per_env=16,
                      ppo={"lr": 1e-3, "target_kl": target, "minibatch_size": 8})
    cfg = dataclasses.replace(cfg, env=CassieEnvConfig(episode_seconds=0.3))
    runner = OnPolicyRunner(cfg, make_env)
    runner.learn()
    rows = read_metrics(runner.run_dir)
    assert runner.policy.num_critic_obs is not None  # the Cassie critic sees ground truth
    for row in rows:
        assert row["policy/max_step_kl"] <= target
        for key in ("loss/policy", "loss/value", "policy/entropy", "policy/kl"):
            assert math.isfinite(row[key]), key
    assert math.isfinite(rows[-1]["return/test"])
    assert any(key.startswith("env/reward/") for key in rows[-1])


def test_resume_on_more_envs_keeps_the_speed_curriculum_stage(tmp_path):
    from cassie_rl_ros.envs.cassie_env import CassieEnvConfig, make_env
    from cassie_sim_ros.config import from_dict, to_dict
    from cassie_sim_ros.sim import SimConfig

    env = CassieEnvConfig(sim=SimConfig(timestep=0.002, actuator="fast"), policy_substeps=15,
                          episode_seconds=0.06, terminations={})
    # 2-step episodes whose speed errors are all within tolerance: the limit rises every
    # 4 finished episodes, so it is past its start by the first checkpoint.
    command = {"forward": [0.0, 1.0], "zero_probability": 0.0,
               "curriculum": {"enabled": True, "start": 0.1, "step": 0.1, "tolerance": 5.0,
                              "min_episodes": 4}}
    env = from_dict(CassieEnvConfig, {**to_dict(env), "command": command})
    cfg = dataclasses.replace(
        tiny_config(tmp_path, max_iterations=2, save_interval=2, eval_interval=100,
                    num_envs=4, num_steps_per_env=4), env=env)
    first = OnPolicyRunner(cfg, make_env)
    first.learn()
    reached = first.env.curriculum.limit
    first.close()
    assert reached > 0.1 + 1e-9

    resumed = OnPolicyRunner(with_runner(cfg, num_envs=6, max_iterations=3), make_env,
                             resume=True)
    assert resumed.env.curriculum.limit == pytest.approx(reached)
    assert resumed.env.task.command[:, 0].max() <= reached + 1e-9
    resumed.learn()
    resumed.close()
    assert resumed.env.curriculum.limit >= reached - 1e-9


def test_the_runner_switches_the_mirror_loss_on_at_its_start_iteration(tmp_path):
    cfg = tiny_config(tmp_path, max_iterations=4, eval_interval=0,
                      ppo={"mirror_coef": 1.0, "mirror_start_iteration": 3})
    runner = OnPolicyRunner(cfg, make_point_mass_env)
    runner.learn()
    mirror = [row["loss/mirror"] for row in read_metrics(runner.run_dir)]
    assert mirror[:2] == [0.0, 0.0] and all(m > 0.0 for m in mirror[2:]), mirror


def test_history_records_each_start_and_what_a_resume_changed(tmp_path):
    import json

    cfg = tiny_config(tmp_path, max_iterations=2, eval_interval=0)
    OnPolicyRunner(cfg, make_point_mass_env).learn()
    staged = dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, lr=1e-4),
                                 runner=dataclasses.replace(cfg.runner, max_iterations=3))
    resumed = OnPolicyRunner(staged, make_point_mass_env, resume=True)
    resumed.learn()
    lines = (resumed.run_dir / "history.jsonl").read_text().splitlines()
    history = [json.loads(line) for line in lines]
    assert [(h["iteration"], h["resumed"]) for h in history] == [(0, False), (2, True)]
    assert history[0]["changes"] == {}
    assert history[1]["changes"] == {"ppo.lr": [cfg.ppo.lr, 1e-4],
                                     "runner.max_iterations": [2, 3]}
    assert history[1]["env_steps"] == 2 * 8 * 16
