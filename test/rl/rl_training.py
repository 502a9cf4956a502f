"""Shared helpers for the training tests: a tiny TrainConfig for the point-mass envs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from cassie_rl_ros.algorithms import PPOConfig
from cassie_rl_ros.policies import ActorCriticConfig
from cassie_rl_ros.training import RunnerConfig, TrainConfig


def tiny_config(tmp_path: Path, ppo: dict | None = None, **runner) -> TrainConfig:
    """8 envs x 16 steps per iteration, 16-unit networks, a test return every iteration."""
    runner_cfg = dict(
        log_dir=str(tmp_path),
        experiment_name="run",
        num_envs=8,
        num_steps_per_env=16,
        max_iterations=4,
        num_threads=1,
        save_interval=2,
        eval_interval=1,
        eval_episodes=4,
        export_torchscript=False,
    )
    runner_cfg.update(runner)
    return TrainConfig(
        policy=ActorCriticConfig(actor_hidden=(16, 16), critic_hidden=(16, 16), init_std=0.3),
        ppo=PPOConfig(**{"lr": 3e-3, "minibatch_size": 32, "epochs": 2, **(ppo or {})}),
        runner=RunnerConfig(**runner_cfg),
    )


def with_runner(cfg: TrainConfig, **changes) -> TrainConfig:
    return dataclasses.replace(cfg, runner=dataclasses.replace(cfg.runner, **changes))


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
