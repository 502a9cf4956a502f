"""hardware_bridge's 2 kHz UDP loop: period, jitter and CPU share, against a bare loop.

Prints one JSON object. Both loops run as their own processes on this machine, one after the
other, for the same time:

* baseline: a bare 2 kHz loop that waits with ``select`` until each deadline (the bridge's own
  scheduling, timer slack lowered the same way) and does nothing else: what this machine's
  scheduler allows a Python process.
* bridge: the real node (``python -m cassie_rl_ros.nodes.hardware_bridge``, realtime mode,
  400 Hz state publishing) talking over loopback UDP to a light robot stand-in (a separate
  process that answers every ``pd_in_t`` with a ``state_out_t``: the robot's 2 kHz stream
  without a simulator, so the simulator's CPU does not weigh on the measurement), while this
  process acts as the policy: PD targets at 40 Hz, subscribed to the joint states.

Loop period statistics are over the sent packets after a warm-up of ``--warmup`` s: the
baseline's over the whole measured time; the bridge's from its /diagnostics (one window per
second: the median window's p99 and the worst window's; its whole-run stats, startup included,
are listed too). CPU share is the process's user + system time over wall time
after the warm-up, as a fraction of one core. Goal: p99 |period − 0.5 ms| < 0.25 ms and
under half a core.

    python bench/bridge_loop.py [--seconds 10] [--warmup 2] [--rt-priority 50 (the default)]

The machine's load average is recorded: on a shared machine the numbers are only as good as it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PERIOD = 0.0005
GOAL_P99_MS = 0.25
GOAL_CPU = 0.5


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (s), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_share(proc: subprocess.Popen, warmup: float, seconds: float) -> float:
    time.sleep(warmup)
    c0, t0 = cpu_seconds(proc.pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0)


# ------------------------------------------------------------------ child processes


def baseline_child(seconds: float, warmup: float, rt_priority: int):
    """The bare loop: select until each deadline, nothing else. Prints its periods' stats."""
    from cassie_rl_ros.bridge.core import period_stats
    from cassie_sim_ros.nodes.node_main import realtime_thread

    refused = realtime_thread(rt_priority)  # refused: normal scheduling, said in the JSON
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sends = []
    start = next_due = time.monotonic()
    while next_due < start + warmup + seconds:
        while (wait := next_due - time.monotonic()) > 0:
            select.select([sock], [], [], wait)
        sends.append(time.monotonic())
        next_due += PERIOD
    t = np.array(sends)
    periods = np.diff(t[t >= start + warmup])
    print(json.dumps({**{k: round(v, 4) for k, v in period_stats(periods).items()},
                      "rt_priority_refused": refused}), flush=True)


def robot_child():
    """Answers every datagram with a state_out_t (header: own sequence, echo of theirs)."""
    from cassie_rl_ros.bridge import protocol as P

    state = P.StateOut()
    state.radio.signalGood = True
    state.radio.channel[8] = state.radio.channel[9] = 1.0  # e-stop released, policy
    state.pelvis.orientation[0] = 1.0
    payload = P.pack_state_out(state)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    seq = 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        data, peer = sock.recvfrom(2048)
        seq = (seq + 1) % 256
        sock.sendto(P.pack_packet(seq, data[0], payload), peer)


# ------------------------------------------------------------------ runs


def run_baseline(seconds: float, warmup: float, rt_priority: int) -> dict:
    proc = subprocess.Popen([sys.executable, __file__, "--baseline-child", str(seconds),
                             "--warmup", str(warmup), "--rt-priority", str(rt_priority)],
                            stdout=subprocess.PIPE, text=True)
    share = cpu_share(proc, warmup, seconds)
    out, _ = proc.communicate(timeout=60)
    return {**json.loads(out.strip().splitlines()[-1]), "cpu_share": round(share, 3)}


