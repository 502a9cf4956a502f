"""Learning algorithms: PPO and its rollout storage."""

from .ppo import PPO, PPOConfig, gaussian_kl, mirror_loss
from .storage import Minibatch, RolloutStorage, Transition

__all__ = [
    "PPO",
    "PPOConfig",
    "gaussian_kl",
    "mirror_loss",
    "Minibatch",
    "RolloutStorage",
    "Transition",
]
