"""State estimator accuracy against ground truth, and its cost per update.

Prints one JSON object. Scenarios run in the faithful simulator with sensor noise and encoder
quantisation on, and with IMU errors the simulator lacks added by ``ImuErrors`` (AHRS tilt
offset and jitter, yaw drift, gyro and accelerometer biases). The robot is kept up by scripted
controllers that read the true state (test fixtures, not part of the estimator) or, in
``walking``, by the shipped walking policy:

- ``standing``: a balance controller (stiff PD on the standing pose, ankle and hip feedback on
  pelvis pitch, roll and height). It holds Cassie for about 2.9 s; every metric covers the
  window until the pelvis drops below 0.75 m, and ``window_s`` says how long that was.
- ``pushes``: the same, with 30-40 N pushes of 0.2 s at 0.5, 1.2, 1.9 and 2.6 s; the controller
  loses the robot about 0.2 s after the second, so the window holds two pushes.
- ``fall``: the same until 0.3 s, then damping only (P gains 0): Cassie collapses and lands.
- ``stepping``: open-loop sinusoidal stepping in place with a weight shift, the pelvis on a soft
  gantry (spring-dampers on height, roll and pitch, and a trolley pulling it forward at
  0.3 m/s): feet lift, touch down and slide a little; the gantry carries part of the weight.

Position drift is the horizontal error at the end of the window less that at its start, as a
percentage of the path length (sampled at 10 Hz; for the standing scenarios that path is sway).
Costs are measured on the standing recording, with ``numpy_call_us`` (one small numpy call on
this machine) to scale them by: the estimator's time is mostly per-call overhead.

    python bench/estimator.py [--seconds 3] [--seeds 2] [--policy PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from cassie_sim_ros import constants as C
from cassie_sim_ros.estimator import (SIMULATED_CONTACT_CREEP, CassieEstimator, EstimatorConfig,
                                      ImuErrors, quat_to_matrix)
from cassie_sim_ros.config import to_dict
from cassie_sim_ros.sim import CassieSim, SensorReadings, SimConfig

SCRIPTED = ("standing", "pushes", "fall", "stepping")
WALKING_SPEED = 0.5
DT = 0.0005
CONTROL_EVERY = 20  # the scripted controllers run at 100 Hz
MIN_HEIGHT = 0.75  # below this a standing scenario's window ends

# Balance controller: gains found by a small search in the faithful simulator.
KP = np.tile([300.0, 300.0, 300.0, 300.0, 50.0], 2)
KD = np.tile([20.0, 20.0, 20.0, 20.0, 5.0], 2)
K_PITCH, K_FOOT, K_ROLL, K_COM, K_HEIGHT = 1.0, -0.5, 1.0, -2.0, 1.0
PUSHES = ((0.5, (40.0, 0.0, 0.0)), (1.2, (0.0, 30.0, 0.0)), (1.9, (-30.0, -20.0, 0.0)),
          (2.6, (0.0, -30.0, 0.0)))


def roll_pitch(quat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w, x, y, z = quat.T
    roll = np.arctan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = np.arcsin(np.clip(2 * (w * y - z * x), -1, 1))
    return roll, pitch


def yaw_of(quat: np.ndarray) -> np.ndarray:
    w, x, y, z = quat.T
    return np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def balance_targets(sim: CassieSim, stand: np.ndarray) -> np.ndarray:
    """Standing pose plus feedback on the true pelvis pitch, roll, height and CoM offset."""
    pos, quat = sim.pelvis_pose()
    vel, omega = sim.pelvis_twist()
    roll, pitch = roll_pitch(quat)
    feet = sim.foot_positions().mean(1)
    targets = np.tile(stand, (sim.num_sims, 1))
    pitch_fb = pitch + 0.05 * omega[:, 1]
    com = pos[:, 0] - feet[:, 0] + 0.1 * vel[:, 0]
    targets[:, [2, 7]] += (K_PITCH * pitch_fb)[:, None]
    targets[:, [4, 9]] += (K_FOOT * pitch_fb + K_COM * com)[:, None]
    targets[:, [0, 5]] += (K_ROLL * (roll + 0.05 * omega[:, 0]))[:, None]
    targets[:, [3, 8]] += (K_HEIGHT * (pos[:, 2] - 0.9 + 0.1 * vel[:, 2]))[:, None]
    return targets


def stepping_targets(t: float, stand: np.ndarray) -> np.ndarray:
    """Open-loop stepping in place at 1.25 Hz: hip roll shifts the weight, the unloaded leg
    bends hip and knee to lift its foot and swings slightly forward."""
    phase = 2 * np.pi * 1.25 * t
    targets = stand.copy()
    shift = 0.06 * np.sin(phase)
    targets[[0, 5]] += shift
    for side, sign in ((0, 1.0), (1, -1.0)):
        lift = max(0.0, sign * np.sin(phase + 0.4))
        targets[5 * side + 2] += 0.35 * lift + 0.05
        targets[5 * side + 3] -= 0.5 * lift
        targets[5 * side + 4] += 0.3 * lift
    return targets


def gantry_wrench(sim: CassieSim, i: int, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Soft gantry on sim ``i``: height, roll and pitch springs, a trolley pulling in x."""
    pos, quat = sim.pelvis_pose()
    vel, omega = sim.pelvis_twist()
    roll, pitch = roll_pitch(quat[i:i + 1])
    force = np.array([300.0 * (0.3 * t - pos[i, 0]) + 150.0 * (0.3 - vel[i, 0]),
                      -300.0 * pos[i, 1] - 150.0 * vel[i, 1],
                      1500.0 * (0.95 - pos[i, 2]) - 200.0 * vel[i, 2]])
    force[2] = np.clip(force[2], 0.0, 250.0)
    R = quat_to_matrix(quat[i])
    torque_body = np.array([-400.0 * roll[0] - 40.0 * omega[i, 0],
                            -400.0 * pitch[0] - 40.0 * omega[i, 1], -20.0 * omega[i, 2]])
    return force, R @ torque_body


