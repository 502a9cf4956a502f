"""The walking criterion: ``cassie-rl eval POLICY`` prints JSON.

20 episodes of 10 s with the deterministic policy and sensor noise on, each commanded a forward
speed (0.0 and 1.0 exactly, the rest drawn from 0.0–1.0) at stepping frequency 1. An episode
passes when the pelvis stays above 0.6 m throughout, the mean |vx − command| over the last 8 s is
below 0.1 m/s, lateral drift stays below 0.5 m and yaw drift below 15°. The same is reported with
a 50 N, 0.2 s lateral push halfway through each episode.

Gait quality is reported beside the verdict: each foot's mean step length over the last 8 s
(how far ahead of the other foot it lands, along the starting heading) and their asymmetry.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

import numpy as np

from cassie_rl_ros.envs.cassie_env import CassieEnv, CassieEnvConfig
from cassie_rl_ros.envs.observations import quat_yaw, wrap_angle
from cassie_rl_ros.envs.rewards import CONTACT_FORCE, swing_airborne, swing_share
from cassie_sim_ros.config import from_dict, to_dict

PolicyFn = Callable[[np.ndarray], np.ndarray]

CRITERIA = {"min_height": 0.6, "speed_error": 0.1, "lateral_drift": 0.5, "yaw_drift_deg": 15.0}
MIN_STEP = 0.05
"""m: below this mean step length the robot steps in place and asymmetry means nothing."""


class StepLengths:
    """Per episode and foot, the step lengths at touchdowns: how far ahead of the other foot
    (along the episode's starting heading) the landing foot is."""

    def __init__(self, heading: np.ndarray):
        self.cos, self.sin = np.cos(heading), np.sin(heading)
        self.in_contact = np.ones((heading.size, 2), dtype=bool)  # episodes start standing
        self.lengths: list[tuple[list[float], list[float]]] = [([], []) for _ in heading]

    def update(self, forces: np.ndarray, positions: np.ndarray, record: bool = True) -> None:
        """One policy step's (N, 2, 3) ground reaction forces and foot positions."""
        contact = forces[..., 2] > CONTACT_FORCE
        touchdown = contact & ~self.in_contact
        self.in_contact = contact
        if record and touchdown.any():
            along = positions[..., 0] * self.cos[:, None] + positions[..., 1] * self.sin[:, None]
            for episode, foot in zip(*np.nonzero(touchdown)):
                self.lengths[episode][foot].append(float(along[episode, foot]
                                                         - along[episode, 1 - foot]))

    def summary(self, episode: int) -> dict:
        """Mean step length of each foot (None without steps) and their asymmetry
        |left − right| / mean (None while stepping in place)."""
        means = [float(np.mean(x)) if x else None for x in self.lengths[episode]]
        asymmetry = None
        if None not in means and (means[0] + means[1]) / 2 > MIN_STEP:
            asymmetry = abs(means[0] - means[1]) / ((means[0] + means[1]) / 2)
        return {"step_length_left": None if means[0] is None else round(means[0], 4),
                "step_length_right": None if means[1] is None else round(means[1], 4),
                "step_asymmetry": None if asymmetry is None else round(asymmetry, 4)}


def evaluation_env_config(config: CassieEnvConfig, seconds: float) -> CassieEnvConfig:
    """The trained task, made deterministic to judge: noisy sensors, no terminations, no
    randomisation or training pushes, fixed heading and stepping frequency 1."""
    data = to_dict(config.for_evaluation())  # the whole command range, standing starts
    data["sim"]["sensor_noise"] = True
    data["episode_seconds"] = seconds + 1.0
    data["terminations"] = {}
    data["randomization"]["enabled"] = False
    data["pushes"]["rate"] = 0.0
    data["reset"].update(random_heading=False, random_phase=False)
    data["gait"]["step_frequency"] = [1.0, 1.0]
    data["command"].update(zero_probability=0.0, resample_seconds=0.0)
    return from_dict(CassieEnvConfig, data)


def evaluate_walking(policy: PolicyFn, config: CassieEnvConfig, episodes: int = 20,
                     seconds: float = 10.0, push_force: float = 0.0, push_duration: float = 0.2,
                     push_direction: str = "lateral", speeds: np.ndarray | None = None,
                     seed: int = 0, num_threads: int = 1) -> dict:
    """Run ``episodes`` episodes in parallel and judge them against the walking criterion.

    ``speeds`` fixes the commanded forward speeds (default: 0.0, 1.0 and uniform draws);
    ``push_direction`` is ``lateral`` (the robot's own sideways axis) or ``random``.
    """
    if push_direction not in ("lateral", "random"):
        raise ValueError(f"push_direction must be 'lateral' or 'random', got {push_direction!r}")
    env = CassieEnv(evaluation_env_config(config, seconds), num_envs=episodes,
                    num_threads=num_threads, seed=seed)
    rng = np.random.default_rng(seed)
    if speeds is None:
        speeds = np.concatenate([[0.0, 1.0], rng.uniform(0.0, 1.0, max(0, episodes - 2))])
        speeds = speeds[:episodes]
    speeds = np.broadcast_to(np.asarray(speeds, dtype=float), (episodes,))
    obs = env.reset()
    command = np.zeros((episodes, 3))
    command[:, 0] = speeds
    env.set_commands(command=command, step_frequency=np.ones(episodes))
    obs = env.get_observations()
    start_pos, start_quat = env.sim.pelvis_pose()
    start_yaw = quat_yaw(start_quat)
    steps = int(round(seconds / env.dt))
    settle = int(round(2.0 / env.dt))  # the speed error counts over the last 8 s
    push_step = steps // 2
    push_sign = rng.choice([-1.0, 1.0], episodes)
    push_heading = np.full(episodes, np.nan)  # the push's direction seen from the robot
    min_height = np.full(episodes, np.inf)
    speed_error = np.zeros(episodes)
    max_lateral = np.zeros(episodes)
    max_yaw = np.zeros(episodes)
    steps_taken = StepLengths(start_yaw)
    swing_steps = np.zeros(episodes)
    airborne_steps = np.zeros(episodes)
    gait = env.config.gait
    for k in range(steps):
        if push_force > 0.0 and k == push_step:
            if push_direction == "lateral":  # along the robot's own left/right axis
                angle = quat_yaw(env.sim.pelvis_pose()[1]) + np.pi / 2
            else:
                angle = rng.uniform(-np.pi, np.pi, episodes)
            direction = np.stack([np.cos(angle), np.sin(angle), np.zeros(episodes)], axis=1)
            env.sim.push(direction * (push_force * push_sign)[:, None], duration=push_duration)
            pushed_towards = angle + np.where(push_sign < 0, np.pi, 0.0)
            push_heading = wrap_angle(pushed_towards - quat_yaw(env.sim.pelvis_pose()[1]))
        obs, _, _, _ = env.step(policy(obs))
        pos, quat = env.sim.pelvis_pose()
        vel, _ = env.sim.pelvis_twist()
        min_height = np.minimum(min_height, pos[:, 2])
        forces = env.sim.foot_forces()
        steps_taken.update(forces, env.sim.foot_positions(), record=k >= settle)
        if k >= settle:
            swing = swing_share(env.task.phase, gait.swing_ratio, gait.leg_phase_offset)
            swing_steps += (swing > 0.99).sum(axis=1)
            airborne_steps += swing_airborne(swing, forces).sum(axis=1)
        c, s = np.cos(start_yaw), np.sin(start_yaw)
        if k >= settle:
            forward_speed = c * vel[:, 0] + s * vel[:, 1]
            speed_error += np.abs(forward_speed - speeds)
        offset = pos - start_pos
        max_lateral = np.maximum(max_lateral, np.abs(-s * offset[:, 0] + c * offset[:, 1]))
        max_yaw = np.maximum(max_yaw, np.abs(np.degrees(wrap_angle(quat_yaw(quat) - start_yaw))))
    speed_error /= max(1, steps - settle)
    fell = min_height < CRITERIA["min_height"]
    passed = (~fell & (speed_error < CRITERIA["speed_error"])
              & (max_lateral < CRITERIA["lateral_drift"]) & (max_yaw < CRITERIA["yaw_drift_deg"]))
    # The share of the clock's swing time each episode's feet spent in the air: near 0, the
    # robot stands on both feet whatever the clock says.
    airborne = airborne_steps / np.maximum(swing_steps, 1)
    gaits = [{**steps_taken.summary(e), "swing_airborne": round(float(airborne[e]), 3)}
             for e in range(episodes)]
    asymmetries = [g["step_asymmetry"] for g in gaits if g["step_asymmetry"] is not None]
    return {
        "episodes": episodes, "seconds": seconds, "push_force_n": push_force,
        "passed": int(passed.sum()), "falls": int(fell.sum()),
        "all_passed": bool(passed.all()),
        "mean_speed_error": float(speed_error.mean()),
        "max_speed_error": float(speed_error.max()),
        "max_lateral_drift_m": float(max_lateral.max()),
        "max_yaw_drift_deg": float(max_yaw.max()),
        "mean_step_asymmetry": float(np.mean(asymmetries)) if asymmetries else None,
        "mean_swing_airborne": float(airborne.mean()),
        "per_episode": [
            {"command": round(float(v), 3), "passed": bool(p), "fell": bool(f),
             "speed_error": round(float(e), 4), "lateral_drift": round(float(y), 4),
             "yaw_drift_deg": round(float(w), 2), "min_height": round(float(h), 3),
             # 0 = pushed forward, 90 = towards its left; None: no push
             "push_heading_deg": None if np.isnan(a) else round(float(np.degrees(a)), 1), **g}
            for v, p, f, e, y, w, h, a, g in zip(speeds, passed, fell, speed_error, max_lateral,
                                                 max_yaw, min_height, push_heading, gaits)],
        "criteria": CRITERIA,
    }


def load_policy_fn(paths: list[str]) -> tuple[PolicyFn, CassieEnvConfig]:
    """A saved policy (or an ensemble of several) as obs -> deterministic action, with the env
    config it was trained on."""
    import torch

    from cassie_rl_ros.training.checkpoint import load_ensemble, load_policy
    if len(paths) == 1:
        policy, cfg = load_policy(paths[0])
        configs = [cfg]
    else:
        policy, configs = load_ensemble(paths)

    @torch.no_grad()
    def act(obs: np.ndarray) -> np.ndarray:
        return policy.act_deterministic(torch.as_tensor(obs, dtype=torch.float32)).numpy()

    return act, configs[0].env


def summary_line(report: dict) -> str:
    """One line of a ``cassie-rl eval`` report: the verdict and the worst figures."""
    def part(result: dict) -> str:
        return (f"{result['passed']}/{result['episodes']} pass, {result['falls']} falls, speed "
                f"error {result['mean_speed_error']:.3f} m/s, lateral <= "
                f"{result['max_lateral_drift_m']:.2f} m, yaw <= "
                f"{result['max_yaw_drift_deg']:.1f} deg")
    pushed = f"; pushed {part(report['pushed'])}" if "pushed" in report else ""
    return f"{' '.join(report['policy'])}: {part(report['nominal'])}{pushed}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cassie-rl eval", description=__doc__.splitlines()[0])
    parser.add_argument("policy", nargs="+", help="run directory or policy.safetensors; "
                        "several are evaluated as an ensemble averaging their actions")
    parser.add_argument("--each", action="store_true",
                        help="evaluate each policy on its own (e.g. a run's kept policies, "
                        "RUN/policies/*): a JSON list, and a line per policy on stderr")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--push-force", type=float, default=50.0,
                        help="lateral push for the second report (N); 0 skips it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    from cassie_rl_ros.training.checkpoint import CheckpointError
    groups = [[p] for p in args.policy] if args.each else [args.policy]
    try:  # all of them before any evaluation: a bad path fails at once, not an hour in
        loaded = [(paths, *load_policy_fn(paths)) for paths in groups]
    except (CheckpointError, OSError) as err:
        print(f"cassie-rl eval: {err}", file=sys.stderr)
        return 2
    reports = []
    for paths, policy, env_config in loaded:
        report = {"policy": paths,
                  "nominal": evaluate_walking(policy, env_config, args.episodes, args.seconds,
                                              seed=args.seed, num_threads=args.threads)}
        if args.push_force > 0:
            report["pushed"] = evaluate_walking(policy, env_config, args.episodes, args.seconds,
                                                push_force=args.push_force, seed=args.seed,
                                                num_threads=args.threads)
        if args.each:
            print(summary_line(report), file=sys.stderr, flush=True)
        reports.append(report)
    print(json.dumps(reports if args.each else reports[0], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
