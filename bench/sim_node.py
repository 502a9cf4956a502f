"""sim_node over Fast DDS: real-time factor in ``realtime`` mode, policy steps/s in ``lockstep``.

Prints one JSON object. Each ROS number has a same-run baseline:

* realtime: the node publishes state at 400 Hz while this process (a separate one, as a policy
  node would be) publishes PD targets at 40 Hz and subscribes to the joint states. Reported: the
  node's real-time factor and missed publish periods (from its shutdown stats), and the rate and
  gaps this subscriber saw. Baseline: ``SimServer`` stepping one publish period at a time
  in-process with no ROS, i.e. the real-time factor the physics alone could reach. Then the
  same with the node's ``rt_priority`` (SCHED_FIFO), as a robot computer would run a driver;
  where that right is missing the node says so and the JSON repeats it. Floor: a bare loop
  that only sleeps to the same 400 Hz schedule (the node's pacer and sleep, nothing else), as
  long, with normal scheduling and with the priority: the missed periods of this machine's own
  late wake-ups (a VM's hypervisor), which no node can do better than.
* lockstep: this process is the policy: send a target, wait for the state, repeat. Baseline:
  ``SimServer.lockstep`` in-process, the ceiling for the node. Run for each actuator mode.

    python bench/sim_node.py [--seconds 60] [--lockstep-seconds 10] [--actuator faithful]
                             [--rt-priority 50]

The machine's load average is recorded: on a shared machine the numbers are only as good as it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cassie_rl_ros.ros_env import ros_subprocess_env
from cassie_sim_ros import constants as C
from cassie_sim_ros.nodes.node_main import realtime_thread
from cassie_sim_ros.sim_server import PdCommand, RealtimePacer, SimNodeConfig, SimServer

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ in-process baselines


def physics_alone_rtf(actuator: str, seconds: float) -> float:
    """Real-time factor of stepping and snapshotting one 400 Hz publish period at a time."""
    server = SimServer(SimNodeConfig(actuator=actuator))
    command = server.parse_command(C.MOTOR_NAMES, server.sim.motor_state()[0][0])
    start, chunks = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        if chunks % 10 == 0:
            server.apply(command)  # a 40 Hz policy
        server.step_realtime()
        server.snapshot()
        chunks += 1
    return chunks * server.steps_per_publish * server.timestep / (time.perf_counter() - start)


def bare_loop_missed_periods(seconds: float, rt_priority: int) -> dict:
    """Missed publish periods of a loop that only sleeps to the node's 400 Hz schedule, on a
    thread of its own prepared as the node's (timer slack, SCHED_FIFO when given)."""
    result = {}

    def loop():
        result["rt_priority_refused"] = realtime_thread(rt_priority)
        pacer = RealtimePacer(1.0 / 400.0)
        pacer.start()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            wait = pacer.time_to_next()
            if wait > 0:
                time.sleep(wait)
            pacer.done()
        result.update(missed_publish_periods=pacer.missed, publish_periods=pacer.chunks)

    thread = threading.Thread(target=loop)
    thread.start()
    thread.join()
    return result


def lockstep_alone(actuator: str, seconds: float) -> float:
    """Policy steps per second of ``SimServer.lockstep`` + snapshot with no ROS."""
    server = SimServer(SimNodeConfig(actuator=actuator, mode="lockstep"))
    q0 = server.sim.motor_state()[0][0]
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        target = q0 + 0.05 * np.sin(0.2 * steps + np.arange(10))
        server.lockstep(PdCommand(target, np.zeros(10), np.zeros(10)))
        server.snapshot()
        steps += 1
        if steps % 200 == 0:
            server.reset()
    return steps / (time.perf_counter() - start)


# ------------------------------------------------------------------ over ROS


