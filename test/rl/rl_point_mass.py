"""A tiny numpy VecEnv for the RL tests: push a 1-D point mass to the origin and keep it there.

``PointMassEnv`` is the plain task; ``WindyPointMassEnv`` adds a hidden per-episode wind that
only an asymmetric critic sees. ``make_point_mass_env`` / ``make_windy_point_mass_env`` have the
``make_env(env_config, num_envs, num_threads, seed)`` signature the training runner takes.
"""

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

    def get_state(self) -> dict:
        return {
            "pos": self.pos.copy(),
            "vel": self.vel.copy(),
            "t": self.t.copy(),
            "rng": self.rng.bit_generator.state,
        }

    def set_state(self, state: dict) -> None:
        self.pos = np.array(state["pos"], dtype=np.float64)
        self.vel = np.array(state["vel"], dtype=np.float64)
        self.t = np.array(state["t"], dtype=np.int64)
        self.rng.bit_generator.state = state["rng"]

    def _accel(self, force: np.ndarray) -> np.ndarray:
        return force

    def step(self, actions: np.ndarray):
        force = np.clip(actions[:, 0], -1.0, 1.0)
        self.vel = 0.9 * self.vel + self._accel(force) * self.dt
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


class WindyPointMassEnv(PointMassEnv):
    """The point mass pushed by a constant wind drawn per episode, which the actor cannot see.

    The critic observes (position, velocity, wind, share of the episode left): privileged
    information that predicts the return better than the actor's (position, velocity). The
    wind breaks the left/right symmetry, so there are no mirror matrices.
    """

    def __init__(self, num_envs: int = 16, episode_length: int = 30, seed: int = 0) -> None:
        self.wind = np.zeros(num_envs)
        super().__init__(num_envs, episode_length, seed)
        self.obs_mirror = self.action_mirror = None
        self.num_critic_obs = 4

    def _reset_envs(self, mask: np.ndarray) -> None:
        # step() resets finished envs right after computing terminal_obs: keep the critic's
        # counterpart of it from here.
        self._terminal_critic = self.get_critic_observations()
        super()._reset_envs(mask)
        self.wind[mask] = self.rng.uniform(-0.5, 0.5, int(mask.sum()))

    def _accel(self, force: np.ndarray) -> np.ndarray:
        return force + self.wind

    def get_critic_observations(self) -> np.ndarray:
        left = 1.0 - self.t / self.episode_length
        return np.stack([self.pos, self.vel, self.wind, left], axis=1).astype(np.float32)

    def get_state(self) -> dict:
        return {**super().get_state(), "wind": self.wind.copy()}

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self.wind = np.array(state["wind"], dtype=np.float64)

    def step(self, actions: np.ndarray):
        obs, rewards, dones, extras = super().step(actions)
        extras["terminal_critic_obs"] = self._terminal_critic
        extras["critic_obs"] = self.get_critic_observations()
        return obs, rewards, dones, extras


def make_point_mass_env(env_config, num_envs: int, num_threads: int, seed: int) -> PointMassEnv:
    """Runner env factory: ignores the (Cassie) env config."""
    return PointMassEnv(num_envs=num_envs, seed=seed)


def make_windy_point_mass_env(
    env_config, num_envs: int, num_threads: int, seed: int
) -> WindyPointMassEnv:
    """Runner env factory for the asymmetric actor-critic variant."""
    return WindyPointMassEnv(num_envs=num_envs, seed=seed)


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