def walking_runners(policy: str, sims: list[int]) -> dict:
    """One PolicyRunner (what the policy node runs) per walking sim."""
    from cassie_rl_ros.policy_runner import PolicyRunner

    return {i: PolicyRunner.load(policy, speed=WALKING_SPEED) for i in sims}


def simulate(seconds: float, seeds: int, scenarios: tuple[str, ...], policy: str | None) -> dict:
    """Run all scenarios x seeds as one batch of sims; record sensor readings (with the IMU
    errors) and ground truth at every physics step."""
    names = [name for _ in range(seeds) for name in scenarios]
    n = len(names)
    sim = CassieSim(SimConfig(sensor_noise=True, actuator="faithful", seed=1), num_sims=n)
    imu = ImuErrors(n, DT, seed=2)
    stand = sim.motor_state()[0][0]
    steps = int(round(seconds / DT))
    readings, truth = {}, {key: [] for key in ("v", "q", "p", "feet", "force")}
    gantry = [i for i, name in enumerate(names) if name == "stepping"]
    fall = [i for i, name in enumerate(names) if name == "fall"]
    pushed = [i for i, name in enumerate(names) if name == "pushes"]
    runners = walking_runners(policy, [i for i, nm in enumerate(names) if nm == "walking"])
    policy_every = (int(round(next(iter(runners.values())).dt / DT)) if runners else 0)
    walking_targets = {i: stand.copy() for i in runners}
    for k in range(steps):
        t = k * DT
        if runners and k % policy_every == 0:
            sensors = sim.sensors()
            for i, runner in runners.items():
                mine = sensors.select(slice(i, i + 1))
                runner.readings(mine, t, k * int(DT * 1e9))
                walking_targets[i] = runner.step(t).targets
        if k % CONTROL_EVERY == 0:
            targets = balance_targets(sim, stand)
            kp, kd = np.tile(KP, (n, 1)), np.tile(KD, (n, 1))
            for i in gantry:
                targets[i] = stepping_targets(t, stand)
            for i, walking in walking_targets.items():
                targets[i], kp[i], kd[i] = walking, C.DEFAULT_KP, C.DEFAULT_KD
            if t >= 0.3:
                kp[fall] = 0.0
            sim.set_pd(targets, kp=kp, kd=kd)
        for start, force in PUSHES:
            if pushed and abs(t - start) < DT / 2:
                sim.push(force, duration=0.2, ids=pushed)
        for i in gantry:
            force, torque = gantry_wrench(sim, i, t)
            sim.push(force, torque, duration=DT, ids=[i])
        sim.step(1)
        for key, value in vars(imu.apply(sim.sensors())).items():
            readings.setdefault(key, []).append(value)
        pos, quat = sim.pelvis_pose()
        truth["v"].append(sim.pelvis_twist()[0])
        truth["q"].append(quat)
        truth["p"].append(pos)
        truth["feet"].append(sim.foot_positions())
        truth["force"].append(sim.foot_forces()[:, :, 2])
    return {"names": names, "readings": {k: np.array(v) for k, v in readings.items()},
            "truth": {k: np.array(v) for k, v in truth.items()}}