def run_bridge(seconds: float, warmup: float, rt_priority: int) -> dict:
    import rclpy
    from rclpy.context import Context
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState

    from cassie_sim_ros.model import STANDING_MOTOR_POSITION
    from cassie_rl_ros.ros_env import ros_subprocess_env
    from cassie_sim_ros import constants as C

    tmp = Path(tempfile.mkdtemp(prefix="bridge_loop_"))
    env = ros_subprocess_env(1 + os.getpid() % 101, str(tmp / "ros_log"))
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE",
                                           "RMW_IMPLEMENTATION", "AMENT_PREFIX_PATH")})
    robot = subprocess.Popen([sys.executable, __file__, "--robot-child"], stdout=subprocess.PIPE,
                             text=True)
    port = int(robot.stdout.readline())
    log = open(tmp / "bridge.log", "w+")
    bridge = subprocess.Popen(
        [sys.executable, "-m", "cassie_rl_ros.nodes.hardware_bridge", "--ros-args",
         "-p", "robot_address:=127.0.0.1", "-p", f"robot_port:={port}",
         "-p", "local_address:=127.0.0.1", "-p", "local_port:=0",
         "-p", f"rt_priority:={rt_priority}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node("bench_policy", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    states, windows, measuring = [0], [], [False]
    node.create_subscription(JointState, "/cassie/joint_states",
                             lambda _: states.__setitem__(0, states[0] + 1), 10)

    def on_diagnostics(msg):
        if measuring[0]:
            windows.append({kv.key: kv.value for kv in msg.status[0].values})

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    targets = node.create_publisher(JointState, "/cassie/pd_targets", 10)
    msg = JointState(name=list(C.MOTOR_NAMES))
    msg.position = STANDING_MOTOR_POSITION.tolist()
    try:
        end = time.monotonic() + 60
        while targets.get_subscription_count() == 0 and time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
        c0 = t0 = None
        start = time.monotonic()
        next_target = start
        while (now := time.monotonic()) < start + warmup + seconds:
            if c0 is None and now >= start + warmup:
                c0, t0, s0 = cpu_seconds(bridge.pid), now, states[0]
                measuring[0] = True
            if now >= next_target:
                targets.publish(msg)  # a 40 Hz policy
                next_target += 0.025
            executor.spin_once(timeout_sec=0.002)
        share = (cpu_seconds(bridge.pid) - c0) / (time.monotonic() - t0)
        state_rate = (states[0] - s0) / (time.monotonic() - t0)
    finally:
        os.killpg(bridge.pid, signal.SIGINT)
        bridge.wait(timeout=20)
        robot.terminate()
        robot.wait(timeout=5)
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
    log.seek(0)
    text = log.read()
    found = re.search(r"stats (\{.*\})", text)
    if not found:
        raise RuntimeError(f"hardware_bridge printed no stats:\n{text}")
    stats = json.loads(found.group(1))
    refused = re.search(r"rt_priority \d+ refused.*", text)
    # Per 1 s diagnostics window after the warm-up (the first one may straddle it: dropped).
    windows = windows[1:]
    p99 = [float(w["loop_jitter_ms_p99"]) for w in windows]
    keys = ("sent", "received", "lost", "overruns", "round_trip_ms_median", "round_trip_ms_p99")
    return {"period_median_ms": float(np.median([float(w["loop_period_ms_median"])
                                                  for w in windows])),
            "period_p99_deviation_ms": round(float(np.median(p99)), 4),
            "period_p99_deviation_ms_worst_window": round(max(p99), 4),
            "period_max_deviation_ms": max(float(w["loop_jitter_ms_max"]) for w in windows),
            "windows": len(windows),
            "whole_run_with_startup": {k: stats.get(k) for k in (
                "period_median_ms", "period_p99_deviation_ms", "period_max_deviation_ms")},
            **{k: stats.get(k) for k in keys}, "cpu_share": round(share, 3),
            "joint_states_hz": round(state_rate, 1),
            "rt_priority_refused": refused.group(0) if refused else None}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rt-priority", type=int, default=50,
                        help="SCHED_FIFO priority of both loops (the bridge's rt_priority, "
                        "default 50); 0: normal scheduling. Needs root or CAP_SYS_NICE")
    parser.add_argument("--baseline-child", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--robot-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_child is not None:
        return baseline_child(args.baseline_child, args.warmup, args.rt_priority)
    if args.robot_child:
        return robot_child()
    baseline = run_baseline(args.seconds, args.warmup, args.rt_priority)
    bridge = run_bridge(args.seconds, args.warmup, args.rt_priority)
    result = {
        "name": "bridge_loop",
        "config": {"seconds": args.seconds, "warmup": args.warmup, "loop_hz": 1 / PERIOD,
                   "publish_hz": 400, "targets_hz": 40, "rt_priority": args.rt_priority},
        "device": {"machine": platform.machine(), "cpus": os.cpu_count(),
                   "python": platform.python_version(),
                   "loadavg_1min": round(os.getloadavg()[0], 2)},
        "baseline_bare_select_loop": baseline,
        "bridge": bridge,
        "p99_deviation_ratio": (round(bridge["period_p99_deviation_ms"]
                                      / baseline["period_p99_deviation_ms"], 2)
                                if baseline["period_p99_deviation_ms"] else None),
        "goal": {"p99_deviation_ms_below": GOAL_P99_MS, "cpu_share_below": GOAL_CPU},
        "meets_goal": bool(bridge["period_p99_deviation_ms"] < GOAL_P99_MS
                           and bridge["cpu_share"] < GOAL_CPU),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
