"""On-policy rollout buffer with GAE(λ) returns and shuffled minibatches."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch


@dataclass
class Transition:
    """One vectorised env step, filled in two halves by ``PPO.act`` and ``PPO.process_env_step``."""

    observations: torch.Tensor | None = None
    critic_observations: torch.Tensor | None = None
    actions: torch.Tensor | None = None
    values: torch.Tensor | None = None
    log_probs: torch.Tensor | None = None
    action_means: torch.Tensor | None = None
    action_stds: torch.Tensor | None = None
    rewards: torch.Tensor | None = None
    dones: torch.Tensor | None = None
    time_outs: torch.Tensor | None = None
    terminal_values: torch.Tensor | None = None


class Minibatch(NamedTuple):
    """Flattened (batch, …) slices of a rollout, as fed to one PPO gradient step."""

    observations: torch.Tensor
    actions: torch.Tensor
    values: torch.Tensor
    returns: torch.Tensor
    advantages: torch.Tensor
    log_probs: torch.Tensor
    action_means: torch.Tensor
    action_stds: torch.Tensor
    critic_observations: torch.Tensor | None = None
    """None when the critic sees the actor's observations."""


class RolloutStorage:
    """Fixed-size buffer of ``num_steps`` vectorised transitions from ``num_envs`` envs."""

    def __init__(
        self,
        num_steps: int,
        num_envs: int,
        num_obs: int,
        num_actions: int,
        device: str | torch.device = "cpu",
        num_critic_obs: int | None = None,
    ) -> None:
        self.num_steps = num_steps
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.step = 0
        """Index of the next step to write; ``num_steps`` when full."""

        def zeros(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.zeros(num_steps, num_envs, *shape, dtype=dtype, device=self.device)

        self.observations = zeros(num_obs)
        """(T, N, num_obs) raw observations s_t the actions were taken in."""
        self.critic_observations = None if num_critic_obs is None else zeros(num_critic_obs)
        """(T, N, num_critic_obs) raw critic observations at s_t (asymmetric actor-critic), or
        None when the critic sees ``observations``."""
        self.actions = zeros(num_actions)
        """(T, N, num_actions) sampled actions a_t."""
        self.values = zeros()
        """(T, N) V(s_t) under the policy that collected the rollout."""
        self.log_probs = zeros()
        """(T, N) log π_old(a_t|s_t)."""
        self.action_means = zeros(num_actions)
        """(T, N, num_actions) μ_old(s_t), for the exact Gaussian KL."""
        self.action_stds = zeros(num_actions)
        """(T, N, num_actions) σ_old, for the exact Gaussian KL."""
        self.rewards = zeros()
        """(T, N) r_t as returned by the env (no bootstrap folded in)."""
        self.dones = zeros(dtype=torch.bool)
        """(T, N) episode ended after step t (terminated or truncated); s_{t+1} is a new episode."""
        self.time_outs = zeros(dtype=torch.bool)
        """(T, N) the episode ended by truncation at step t; a subset of ``dones``."""
        self.terminal_values = zeros()
        """(T, N) V(s_{t+1}) of the pre-reset observation; only read where ``time_outs``."""
        self.returns = zeros()
        """(T, N) GAE(λ) return targets R_t = A_t + V(s_t), filled by ``compute_returns``."""
        self.advantages = zeros()
        """(T, N) GAE(λ) advantages A_t, filled by ``compute_returns``."""

    def add(self, t: Transition) -> None:
        if self.step >= self.num_steps:
            raise RuntimeError("rollout storage is full; call clear() after the update")
        for name in (
            "observations",
            "actions",
            "values",
            "log_probs",
            "action_means",
            "action_stds",
            "rewards",
            "dones",
            "time_outs",
            "terminal_values",
        ):
            getattr(self, name)[self.step].copy_(getattr(t, name))
        if self.critic_observations is not None:
            self.critic_observations[self.step].copy_(t.critic_observations)
        self.step += 1

    def clear(self) -> None:
        self.step = 0

    @torch.no_grad()
    def compute_returns(self, last_values: torch.Tensor, gamma: float, lam: float) -> None:
        """Fill ``advantages`` and ``returns`` with GAE(λ), walking the rollout backwards.

        ``last_values`` (N,) is V(s_T) of the observation after the last stored step. Truncated
        episodes are not failures: their reward is credited with γ·V(s_terminal) so the value
        target treats the time limit as if the episode had gone on.
        """
        if self.step != self.num_steps:
            raise RuntimeError(
                f"rollout holds {self.step} of {self.num_steps} steps; fill it first"
            )
        advantage = torch.zeros(self.num_envs, device=self.device)
        for t in reversed(range(self.num_steps)):
            next_values = last_values if t == self.num_steps - 1 else self.values[t + 1]
            # r'_t = r_t + γ·V(s_terminal)·timeout_t
            reward = self.rewards[t] + gamma * self.terminal_values[t] * self.time_outs[t]
            # m_t = 1 − done_t  (no value flows across an episode boundary)
            not_done = 1.0 - self.dones[t].float()
            # δ_t = r'_t + γ·m_t·V(s_{t+1}) − V(s_t)
            delta = reward + gamma * not_done * next_values - self.values[t]
            # A_t = δ_t + γ·λ·m_t·A_{t+1}
            advantage = delta + gamma * lam * not_done * advantage
            self.advantages[t] = advantage
        # R_t = A_t + V(s_t)
        self.returns.copy_(self.advantages + self.values)

    def minibatches(
        self, minibatch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[Minibatch]:
        """One shuffled pass over the rollout in minibatches of ``minibatch_size`` samples.

        A trailing remainder smaller than ``minibatch_size`` is dropped (it is reshuffled into
        the next epoch), unless the whole rollout is smaller, in which case it is one batch.
        """
        batch_size = self.num_steps * self.num_envs
        size = min(minibatch_size, batch_size)
        order = torch.randperm(batch_size, generator=generator).to(self.device)
        flat = Minibatch(
            observations=self.observations.flatten(0, 1),
            actions=self.actions.flatten(0, 1),
            values=self.values.flatten(),
            returns=self.returns.flatten(),
            advantages=self.advantages.flatten(),
            log_probs=self.log_probs.flatten(),
            action_means=self.action_means.flatten(0, 1),
            action_stds=self.action_stds.flatten(0, 1),
            critic_observations=(
                None if self.critic_observations is None else self.critic_observations.flatten(0, 1)
            ),
        )
        for start in range(0, batch_size - size + 1, size):
            idx = order[start : start + size]
            yield Minibatch(*(None if field is None else field[idx] for field in flat))
