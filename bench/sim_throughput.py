"""Physics steps per second: raw MuJoCo (the ceiling) against CassieSim, single and batched.

Prints one JSON object. Every number comes from this run, so compare the ratios, not absolute
times. Each case holds the standing PD targets for one policy step (60 x 0.5 ms or 15 x 2 ms) and
resets every second of simulated time, so all cases simulate the same motion.

    python bench/sim_throughput.py [--seconds 6] [--rounds 3] [--num-sims 32]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import time

import mujoco
import numpy as np

from cassie_sim_ros import constants as C
from cassie_sim_ros.model import STANDING_QPOS, load_model
from cassie_sim_ros.sim import CassieSim, SimConfig

HOLDS = {0.0005: 60, 0.002: 15}


def raw_mujoco(timestep: float, hold: int, seconds: float) -> float:
    """mj_step in a C loop on one MjData, the PD in the actuator bias: the one-core ceiling."""
    model = load_model(timestep=timestep)
    model.actuator_gainprm[:, 0] = 1.0
    model.actuator_biasprm[:, 1] = -C.DEFAULT_KP
    model.actuator_biasprm[:, 2] = -C.DEFAULT_KD
    data = mujoco.MjData(model)
    motor_qadr = [model.jnt_qposadr[model.joint(n).id] for n in C.MOTOR_NAMES]
    policy_steps_per_episode = max(1, int(round(1.0 / (hold * timestep))))
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        mujoco.mj_resetDataKeyframe(model, data, 0)
        data.ctrl[:] = C.DEFAULT_KP * STANDING_QPOS[motor_qadr]
        for _ in range(policy_steps_per_episode):
            mujoco.mj_step(model, data, nstep=hold)
            steps += hold
    return steps / (time.perf_counter() - start)


def raw_mujoco_two_processes(timestep: float, hold: int, seconds: float) -> float:
    """Two raw loops in two processes at once: what this machine's two cores give together,
    the real ceiling of any 2-thread stepping."""
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        return float(sum(pool.starmap(raw_mujoco, [(timestep, hold, seconds)] * 2)))


def cassie_sim(timestep: float, hold: int, seconds: float, actuator: str, num_sims: int,
               num_threads: int) -> float:
    sim = CassieSim(SimConfig(actuator=actuator, timestep=timestep), num_sims=num_sims,
                    num_threads=num_threads)
    policy_steps_per_episode = max(1, int(round(1.0 / (hold * timestep))))
    targets = sim.motor_state()[0]
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sim.reset()
        for _ in range(policy_steps_per_episode):
            sim.set_pd(targets)
            sim.step(hold)
            steps += hold * num_sims
    return steps / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="wall time per case, split "
                        "over the rounds")
    parser.add_argument("--rounds", type=int, default=3, help="the cases take turns this many "
                        "times, so a slow spell of the machine hits them all alike")
    parser.add_argument("--num-sims", type=int, default=32, help="sims in the batched cases")
    args = parser.parse_args()
    share = args.seconds / args.rounds
    raw_mujoco(0.002, 15, 0.5)  # warm-up: caches and CPU clock before anything is timed
    results = {}
    for timestep, hold in HOLDS.items():
        cases = {"raw": lambda: raw_mujoco(timestep, hold, share),
                 "raw_two_processes": lambda: raw_mujoco_two_processes(timestep, hold, share)}
        for actuator in ("fast", "faithful"):
            for label, sims, threads in (("single", 1, 1), ("batched_1_thread", args.num_sims, 1),
                                         ("batched_2_threads", args.num_sims, 2)):
                cases[f"{actuator}.{label}"] = (
                    lambda a=actuator, n=sims, t=threads:
                    cassie_sim(timestep, hold, share, a, n, t))
        rates = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, measure in cases.items():
                rates[name].append(measure())
        median = {name: float(np.median(r)) for name, r in rates.items()}
        raw = median["raw"]
        case = {"raw_mujoco_steps_per_s": raw,
                "raw_two_processes_steps_per_s": median["raw_two_processes"],
                "two_cores_over_one": median["raw_two_processes"] / raw}
        for actuator in ("fast", "faithful"):
            case[actuator] = {}
            for label in ("single", "batched_1_thread", "batched_2_threads"):
                rate = median[f"{actuator}.{label}"]
                case[actuator][f"{label}_steps_per_s"] = rate
                case[actuator][f"{label}_over_raw"] = rate / raw
        # What a simulated second costs, relative to the 2 kHz robot rate.
        case["sim_seconds_per_wall_second_fast_batched_2_threads"] = (
            case["fast"]["batched_2_threads_steps_per_s"] * timestep)
        results[f"{hold}x{timestep * 1000:g}ms"] = case
    print(json.dumps({
        "name": "sim_throughput",
        "device": f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})",
        "mujoco": mujoco.__version__,
        "num_sims": args.num_sims,
        "seconds_per_case": args.seconds,
        "rounds": args.rounds,
        "targets": {"fast.batched_2_threads_over_raw": ">= 1.8", "fast.single_over_raw": ">= 0.9"},
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
