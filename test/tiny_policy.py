"""A real saved policy for the deployment tests: ``cassie-rl train`` for one tiny iteration.

Imported by test/rl/test_policy_runner.py, test/ros/test_policy_node.py and
test/tools/test_render.py (pytest puts test/ on sys.path for its conftest.py).
"""

from __future__ import annotations

from pathlib import Path

TINY_TRAINING = ("runner.max_iterations=1", "runner.num_envs=2", "runner.num_steps_per_env=8",
                 "runner.eval_interval=0", "runner.num_threads=1",
                 "runner.export_torchscript=false", "runner.experiment_name=tiny",
                 # The whole command range: a curriculum would limit what it may be commanded.
                 "env.command.curriculum.enabled=false")


def train_tiny_policy(log_dir: Path, *overrides: str) -> Path:
    """Train 1 iteration of 2 envs x 8 steps of the default config into ``log_dir``; returns
    the run folder (a valid ``policy`` argument)."""
    from cassie_rl_ros.training.train import main

    rc = main([*TINY_TRAINING, f"runner.log_dir={log_dir}", *overrides])
    assert rc == 0, f"cassie-rl train exited {rc}"
    return Path(log_dir) / "tiny"