class Policy:
    """This process's rclpy node: PD targets out, joint states in."""

    def __init__(self):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import JointState

        self.rclpy, self.JointState = rclpy, JointState
        rclpy.init()
        self.node = rclpy.create_node("bench_policy")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.stamps: list[float] = []
        self.last = None
        self.node.create_subscription(JointState, "/cassie/joint_states", self._on_state, 10)
        self.pub = self.node.create_publisher(JointState, "/cassie/pd_targets", 10)

    def _on_state(self, msg):
        self.stamps.append(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)
        self.last = msg

    def send(self, position):
        self.pub.publish(self.JointState(name=list(C.MOTOR_NAMES),
                                         position=[float(x) for x in position]))

    def spin_until(self, done, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while not done():
            if time.monotonic() > end:
                return False
            self.executor.spin_once(timeout_sec=0.005)
        return True

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.shutdown()


def start_node(params: list[str], env: dict, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cassie_sim_ros.nodes.sim_node", "--ros-args"]
    for p in params:
        cmd += ["-p", p]
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=ROOT)


def stop_node(proc: subprocess.Popen, log: Path) -> dict:
    """SIGINT, then the node's shutdown stats line."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if "stats {" in line:
            return json.loads(line[line.index("{"):])
    raise RuntimeError(f"no stats from sim_node:\n{log.read_text(errors='replace')}")


@contextlib.contextmanager
def stopped_on_error(proc: subprocess.Popen) -> Iterator[None]:
    """Kill the node if the measurement fails: a bench must not leave a node running."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


def wait_up(policy: Policy, proc: subprocess.Popen, log: Path):
    ok = policy.spin_until(lambda: (policy.last is not None
                                    and policy.pub.get_subscription_count() > 0)
                           or proc.poll() is not None, 60.0)
    if not ok or proc.poll() is not None:
        raise RuntimeError(f"sim_node did not come up:\n{log.read_text(errors='replace')}")


def realtime_over_ros(policy: Policy, env: dict, tmp: Path, actuator: str, seconds: float,
                      rt_priority: int = 0) -> dict:
    log = tmp / f"realtime_rt{rt_priority}.log"
    proc = start_node(["mode:=realtime", "publish_rate:=400.0", f"actuator:={actuator}",
                       f"rt_priority:={rt_priority}"], env, log)
    with stopped_on_error(proc):
        wait_up(policy, proc, log)
        q0 = np.array(policy.last.position[:10])
        policy.stamps.clear()
        start = next_send = time.monotonic()
        while (now := time.monotonic()) - start < seconds:
            if now >= next_send:
                policy.send(q0)  # 40 Hz
                next_send += 0.025
            policy.executor.spin_once(timeout_sec=max(0.0, min(next_send - now, 0.01)))
        wall = time.monotonic() - start
    stats = stop_node(proc, log)
    refused = [line for line in log.read_text(errors="replace").splitlines() if "refused" in line]
    stamps = np.array(policy.stamps)
    gaps = np.diff(stamps)
    return {
        "rt_priority": rt_priority,
        "rt_priority_refused": refused[0] if refused else None,
        "node_real_time_factor": stats.get("real_time_factor"),
        "node_missed_publish_periods": stats.get("missed_publish_periods"),
        "node_publish_periods": stats.get("publish_periods"),
        "node_wall_s": stats.get("wall_time"),
        "targets_accepted": stats.get("accepted_targets"),
        "subscriber_rate_hz": len(stamps) / wall,
        "subscriber_real_time_factor": float((stamps[-1] - stamps[0]) / wall) if len(stamps) else 0,
        "subscriber_messages_lost": int(np.sum(np.round(gaps / 0.0025) - 1)) if len(gaps) else 0,
    }


def lockstep_over_ros(policy: Policy, env: dict, tmp: Path, actuator: str, seconds: float) -> dict:
    log = tmp / f"lockstep_{actuator}.log"
    policy.last = None
    proc = start_node(["mode:=lockstep", f"actuator:={actuator}"], env, log)
    with stopped_on_error(proc):
        wait_up(policy, proc, log)
        q0 = np.array(policy.last.position[:10])
        steps, start = 0, time.monotonic()
        while time.monotonic() - start < seconds:
            seen = len(policy.stamps)
            policy.send(q0 + 0.05 * np.sin(0.2 * steps + np.arange(10)))
            if not policy.spin_until(lambda: len(policy.stamps) > seen, 10.0):
                raise RuntimeError(f"lockstep stalled:\n{log.read_text(errors='replace')}")
            steps += 1
        rate = steps / (time.monotonic() - start)
    stop_node(proc, log)
    period = SimNodeConfig().policy_period
    return {"policy_steps_per_s": rate, "times_real_time": rate * period}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="realtime run length (s)")
    parser.add_argument("--lockstep-seconds", type=float, default=10.0,
                        help="lockstep run length per actuator mode (s)")
    parser.add_argument("--actuator", default="faithful", choices=["faithful", "fast"],
                        help="actuator mode of the realtime run")
    parser.add_argument("--rt-priority", type=int, default=50,
                        help="then the realtime run again with this rt_priority (0: skip it)")
    args = parser.parse_args()

    domain = 1 + os.getpid() % 101
    tmp = Path(tempfile.mkdtemp(prefix="bench_sim_node_"))
    env = ros_subprocess_env(domain, str(tmp / "ros_log"))
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE",
                                            "ROS_LOG_DIR", "RMW_IMPLEMENTATION",
                                            "AMENT_PREFIX_PATH")})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    load_before = os.getloadavg()

    results = {"name": "sim_node", "config": {
        "realtime_seconds": args.seconds, "lockstep_seconds": args.lockstep_seconds,
        "realtime_actuator": args.actuator, "publish_rate_hz": 400.0, "target_rate_hz": 40.0,
        "policy_period_s": SimNodeConfig().policy_period, "timestep_s": SimNodeConfig().timestep},
        "device": {"cpu_count": os.cpu_count(), "machine": platform.machine(),
                   "python": platform.python_version(), "processor": platform.processor()}}
    # Before this process has any ROS thread that could take the CPU from the loop.
    results["machine_floor"] = {"normal": bare_loop_missed_periods(args.seconds, 0)}
    if args.rt_priority:
        results["machine_floor"]["rt_priority"] = bare_loop_missed_periods(args.seconds,
                                                                          args.rt_priority)
    policy = Policy()
    try:
        results["realtime"] = {
            "baseline_physics_alone_rtf": physics_alone_rtf(args.actuator, 3.0),
            **realtime_over_ros(policy, env, tmp, args.actuator, args.seconds),
        }
        if args.rt_priority:
            results["realtime_rt_priority"] = realtime_over_ros(
                policy, env, tmp, args.actuator, args.seconds, args.rt_priority)
        results["lockstep"] = {}
        for actuator in ("faithful", "fast"):
            alone = lockstep_alone(actuator, 3.0)
            ros = lockstep_over_ros(policy, env, tmp, actuator, args.lockstep_seconds)
            results["lockstep"][actuator] = {
                **ros, "baseline_in_process_steps_per_s": alone,
                "baseline_times_real_time": alone * SimNodeConfig().policy_period,
                "fraction_of_baseline": ros["policy_steps_per_s"] / alone}
    finally:
        policy.close()
    results["device"]["load_average_before"] = load_before
    results["device"]["load_average_after"] = os.getloadavg()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
