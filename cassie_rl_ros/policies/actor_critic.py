"""Gaussian actor-critic with separate actor and critic MLPs and observation normalisers.

The critic reads the actor's observation, or (asymmetric actor-critic) its own, possibly
privileged, critic observation with its own normaliser. The actor never needs the critic part.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.distributions import Normal

from cassie_sim_ros.config import ConfigError

from .normalizer import ObservationNormalizer

_ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh}


@dataclass(frozen=True)
class ActorCriticConfig:
    """Network shape and exploration noise of :class:`ActorCritic`."""

    actor_hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the actor MLP; empty for a linear policy."""
    critic_hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the critic MLP; empty for a linear value function."""
    activation: Literal["relu", "elu", "tanh"] = "relu"
    """Nonlinearity between hidden layers (both networks)."""
    init_std: float = math.exp(-2.0)
    """Initial standard deviation of the Gaussian action noise, the same for every action
    dimension. The default e^-2 ≈ 0.135 is the original's fixed std."""
    learn_std: bool = False
    """Learn a state-independent log-std per action dimension; when False the std stays at
    ``init_std`` for the whole run, as in the original."""
    obs_clip: float = 10.0
    """Normalised observations are clipped to ±obs_clip."""
    actor_output_gain: float = 0.01
    """Orthogonal-init gain of the actor's last layer. Small, so the initial policy outputs
    near-zero actions whatever the observation (CleanRL / "What matters in on-policy RL")."""

    def __post_init__(self) -> None:
        for name in ("actor_hidden", "critic_hidden"):
            if any(width < 1 for width in getattr(self, name)):
                raise ConfigError(
                    f"{name}: every layer width must be >= 1, got {getattr(self, name)}"
                )
        if not self.init_std > 0:
            raise ConfigError(f"init_std: must be > 0, got {self.init_std}")
        if not self.obs_clip > 0:
            raise ConfigError(f"obs_clip: must be > 0, got {self.obs_clip}")
        if not self.actor_output_gain >= 0:
            raise ConfigError(f"actor_output_gain: must be >= 0, got {self.actor_output_gain}")


def _mlp(
    num_in: int, hidden: Sequence[int], num_out: int, activation: str, output_gain: float
) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(num_in, width), _ACTIVATIONS[activation]()]
        num_in = width
    layers.append(nn.Linear(num_in, num_out))
    for layer in layers:
        if isinstance(layer, nn.Linear):
            gain = output_gain if layer is layers[-1] else math.sqrt(2.0)
            nn.init.orthogonal_(layer.weight, gain)
            nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """Diagonal-Gaussian policy π(a|s) = N(μ(s), σ²) and value V(s), both on normalised obs.

    Every method takes *raw* observations (batch, num_obs); normalisation happens inside, so a
    saved state_dict (normaliser buffers included) is the whole deployable policy.

    With ``num_critic_obs`` the critic is asymmetric: V reads a separate critic observation
    (batch, num_critic_obs), normalised by ``critic_normalizer``, which value-taking methods get
    as ``critic_obs``. Acting (``action_mean``, ``act_deterministic``) never touches it.
    """

    def __init__(
        self,
        num_obs: int,
        num_actions: int,
        cfg: ActorCriticConfig | None = None,
        num_critic_obs: int | None = None,
        fixed_scale_obs: tuple[int, ...] = (),
        fixed_scale_critic_obs: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        cfg = cfg or ActorCriticConfig()
        self.cfg = cfg
        self.num_obs = num_obs
        self.num_actions = num_actions
        self.num_critic_obs = num_critic_obs
        self.normalizer = ObservationNormalizer(num_obs, clip=cfg.obs_clip, fixed=fixed_scale_obs)
        # None (not an alias of ``normalizer``) when the critic reads the actor's obs, so the
        # state_dict holds every buffer once.
        self.critic_normalizer = (
            None
            if num_critic_obs is None
            else ObservationNormalizer(num_critic_obs, clip=cfg.obs_clip,
                                       fixed=fixed_scale_critic_obs)
        )
        self.actor = _mlp(
            num_obs, cfg.actor_hidden, num_actions, cfg.activation, cfg.actor_output_gain
        )
        critic_in = num_obs if num_critic_obs is None else num_critic_obs
        self.critic = _mlp(critic_in, cfg.critic_hidden, 1, cfg.activation, 1.0)
        # A Parameter even when fixed, so the state_dict has the same keys either way.
        self.log_std = nn.Parameter(
            torch.full((num_actions,), math.log(cfg.init_std)), requires_grad=cfg.learn_std
        )

    @property
    def std(self) -> torch.Tensor:
        """(num_actions,) current action standard deviation."""
        return self.log_std.exp()

    def action_mean(self, obs: torch.Tensor) -> torch.Tensor:
        """μ(s), (batch, num_actions)."""
        return self.actor(self.normalizer(obs))

    def value(self, obs: torch.Tensor, critic_obs: torch.Tensor | None = None) -> torch.Tensor:
        """V(s), (batch,). An asymmetric critic reads ``critic_obs`` (required) instead of obs."""
        if self.critic_normalizer is None:
            return self.critic(self.normalizer(obs)).squeeze(-1)
        if critic_obs is None:
            raise ValueError(
                f"this critic reads critic observations (num_critic_obs={self.num_critic_obs}); "
                "pass critic_obs"
            )
        return self.critic(self.critic_normalizer(critic_obs)).squeeze(-1)

    def distribution(self, obs: torch.Tensor) -> Normal:
        mean = self.action_mean(obs)
        return Normal(mean, self.std.expand_as(mean))

    def act(
        self, obs: torch.Tensor, critic_obs: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample actions. Returns (actions (B,A), log_prob (B,), value (B,), mean (B,A))."""
        dist = self.distribution(obs)
        actions = dist.sample()
        return actions, dist.log_prob(actions).sum(-1), self.value(obs, critic_obs), dist.mean

    def evaluate(
        self, obs: torch.Tensor, actions: torch.Tensor, critic_obs: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Score given actions. Returns (log_prob (B,), entropy (B,), value (B,), mean (B,A))."""
        dist = self.distribution(obs)
        return (
            dist.log_prob(actions).sum(-1),
            dist.entropy().sum(-1),
            self.value(obs, critic_obs),
            dist.mean,
        )

    def act_deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        """The mean action μ(s), (batch, num_actions): what runs on the robot."""
        return self.action_mean(obs)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.act_deterministic(obs)


class EnsemblePolicy(nn.Module):
    """Average of the deterministic actions of several ActorCritics (each its own normaliser)."""

    def __init__(self, policies: Sequence[ActorCritic]) -> None:
        super().__init__()
        if not policies:
            raise ValueError("EnsemblePolicy needs at least one policy")
        shapes = {(p.num_obs, p.num_actions) for p in policies}
        if len(shapes) != 1:
            raise ValueError(
                f"ensemble members disagree on (num_obs, num_actions): {sorted(shapes)}"
            )
        self.policies = nn.ModuleList(policies)
        self.num_obs, self.num_actions = shapes.pop()

    def act_deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        """Mean over members of μ_i(s), (batch, num_actions)."""
        return torch.stack([p.act_deterministic(obs) for p in self.policies]).mean(dim=0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.act_deterministic(obs)
