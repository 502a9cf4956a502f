"""The vectorised-environment contract every trainer in this package talks to.

Modelled on rsl_rl's ``VecEnv``, but numpy in and numpy out: the simulators are numpy, and PPO
does the one conversion to torch. An environment owns ``num_envs`` independent copies of the
task, steps them in lock-step and resets the ones that finished by itself, so a caller never
calls ``reset()`` mid-training.
"""

from __future__ import annotations

import abc
from typing import Any, TypedDict

import numpy as np


class _RequiredStepExtras(TypedDict):
    """The keys of :class:`StepExtras` every env returns."""

    time_outs: np.ndarray
    """(num_envs,) bool. True where an episode was *truncated* (hit its time limit) rather than
    terminated. Always a subset of ``dones``. PPO bootstraps these with V(terminal_obs)."""
    terminal_obs: np.ndarray
    """(num_envs, num_obs) float32. The observation reached by this step *before* the auto-reset
    replaced it; equal to the returned obs for envs that are not done."""
    log: dict[str, float]
    """Scalars to log, e.g. per-term reward means over the envs for this step."""


class StepExtras(_RequiredStepExtras, total=False):
    """The ``extras`` dict returned by :meth:`VecEnv.step`.

    ``time_outs``, ``terminal_obs`` and ``log`` are always there; the critic keys only when the
    env has privileged critic observations (``num_critic_obs`` is not None).
    """

    critic_obs: np.ndarray
    """(num_envs, num_critic_obs) float32. The critic's observation after this step, already of
    the new episode where done (the counterpart of the returned obs)."""
    terminal_critic_obs: np.ndarray
    """(num_envs, num_critic_obs) float32. The critic's observation before the auto-reset; PPO
    bootstraps timeouts with V(terminal_critic_obs)."""


class VecEnv(abc.ABC):
    """A batch of ``num_envs`` environments stepped together, auto-resetting finished ones.

    Subclasses set the attributes below in ``__init__``. Observations and actions are float32
    numpy arrays with the env index first.
    """

    num_envs: int
    """Number of parallel environments."""
    num_obs: int
    """Length of one observation vector."""
    num_actions: int
    """Length of one action vector."""
    obs_mirror: np.ndarray | None = None
    """(num_obs, num_obs) signed permutation matrix M_s mapping an observation to the
    observation of the left/right mirrored robot (acting on *raw*, un-normalised obs), or None
    when the task has no symmetry. Used by PPO's mirror loss."""
    action_mirror: np.ndarray | None = None
    """(num_actions, num_actions) signed permutation matrix M_a, the action counterpart of
    ``obs_mirror``."""
    num_critic_obs: int | None = None
    """Length of the critic's observation when it differs from the actor's (asymmetric
    actor-critic: the critic may see privileged simulator state the robot cannot measure);
    None when the critic sees the actor's observation."""
    fixed_scale_obs: tuple[int, ...] = ()
    """Indices of observations already on a known, fixed scale (task inputs such as a clock or
    a command): the running normalisation leaves them as they are, so that a command
    distribution that widens during training does not rescale what the policy has learned."""
    fixed_scale_critic_obs: tuple[int, ...] = ()
    """The same for the critic's observation (when ``num_critic_obs`` is set)."""

    @abc.abstractmethod
    def get_observations(self) -> np.ndarray:
        """Current observations, (num_envs, num_obs) float32, without stepping."""

    def get_critic_observations(self) -> np.ndarray | None:
        """Current critic observations, (num_envs, num_critic_obs) float32, or None when the
        critic sees the actor's observation (``num_critic_obs`` is None)."""
        return None

    @abc.abstractmethod
    def reset(self) -> np.ndarray:
        """Reset every environment; return observations (num_envs, num_obs) float32."""

    @abc.abstractmethod
    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, StepExtras]:
        """Advance every environment by one control step.

        Args:
            actions: (num_envs, num_actions) float32.

        Returns:
            obs: (num_envs, num_obs) float32, already the first obs of a new episode where done.
            rewards: (num_envs,) float32.
            dones: (num_envs,) bool, terminated or truncated; those envs were auto-reset.
            extras: :class:`StepExtras` with ``time_outs``, ``terminal_obs`` and ``log``.
        """

    def get_state(self) -> dict[str, Any] | None:
        """Everything needed to continue exactly from here, or None if not supported (default).

        Lets a resumed training run continue bit-for-bit (the checkpoint stores it): simulator
        state, per-env counters, commands and every RNG. Values are numpy arrays or JSON-able
        data (nested dicts/lists of numbers, strings; e.g. ``rng.bit_generator.state``). Without
        it, a resumed run starts fresh episodes with ``reset()``.
        """
        return None

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_state` returned (same ``num_envs`` and config)."""
        raise NotImplementedError(f"{type(self).__name__} does not support set_state")

    def restore_progress(self, state: dict[str, Any]) -> None:
        """From what :meth:`get_state` returned with another ``num_envs``, restore what does not
        belong to single envs (a curriculum's stage), so a run resumed on more or fewer envs
        keeps its progress while its episodes start afresh. The default restores nothing."""

    def trained_forward_max(self) -> float | None:
        """The fastest forward command trained so far where a curriculum holds it below the
        config's range (saved with the policy: deployment clamps to it), else None."""
        return None

    def close(self) -> None:
        """Release simulator resources. The default does nothing."""


def check_mirror_matrix(matrix: Any, size: int, name: str) -> np.ndarray:
    """Return ``matrix`` as float32 after checking it is a (size, size) signed permutation.

    A signed permutation has exactly one entry of +1 or -1 in every row and column; mirroring
    twice must give back the original, so it must also be its own inverse.
    """
    m = np.asarray(matrix, dtype=np.float32)
    if m.shape != (size, size):
        raise ValueError(f"{name}: expected shape ({size}, {size}), got {m.shape}")
    nonzero = m != 0
    if (
        not np.all(np.isin(m, (-1.0, 0.0, 1.0)))
        or not np.all(nonzero.sum(axis=0) == 1)
        or not np.all(nonzero.sum(axis=1) == 1)
    ):
        raise ValueError(f"{name}: not a signed permutation matrix")
    if not np.array_equal(m @ m, np.eye(size, dtype=np.float32)):
        raise ValueError(f"{name}: mirroring twice must be the identity (M @ M == I)")
    return m