def evaluate(recording: dict, config: EstimatorConfig) -> dict:
    """Replay a recording through one batched estimator; metrics per scenario."""
    names, readings, truth = recording["names"], recording["readings"], recording["truth"]
    steps, n = truth["v"].shape[:2]
    est = CassieEstimator(n, DT, config)
    fields = {key: np.zeros((steps, n) + shape) for key, shape in (
        ("v", (3,)), ("q", (4,)), ("p", (3,)), ("h", ()), ("feet", (2, 3)), ("contact", (2,)))}
    for k in range(steps):
        state = est.update(SensorReadings(**{key: value[k] for key, value in readings.items()}))
        fields["v"][k] = state.pelvis_translational_velocity
        fields["q"][k] = state.pelvis_orientation
        fields["p"][k] = state.pelvis_position
        fields["h"][k] = state.pelvis_height
        fields["feet"][k] = state.foot_position
        fields["contact"][k] = state.foot_contact
    results = {}
    for name in dict.fromkeys(names):
        rows = [i for i, nm in enumerate(names) if nm == name]
        results[name] = summarise({key: value[:, rows] for key, value in truth.items()},
                                  {key: value[:, rows] for key, value in fields.items()},
                                  standing=name in ("standing", "pushes"))
        results[name]["rejected_updates"] = int(state.rejected_updates[rows].sum())
    return results


