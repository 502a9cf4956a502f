"""train_node over DDS: trains the configured Cassie env, publishes metrics, stops on SIGINT."""

from __future__ import annotations

import json
import signal
import sys
import time

import pytest
import yaml

from cassie_rl_ros.training import load_checkpoint

rclpy = pytest.importorskip("rclpy")
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from cassie_rl_ros.nodes.train_node import METRICS_QOS  # noqa: E402

# 2 Cassies x 8 steps per iteration; half-second episodes so the test return is measured.
TINY = {
    "env": {"episode_seconds": 0.5},
    "policy": {"actor_hidden": [32], "critic_hidden": [32]},
    "ppo": {"minibatch_size": 8, "epochs": 1},
    "runner": {"num_envs": 2, "num_steps_per_env": 8, "num_threads": 1, "eval_interval": 1,
               "eval_episodes": 1, "save_interval": 100, "experiment_name": "node_run"},
}


@pytest.fixture
def listener(ros_env):
    """Collects the JSON metrics published on /cassie/train/metrics.

    Transient-local like the publisher, so messages sent before discovery completed still
    arrive.
    """
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("metrics_listener", context=context)
    received: list[dict] = []
    node.create_subscription(String, "/cassie/train/metrics",
                             lambda msg: received.append(json.loads(msg.data)), METRICS_QOS)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)

    def spin_until(condition, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)

    yield received, spin_until
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=context)


def _start(start_node, tmp_path, max_iterations: int):
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(TINY))
    return start_node([sys.executable, "-m", "cassie_rl_ros.nodes.train_node", "--ros-args",
                       "-p", f"config:={config}",
                       "-p", f"overrides:=[runner.max_iterations={max_iterations}, "
                       f"runner.log_dir={tmp_path / 'runs'}]"])


def test_node_trains_publishes_metrics_and_saves(start_node, listener, tmp_path):
    received, spin_until = listener
    proc = _start(start_node, tmp_path, max_iterations=2)
    spin_until(lambda: len(received) >= 2 or proc.poll() is not None, timeout=120)
    spin_until(lambda: len(received) >= 2, timeout=5)
    assert proc.wait(timeout=60) == 0, proc.log_path.read_text()
    assert [m["iteration"] for m in received] == [1, 2], proc.log_path.read_text()
    for key in ("return/test", "return/batch", "policy/kl", "loss/value", "perf/steps_per_s"):
        assert key in received[-1], key
    assert any(key.startswith("env/reward/") for key in received[-1])
    checkpoint = load_checkpoint(tmp_path / "runs" / "node_run" / "checkpoint")
    assert checkpoint.state["iteration"] == 2


def test_sigint_finishes_the_iteration_and_saves_a_checkpoint(start_node, listener, tmp_path):
    received, spin_until = listener
    proc = _start(start_node, tmp_path, max_iterations=100_000)
    spin_until(lambda: received or proc.poll() is not None, timeout=120)
    assert received, proc.log_path.read_text()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0, proc.log_path.read_text()
    run_dir = tmp_path / "runs" / "node_run"
    saved = load_checkpoint(run_dir / "checkpoint").state["iteration"]
    logged = [json.loads(line)["iteration"] for line in
              (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert saved >= 1 and logged[-1] == saved
    assert "stopping after this iteration" in proc.log_path.read_text()
