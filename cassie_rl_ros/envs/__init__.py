"""Vectorised environment contract."""

from .vec_env import StepExtras, VecEnv, check_mirror_matrix

__all__ = ["StepExtras", "VecEnv", "check_mirror_matrix"]