def summarise(truth: dict, est: dict, standing: bool) -> dict:
    """Metrics per scenario, pooled over seeds (each seed's window is cut separately)."""
    steps, seeds = truth["v"].shape[:2]
    errors = {key: [] for key in ("v", "roll", "pitch", "h", "z", "foot_z")}
    windows, drifts, distances, yaw_drift, contact_agree, lowest = [], [], [], [], [], []
    for s in range(seeds):
        z = truth["p"][:, s, 2]
        low = np.flatnonzero(z < MIN_HEIGHT) if standing else np.array([], dtype=int)
        end = int(low[0]) if low.size else steps
        windows.append(end * DT)
        sl = slice(0, end)
        lowest.append(z[sl].min())
        errors["v"].append(np.linalg.norm(est["v"][sl, s] - truth["v"][sl, s], axis=1))
        # Roll and pitch errors: the body-frame x and y of the rotation from true to estimated
        # orientation (well defined in any pose, unlike differences of Euler angles).
        R_true, R_est = quat_to_matrix(truth["q"][sl, s]), quat_to_matrix(est["q"][sl, s])
        err = rotation_vector(R_true.transpose(0, 2, 1) @ R_est)
        errors["roll"].append(np.degrees(err[:, 0]))
        errors["pitch"].append(np.degrees(err[:, 1]))
        errors["h"].append(est["h"][sl, s] - z[sl])
        errors["z"].append(est["p"][sl, s, 2] - z[sl])
        loaded = truth["force"][sl, s] > 30.0
        contact_agree.append(np.mean(est["contact"][sl, s].astype(bool) == loaded))
        foot_err = est["feet"][sl, s, :, 2] - truth["feet"][sl, s, :, 2]
        errors["foot_z"].append(foot_err[loaded])
        # Path length at 10 Hz, so that vibration does not count as travel.
        coarse = truth["p"][sl, s, :2][::int(0.1 / DT)]
        distances.append(np.linalg.norm(np.diff(coarse, axis=0), axis=1).sum())
        final = est["p"][end - 1, s, :2] - truth["p"][end - 1, s, :2]
        start = est["p"][0, s, :2] - truth["p"][0, s, :2]
        drifts.append(np.linalg.norm(final - start))
        yaw_drift.append(np.degrees(abs(_wrap(yaw_of(est["q"][end - 1:end, s])
                                              - yaw_of(truth["q"][end - 1:end, s]))[0])))
    cat = {key: np.concatenate(value) for key, value in errors.items()}
    rms = lambda a: float(np.sqrt(np.mean(np.square(a)))) if a.size else None  # noqa: E731
    distance = float(np.sum(distances))
    return {
        "window_s": [round(w, 3) for w in windows],
        "velocity_rmse_m_s": rms(cat["v"]),
        "velocity_max_error_m_s": float(cat["v"].max()),
        "roll_rmse_deg": rms(cat["roll"]),
        "pitch_rmse_deg": rms(cat["pitch"]),
        "height_above_terrain_rmse_m": rms(cat["h"]),
        "height_above_terrain_max_error_m": float(np.abs(cat["h"]).max()),
        "absolute_z_rmse_m": rms(cat["z"]),
        "stance_foot_z_rmse_m": rms(cat["foot_z"]),
        "contact_agreement": float(np.mean(contact_agree)),
        "distance_travelled_m": distance,
        "position_drift_m": float(np.sum(drifts)),
        "position_drift_percent": (100.0 * float(np.sum(drifts)) / distance
                                   if distance > 0.2 else None),
        "yaw_drift_deg": float(np.max(yaw_drift)),
        "lowest_pelvis_in_window_m": float(min(lowest)),
    }


def rotation_vector(R: np.ndarray) -> np.ndarray:
    """(n, 3, 3) → (n, 3) axis·angle (angles below π)."""
    angle = np.arccos(np.clip((np.trace(R, axis1=1, axis2=2) - 1) / 2, -1, 1))
    axis = np.stack([R[:, 2, 1] - R[:, 1, 2], R[:, 0, 2] - R[:, 2, 0], R[:, 1, 0] - R[:, 0, 1]], 1)
    scale = np.where(angle > 1e-9, angle / (2 * np.sin(np.maximum(angle, 1e-9))), 0.5)
    return axis * scale[:, None]


