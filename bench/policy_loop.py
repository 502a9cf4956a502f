"""policy_node latency: inference alone, state-to-target inside the node, and the round trip a
simulator sees over Fast DDS at 40 Hz.

Prints one JSON object:

* ``inference``: ``PolicyRunner.observe`` + ``act`` in-process (observation build, normaliser,
  256x256 actor, action to targets, clock), one torch thread. Goal: median < 0.5 ms.
* ``node``: the node's own measurement (from its shutdown stats): from entering the callback of
  the message that completes a state (joint states + IMU with the same stamp) to the PD target
  published. Goal: p99 < 2 ms.
* ``round_trip``: this process plays the simulator: it publishes a state (joint states, then the
  IMU) every 25 ms of wall time and times the arrival of the target. Includes two DDS hops and
  this process's own rclpy receive path.

The policy is trained here for one tiny iteration at a 40 Hz policy rate (0.5 ms physics x 50)
unless ``--policy`` is given; the network is the default 256x256 whatever its training.

    python bench/policy_loop.py [--seconds 10] [--policy runs/walk] [--rt-priority 50]

``rt_priority``: then the node and round trip again with the node's ``rt_priority`` (its policy
steps on a SCHED_FIFO thread, as on a robot computer); where that right is missing the node
says so and the JSON repeats it.

The machine's load average is recorded: on a shared machine the numbers are only as good as it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cassie_rl_ros.bringup import POLICY_NODE, node_command
from cassie_rl_ros.ros_env import ros_subprocess_env
from cassie_sim_ros import constants as C

JOINTS = list(C.MOTOR_NAMES + C.PASSIVE_JOINT_NAMES)
RATE_HZ = 40.0


def stats_ms(seconds: list[float] | np.ndarray) -> dict[str, float]:
    ms = np.asarray(seconds, dtype=float) * 1e3
    return {"median_ms": round(float(np.median(ms)), 4),
            "p99_ms": round(float(np.percentile(ms, 99)), 4),
            "max_ms": round(float(ms.max()), 4), "samples": int(ms.size)}


def train_bench_policy(directory: Path) -> Path:
    from cassie_rl_ros.training.train import main

    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON only
        rc = main(["runner.max_iterations=1", "runner.num_envs=2", "runner.num_steps_per_env=8",
                   "runner.eval_interval=0", "runner.num_threads=1",
                   "runner.export_torchscript=false", "runner.experiment_name=bench",
                   f"runner.log_dir={directory}", "env.sim.timestep=0.0005",
                   "env.policy_substeps=50"])
    if rc != 0:
        raise SystemExit(f"training the bench policy failed ({rc})")
    return directory / "bench"


def inference_alone(policy: Path, iterations: int) -> dict[str, float]:
    import torch

    from cassie_rl_ros.policy_runner import PolicyRunner
    from cassie_sim_ros.sim import CassieSim

    torch.set_num_threads(1)
    runner = PolicyRunner.load(policy, speed=0.5)
    sensors = CassieSim(runner.config.sim).sensors()
    runner.readings(sensors, 0.0)
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        obs = runner.observe(sensors)
        runner.act(obs)
        times.append(time.perf_counter() - start)
    return stats_ms(times[iterations // 10:])  # the first calls warm torch up


def round_trip(policy: Path, seconds: float, log_dir: Path,
               rt_priority: int = 0) -> tuple[dict, dict]:
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Imu, JointState

    from cassie_sim_ros.sim import CassieSim, SimConfig

    env = ros_subprocess_env(1 + os.getpid() % 100, str(log_dir / "ros_log"))
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE",
                                             "ROS_LOG_DIR", "RMW_IMPLEMENTATION",
                                             "AMENT_PREFIX_PATH")})
    log_path = log_dir / f"policy_node_rt{rt_priority}.log"
    with open(log_path, "wb") as log:
        node = subprocess.Popen(list(node_command(POLICY_NODE, {"policy": str(policy),
                                                                "speed": 0.5,
                                                                "rt_priority": rt_priority})),
                                env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    context = Context()
    rclpy.init(context=context)
    probe = rclpy.create_node("bench_simulator", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(probe)
    arrivals: list[float] = []
    probe.create_subscription(JointState, "/cassie/pd_targets",
                              lambda m: arrivals.append(time.perf_counter()), 100)
    js_pub = probe.create_publisher(JointState, "/cassie/joint_states", 10)
    imu_pub = probe.create_publisher(Imu, "/cassie/imu", 10)
    sensors = CassieSim(SimConfig()).sensors()
    js = JointState(name=JOINTS)
    js.position = np.concatenate([sensors.motor_position[0], sensors.joint_position[0]]).tolist()
    js.velocity = np.concatenate([sensors.motor_velocity[0], sensors.joint_velocity[0]]).tolist()
    imu = Imu()
    imu.orientation.w = 1.0
    try:
        end = time.monotonic() + 60.0
        while time.monotonic() < end and node.poll() is None and not (
                js_pub.get_subscription_count() and imu_pub.get_subscription_count()
                and probe.count_publishers("/cassie/pd_targets")):
            executor.spin_once(timeout_sec=0.05)
        if node.poll() is not None:
            raise SystemExit(f"policy_node exited:\n{log_path.read_text()}")
        period = 1.0 / RATE_HZ
        trips: list[float] = []
        k = 0
        start = time.perf_counter()
        warmup = int(RATE_HZ)  # one second before timing
        while k < warmup + seconds * RATE_HZ:
            due = start + k * period
            while (now := time.perf_counter()) < due:
                executor.spin_once(timeout_sec=max(0.0, min(0.002, due - now)))
            stamp = round(k * period * 1e9)
            js.header.stamp.sec, js.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            imu.header.stamp = js.header.stamp
            js_pub.publish(js)
            before = len(arrivals)
            imu_pub.publish(imu)
            sent = time.perf_counter()
            # Wait for this state's target, at most until shortly before the next state.
            while len(arrivals) == before and time.perf_counter() < due + period * 0.9:
                executor.spin_once(timeout_sec=0.0005)
            trips.append(arrivals[before] - sent if len(arrivals) > before else math.nan)
            del arrivals[:]
            k += 1
        trips = np.array(trips[warmup:])
        lost = int(np.isnan(trips).sum())
        result = stats_ms(trips[~np.isnan(trips)])
        result.update(rate_hz=RATE_HZ, targets_missing=lost)
    finally:
        os.killpg(node.pid, signal.SIGINT)
        node.wait(timeout=15)
        executor.shutdown()
        probe.destroy_node()
        rclpy.shutdown(context=context)
    node_stats = {}
    for line in log_path.read_text().splitlines():
        if "stats {" in line:
            node_stats = json.loads(line.split("stats ", 1)[1])
        if "refused" in line:
            node_stats["rt_priority_refused"] = line
    return result, node_stats


def node_result(stats: dict, rt_priority: int) -> dict:
    return {"rt_priority": rt_priority,
            "rt_priority_refused": stats.get("rt_priority_refused"),
            "state_to_target_median_ms": stats.get("latency_median_ms"),
            "state_to_target_p99_ms": stats.get("latency_p99_ms"),
            "state_to_target_max_ms": stats.get("latency_max_ms"),
            "steps": stats.get("steps"), "goal_p99_ms": 2.0,
            "meets_goal": (stats.get("latency_p99_ms") or 1e9) < 2.0}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="round-trip measurement")
    parser.add_argument("--iterations", type=int, default=3000, help="inference repetitions")
    parser.add_argument("--policy", type=Path, help="saved policy (default: train a tiny one)")
    parser.add_argument("--rt-priority", type=int, default=50,
                        help="then the round trip again with the node's rt_priority (0: skip)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        policy = args.policy or train_bench_policy(tmp / "runs")
        inference = inference_alone(policy, args.iterations)
        trip, node_stats = round_trip(policy, args.seconds, tmp)
        if args.rt_priority:
            rt_trip, rt_stats = round_trip(policy, args.seconds, tmp, args.rt_priority)
    results = {
        "name": "policy_loop",
        "config": {"policy": str(args.policy or "tiny (1 iteration, 40 Hz)"),
                   "seconds": args.seconds, "state_rate_hz": RATE_HZ,
                   "torch_threads": 1},
        "device": {"cpu_count": os.cpu_count(), "machine": platform.machine(),
                   "load_average": [round(x, 2) for x in os.getloadavg()],
                   "python": platform.python_version()},
        "inference": {**inference, "goal_median_ms": 0.5,
                      "meets_goal": inference["median_ms"] < 0.5},
        "node": node_result(node_stats, 0),
        "round_trip": trip,
    }
    if args.rt_priority:
        results["rt_priority"] = {"node": node_result(rt_stats, args.rt_priority),
                                  "round_trip": rt_trip}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
