"""A tiny numpy VecEnv for the RL tests: push a 1-D point mass to the origin and keep it there."""

from __future__ import annotations

import numpy as np

from cassie_rl_ros.envs import VecEnv


class PointMassEnv(VecEnv):
    """obs = (position, velocity), action = force in [-1, 1], reward = −pos² − 0.1·vel².

    Episodes time out after ``episode_length`` steps and terminate if the mass leaves |x| > 3.
    The task is left/right symmetric: mirroring negates the obs and the action.
    """

    dt = 0.2

    def __init__(self, num_envs: int = 16, episode_length: int = 30, seed: int = 0) -> None:
        self.num_envs = num_envs
        self.num_obs = 2
        self.num_actions = 1
        self.obs_mirror = -np.eye(2, dtype=np.float32)
        self.action_mirror = -np.eye(1, dtype=np.float32)
        self.episode_length = episode_length
        self.rng = np.random.default_rng(seed)
        self.pos = np.zeros(num_envs)
        self.vel = np.zeros(num_envs)
        self.t = np.zeros(num_envs, dtype=np.int64)
        self.reset()

    def _reset_envs(self, mask: np.ndarray) -> None:
        n = int(mask.sum())
        self.pos[mask] = self.rng.uniform(-2.0, 2.0, n)
        self.vel[mask] = 0.0
        self.t[mask] = 0

    def get_observations(self) -> np.ndarray:
        return np.stack([self.pos, self.vel], axis=1).astype(np.float32)

    def reset(self) -> np.ndarray:
        self._reset_envs(np.ones(self.num_envs, dtype=bool))
        return self.get_observations()

    def step(self, actions: np.ndarray):
        force = np.clip(actions[:, 0], -1.0, 1.0)
        self.vel = 0.9 * self.vel + force * self.dt
        self.pos = self.pos + self.vel * self.dt
        self.t += 1
        rewards = (-(self.pos**2) - 0.1 * self.vel**2).astype(np.float32)
        terminated = np.abs(self.pos) > 3.0
        time_outs = (self.t >= self.episode_length) & ~terminated
        dones = terminated | time_outs
        terminal_obs = self.get_observations()
        self._reset_envs(dones)
        extras = {
            "time_outs": time_outs,
            "terminal_obs": terminal_obs,
            "log": {"reward": float(rewards.mean())},
        }
        return self.get_observations(), rewards, dones, extras


def deterministic_return(policy_fn, episode_length: int = 30) -> float:
    """Mean undiscounted return of ``policy_fn(obs) -> actions`` from 16 fixed start positions."""
    env = PointMassEnv(num_envs=16, episode_length=episode_length)
    env.pos[:] = np.linspace(-2.0, 2.0, 16)
    obs = env.get_observations()
    total = np.zeros(16)
    alive = np.ones(16, dtype=bool)
    for _ in range(episode_length):
        obs, rewards, dones, _ = env.step(policy_fn(obs))
        total += rewards * alive
        alive &= ~dones
    return float(total.mean())