def _wrap(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


def cost(recording: dict, config: EstimatorConfig, num_robots: int, updates: int,
         with_state: bool) -> dict:
    """Microseconds per update call (all ``num_robots`` per call) on the standing recording:
    wall-clock and CPU time of this process."""
    column = recording["names"].index("standing")
    steps = recording["truth"]["v"].shape[0]
    readings = [SensorReadings(**{key: np.repeat(value[k, column:column + 1], num_robots, axis=0)
                                  for key, value in recording["readings"].items()})
                for k in range(min(steps, 400))]
    est = CassieEstimator(num_robots, DT, config)
    for r in readings[:20]:
        est.update(r)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(updates):
        est.update(readings[20 + i % (len(readings) - 20)], return_state=with_state)
    return {"wall_us": (time.perf_counter() - wall) / updates * 1e6,
            "cpu_us": (time.process_time() - cpu) / updates * 1e6}


def numpy_call_us() -> float:
    """This machine's cost of one small numpy call (a 21x21 elementwise product), to scale the
    cost figures by: the estimator's time is mostly per-call overhead."""
    a = np.ones((1, 21, 21))
    start = time.process_time()
    for _ in range(20000):
        a * a
    return (time.process_time() - start) / 20000 * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="simulated time per scenario")
    parser.add_argument("--seeds", type=int, default=2, help="runs of each scenario")
    parser.add_argument("--updates", type=int, default=2000, help="updates per cost measurement")
    parser.add_argument("--policy", help="walking policy (default: the shipped one, if any)")
    args = parser.parse_args()
    policy = args.policy
    if policy is None:
        from cassie_rl_ros.policy_runner import PolicyError, default_policy_path
        try:
            policy = str(default_policy_path())
        except PolicyError:
            pass  # no walking scenario
    scenarios = SCRIPTED + (("walking",) if policy else ())
    # As the simulator node runs it: it knows the simulated ground's creep. The rigid-contact
    # default (what a policy node runs, and a robot until measured) is reported beside it.
    config = EstimatorConfig(contact_creep=SIMULATED_CONTACT_CREEP)
    recording = simulate(args.seconds, args.seeds, scenarios, policy)
    results = evaluate(recording, config)
    rigid = evaluate(recording, EstimatorConfig())
    for name, r in results.items():
        r["rigid_contact"] = {key: rigid[name][key] for key in (
            "velocity_rmse_m_s", "position_drift_percent", "position_drift_m")}
    costs = {
        "single_update_and_state": cost(recording, config, 1, args.updates, True),
        "single_update_only": cost(recording, config, 1, args.updates, False),
        "batched_32_update_and_state": cost(recording, config, 32, args.updates // 4, True),
    }
    costs["batched_32_per_robot_cpu_us"] = costs["batched_32_update_and_state"]["cpu_us"] / 32
    costs["single_core_fraction_at_2khz"] = (costs["single_update_only"]["cpu_us"] * 2000 / 1e6)
    costs["numpy_call_us"] = numpy_call_us()
    goals = {"velocity_rmse_m_s": 0.05, "roll_pitch_rmse_deg": 1.0, "height_error_m": 0.02,
             "drift_percent": 2.0, "single_core_fraction_at_2khz": 0.25}
    for name, r in results.items():
        r["goals_met"] = {
            "velocity": r["velocity_rmse_m_s"] <= goals["velocity_rmse_m_s"],
            "roll_pitch": max(r["roll_rmse_deg"], r["pitch_rmse_deg"])
            <= goals["roll_pitch_rmse_deg"],
            "height": r["height_above_terrain_rmse_m"] <= goals["height_error_m"],
            "drift": (None if r["position_drift_percent"] is None
                      else r["position_drift_percent"] <= goals["drift_percent"]),
        }
    print(json.dumps({
        "name": "estimator",
        "config": {"seconds": args.seconds, "seeds": args.seeds, "dt": DT,
                   "walking_policy": policy, "walking_speed_m_s": WALKING_SPEED,
                   "sim": "faithful actuators, sensor noise, quantised encoders",
                   "imu_errors": "ImuErrorConfig defaults (AHRS tilt offset 0.3 deg and jitter, "
                                 "yaw drift, gyro and accelerometer biases)",
                   "estimator": to_dict(config)},
        "device": {"cpu": platform.processor() or platform.machine(),
                   "cores": os.cpu_count(), "python": platform.python_version(),
                   "numpy": np.__version__},
        "goals": goals,
        "scenarios": results,
        "cost_us_per_update": costs,
    }, indent=2))


if __name__ == "__main__":
    main()
