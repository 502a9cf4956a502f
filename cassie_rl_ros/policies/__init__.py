"""Policies: Gaussian actor-critic, ensembles and the observation normaliser."""

from .actor_critic import ActorCritic, ActorCriticConfig, EnsemblePolicy
from .normalizer import ObservationNormalizer

__all__ = ["ActorCritic", "ActorCriticConfig", "EnsemblePolicy", "ObservationNormalizer"]
