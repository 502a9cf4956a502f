"""Training throughput: rollout collection with policy inference against bare env stepping.

Prints one JSON object. In one process, on one env instance:

* bare stepping: ``env.step`` with Gaussian actions of the policy's initial std (the same
  action distribution the fresh policy explores with, hence the same simulated motion), and
  with zero actions for reference; measured before and after training and averaged, so a
  machine whose load drifts affects both sides alike;
* training: real ``OnPolicyRunner`` iterations (rollout with PPO.act and the bookkeeping, GAE,
  PPO update), from which come the collection rate (goal: at least 0.8 of bare stepping with
  the same actions) and the share of each iteration's wall time spent in the PPO update.

The first training iteration (warm-up) is left out of the averages. On a shared machine the
numbers move with the load; compare the ratios of one run.

    python bench/train_throughput.py [--iterations 3] [--bare-steps 96] [key.sub=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cassie_rl_ros.training import OnPolicyRunner, TrainConfig, default_config_path
from cassie_sim_ros.config import load_yaml


def bare_steps_per_s(env, steps: int, action_std: float, rng: np.random.Generator) -> float:
    """Env steps (over all envs) per second for ``steps`` calls of env.step."""
    shape = (env.num_envs, env.num_actions)
    actions = [np.zeros(shape, np.float32) if action_std == 0.0 else
               rng.normal(0.0, action_std, shape).astype(np.float32) for _ in range(steps)]
    start = time.perf_counter()
    for a in actions:
        env.step(a)
    return steps * env.num_envs / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None,
                        help="training config (default: the package's config/train.yaml)")
    parser.add_argument("--iterations", type=int, default=3,
                        help="training iterations, the first being warm-up")
    parser.add_argument("--bare-steps", type=int, default=96,
                        help="env.step calls per bare-stepping measurement")
    parser.add_argument("--point-mass", action="store_true",
                        help="use the tests' point-mass env instead of Cassie (a smoke run)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        overrides = [*args.overrides, f"runner.max_iterations={args.iterations}",
                     "runner.eval_interval=0", "runner.save_interval=0",
                     "runner.export_torchscript=false", "runner.prepass_steps=0",
                     f"runner.log_dir={tmp}"]
        cfg = load_yaml(TrainConfig, args.config or default_config_path(), overrides)
        if args.point_mass:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test" / "rl"))
            from rl_point_mass import make_point_mass_env as make_env
        else:
            from cassie_rl_ros.envs.cassie_env import make_env
        rows: list[dict] = []
        runner = OnPolicyRunner(cfg, make_env, verbose=False, on_iteration=rows.append)
        rng = np.random.default_rng(0)
        env, std, steps = runner.env, cfg.policy.init_std, args.bare_steps
        bare_noise = [bare_steps_per_s(env, steps, std, rng)]
        bare_zero = [bare_steps_per_s(env, steps, 0.0, rng)]
        env.reset()
        runner.learn()
        bare_noise.append(bare_steps_per_s(env, steps, std, rng))
        bare_zero.append(bare_steps_per_s(env, steps, 0.0, rng))
        runner.close()

    timed = rows[1:] if len(rows) > 1 else rows
    collect_s = sum(r["perf/collect_s"] for r in timed)
    learn_s = sum(r["perf/learn_s"] for r in timed)
    # wall_time is cumulative: the timed iterations' share is the total less the warm-up's.
    iteration_s = rows[-1]["wall_time"] - (rows[0]["wall_time"] if len(rows) > 1 else 0.0)
    samples = cfg.runner.num_envs * cfg.runner.num_steps_per_env * len(timed)
    collect_rate = samples / collect_s
    bare = float(np.mean(bare_noise))
    rc = cfg.runner
    print(json.dumps({
        "name": "train_throughput",
        "env": "point_mass" if args.point_mass else "cassie",
        "config": {
            "num_envs": rc.num_envs, "num_steps_per_env": rc.num_steps_per_env,
            "num_threads": rc.num_threads, "torch_threads": torch.get_num_threads(),
            "actor_hidden": list(cfg.policy.actor_hidden),
            "critic_hidden": list(cfg.policy.critic_hidden),
            "epochs": cfg.ppo.epochs, "minibatch_size": cfg.ppo.minibatch_size,
            "kl_line_search": cfg.ppo.kl_line_search, "mirror_coef": cfg.ppo.mirror_coef,
            "timed_iterations": len(timed),
        },
        "device": {"torch": "cpu", "cpu_count": os.cpu_count(), "machine": platform.machine(),
                   "python": platform.python_version()},
        "bare_steps_per_s_noisy_actions": bare,
        "bare_steps_per_s_noisy_actions_before_after": bare_noise,
        "bare_steps_per_s_zero_actions": float(np.mean(bare_zero)),
        "collect_steps_per_s_with_policy": collect_rate,
        "collect_over_bare": collect_rate / bare,
        "collect_goal": 0.8,
        "update_s_per_iteration": learn_s / len(timed),
        "collect_s_per_iteration": collect_s / len(timed),
        "update_share_of_wall_time": learn_s / iteration_s,
        "train_steps_per_s": samples / iteration_s,
    }, indent=1))


if __name__ == "__main__":
    main()
