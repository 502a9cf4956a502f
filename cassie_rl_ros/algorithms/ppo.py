"""Proximal Policy Optimisation (clipped surrogate), in the style of rsl_rl's PPO.

On top of the textbook algorithm, two things the original Cassie trainer did:

* a KL line search ("ADAM_adapt"): after each minibatch step, if KL(π_old‖π) on that minibatch
  exceeds ``target_kl``, undo the actor's step (weights *and* Adam moments) and retry it with
  half the learning rate, up to ``max_line_search_halvings`` times. The critic has its own
  optimiser and always steps at the full rate: a trust region on the policy is no reason to slow
  the value function. A step still over the target after the last halving means the KL budget
  of this rollout is spent: the actor stops for the remaining minibatches, the critic goes on;
* a mirror-symmetry loss (Yu et al. 2018) pulling μ(s) towards M_a·μ(M_s·s).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from cassie_sim_ros.config import ConfigError

from ..envs.vec_env import VecEnv, check_mirror_matrix
from ..policies.actor_critic import ActorCritic
from ..policies.normalizer import ObservationNormalizer
from .storage import Minibatch, RolloutStorage, Transition


@dataclass(frozen=True)
class PPOConfig:
    """Hyper-parameters of :class:`PPO`."""

    lr: float = 1e-4
    """Adam learning rate."""
    adam_eps: float = 1e-5
    """Adam epsilon (denominator floor)."""
    gamma: float = 0.99
    """Discount factor γ."""
    lam: float = 0.95
    """GAE λ: 0 is one-step TD, 1 is Monte-Carlo."""
    clip: float = 0.2
    """Surrogate clipping: the ratio π/π_old is clipped to [1 − clip, 1 + clip]."""
    epochs: int = 3
    """Passes over each rollout."""
    minibatch_size: int = 64
    """Samples (env steps) per gradient step; the rollout remainder is dropped each epoch."""
    value_loss_coef: float = 1.0
    """Weight of the value loss in the total loss."""
    clip_value_loss: bool = False
    """Clip the value update around the rollout's values by ±clip (rsl_rl's default is True;
    the original did not clip)."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus. Irrelevant when the std is fixed (entropy is constant)."""
    max_grad_norm: float = 0.05
    """Gradient-norm clip, applied to the actor's and the critic's gradients separately (the
    value loss's scale must not shrink the policy's step)."""
    target_kl: float | None = 0.02
    """KL(π_old‖π) threshold used by ``kl_early_stop`` and ``kl_line_search``; None disables
    both."""
    kl_early_stop: bool = False
    """Stop the remaining epochs once an epoch's mean minibatch KL exceeds ``target_kl``."""
    kl_line_search: bool = True
    """The original's "ADAM_adapt": retry a minibatch step with a halved learning rate
    (restoring weights and optimiser state) while its KL exceeds ``target_kl``."""
    max_line_search_halvings: int = 10
    """Halvings tried before a minibatch's actor step is rejected outright (actor left as
    before, and no more actor steps on this rollout)."""
    mirror_coef: float = 0.0
    """Weight of the mirror loss mean((μ(s) − M_a·μ(M_s·s))²); > 0 needs the env's mirror
    matrices."""
    mirror_start_iteration: int = 0
    """First training iteration (counted from 1) with the mirror loss; before it the weight is
    0. The walking recipe switches it on once the policy steps: then it ended a split-stance
    gait (README "Training")."""
    normalize_advantages: bool = True
    """Standardise advantages over the whole rollout before the epochs."""
    normalizer_update: Literal["running", "frozen"] = "running"
    """'running': refresh the observation normaliser from every rollout (after its update, so
    the old and new policy see the same normalisation). 'frozen': never touch it in training;
    fit it first with :meth:`PPO.prepass` (or leave it the identity)."""

    def __post_init__(self) -> None:
        positive = ("lr", "adam_eps", "clip", "max_grad_norm", "epochs", "minibatch_size")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: must be > 0, got {getattr(self, name)}")
        for name in ("gamma", "lam"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}: must be in [0, 1], got {getattr(self, name)}")
        for name in ("value_loss_coef", "entropy_coef", "mirror_coef", "mirror_start_iteration",
                     "max_line_search_halvings"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.target_kl is not None and not self.target_kl > 0:
            raise ConfigError(f"target_kl: must be > 0 or null, got {self.target_kl}")


def gaussian_kl(
    mean_old: torch.Tensor, std_old: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """KL(N(mean_old, std_old²) ‖ N(mean, std²)) of diagonal Gaussians, summed over last dim."""
    kl = (
        torch.log(std / std_old)
        + (std_old.square() + (mean_old - mean).square()) / (2.0 * std.square())
        - 0.5
    )
    return kl.sum(-1)


def mirror_loss(
    action_mean: Callable[[torch.Tensor], torch.Tensor],
    obs: torch.Tensor,
    obs_mirror: torch.Tensor,
    action_mirror: torch.Tensor,
    mean: torch.Tensor | None = None,
) -> torch.Tensor:
    """mean((μ(s) − M_a·μ(M_s·s))²) over batch and action dims.

    ``obs`` are raw observations: M_s permutes raw features, and ``action_mean`` normalises
    internally, so the mirrored obs goes through the same normaliser as the original. ``mean``
    may pass in an already computed μ(obs). Rows are vectors, hence the transposes.
    """
    if mean is None:
        mean = action_mean(obs)
    mirrored = action_mean(obs @ obs_mirror.T) @ action_mirror.T
    return (mean - mirrored).square().mean()


class PPO:
    """PPO for an :class:`ActorCritic` on a numpy :class:`VecEnv`.

    A training iteration is::

        obs, critic_obs = env.get_observations(), env.get_critic_observations()
        for _ in range(num_steps):
            obs, rewards, dones, extras = env.step(ppo.act(obs, critic_obs))
            critic_obs = extras.get("critic_obs")
            ppo.process_env_step(rewards, dones, extras)
        ppo.compute_returns(obs, critic_obs)
        stats = ppo.update()

    ``critic_obs`` is None throughout unless the policy has an asymmetric critic.
    """

    def __init__(
        self,
        policy: ActorCritic,
        cfg: PPOConfig,
        num_envs: int,
        num_steps: int,
        obs_mirror: np.ndarray | None = None,
        action_mirror: np.ndarray | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.policy = policy.to(self.device)
        critic = {id(p) for p in policy.critic.parameters()}
        self.actor_params = [p for p in policy.parameters()
                             if p.requires_grad and id(p) not in critic]
        self.critic_params = [p for p in policy.critic.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.actor_params, lr=cfg.lr, eps=cfg.adam_eps)
        """The actor's (and the learned std's) optimiser: the one the line search scales."""
        self.critic_optimizer = torch.optim.Adam(self.critic_params, lr=cfg.lr, eps=cfg.adam_eps)
        self.storage = RolloutStorage(
            num_steps,
            num_envs,
            policy.num_obs,
            policy.num_actions,
            self.device,
            num_critic_obs=policy.num_critic_obs,
        )
        self.transition = Transition()
        for normalizer in self._normalizers():
            normalizer.frozen = cfg.normalizer_update == "frozen"

        self._mirror_active = cfg.mirror_coef > 0
        self.obs_mirror = self.action_mirror = None
        if cfg.mirror_coef > 0:
            if obs_mirror is None or action_mirror is None:
                raise ConfigError(
                    "mirror_coef: > 0 needs the env's obs_mirror and action_mirror matrices"
                )
            self.obs_mirror = self._tensor(
                check_mirror_matrix(obs_mirror, policy.num_obs, "obs_mirror")
            )
            self.action_mirror = self._tensor(
                check_mirror_matrix(action_mirror, policy.num_actions, "action_mirror")
            )

    def _tensor(self, x: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=dtype, device=self.device)

    def _critic_tensor(self, critic_obs: np.ndarray | None, what: str) -> torch.Tensor | None:
        """``critic_obs`` as a tensor; None when the critic reads the actor's obs."""
        if self.policy.num_critic_obs is None:
            return None
        if critic_obs is None:
            raise ValueError(
                f"{what}: the policy's critic reads critic observations "
                f"(num_critic_obs={self.policy.num_critic_obs}) but none were given"
            )
        return self._tensor(critic_obs)

    def _normalizers(self) -> list[ObservationNormalizer]:
        """The actor's observation normaliser and, if separate, the critic's."""
        extra = self.policy.critic_normalizer
        return [self.policy.normalizer] + ([] if extra is None else [extra])

    # ---------------------------------------------------------------- rollout

    @torch.no_grad()
    def act(self, obs: np.ndarray, critic_obs: np.ndarray | None = None) -> np.ndarray:
        """Sample actions (num_envs, num_actions) for raw obs (num_envs, num_obs); record them.

        ``critic_obs`` (num_envs, num_critic_obs) is needed by an asymmetric critic only.
        """
        obs_t = self._tensor(obs)
        critic_t = self._critic_tensor(critic_obs, "act")
        actions, log_probs, values, means = self.policy.act(obs_t, critic_t)
        t = self.transition
        t.observations, t.actions, t.log_probs, t.values = obs_t, actions, log_probs, values
        t.critic_observations = critic_t
        t.action_means, t.action_stds = means, self.policy.std.expand_as(means)
        return actions.cpu().numpy()

    @torch.no_grad()
    def process_env_step(
        self, rewards: np.ndarray, dones: np.ndarray, extras: dict[str, Any]
    ) -> None:
        """Record the env's answer to the last :meth:`act`."""
        t = self.transition
        t.rewards = self._tensor(rewards)
        t.dones = self._tensor(dones, torch.bool)
        t.time_outs = self._tensor(extras["time_outs"], torch.bool)
        # Only truncated episodes need V(terminal obs); skip the forward pass when there are none.
        t.terminal_values = torch.zeros_like(t.rewards)
        if t.time_outs.any():
            terminal_critic = self._critic_tensor(
                extras.get("terminal_critic_obs"), "extras['terminal_critic_obs']"
            )
            t.terminal_values = (
                self.policy.value(self._tensor(extras["terminal_obs"]), terminal_critic)
                * t.time_outs
            )
        self.storage.add(t)
        self.transition = Transition()

    @torch.no_grad()
    def compute_returns(
        self, last_obs: np.ndarray, last_critic_obs: np.ndarray | None = None
    ) -> None:
        """GAE over the filled rollout, bootstrapping from V(last_obs) (or V(last_critic_obs))."""
        last_values = self.policy.value(
            self._tensor(last_obs), self._critic_tensor(last_critic_obs, "compute_returns")
        )
        self.storage.compute_returns(last_values, self.cfg.gamma, self.cfg.lam)

    # ---------------------------------------------------------------- update

    def update(self, iteration: int | None = None) -> dict[str, float]:
        """Run the PPO epochs over the stored rollout, then clear it. Returns mean statistics.

        ``iteration`` (counted from 1) switches the mirror loss on from
        ``mirror_start_iteration``; None applies it whenever ``mirror_coef`` > 0.
        """
        cfg, storage = self.cfg, self.storage
        self._mirror_active = cfg.mirror_coef > 0 and (
            iteration is None or iteration >= cfg.mirror_start_iteration)
        explained_variance = _explained_variance(storage.values, storage.returns)
        if cfg.normalize_advantages:
            adv = storage.advantages
            storage.advantages = (adv - adv.mean()) / (adv.std() + 1e-8)
        use_kl = cfg.target_kl is not None
        totals = dict.fromkeys(
            ("policy_loss", "value_loss", "entropy", "mirror_loss", "clip_fraction", "kl"), 0.0
        )
        num_minibatches = halvings = rejections = epochs_run = actor_steps = 0
        max_step_kl = 0.0
        actor_active = True

        for _ in range(cfg.epochs):
            epoch_kls = []
            for mb in storage.minibatches(cfg.minibatch_size):
                loss, terms = self._loss(mb)
                self.optimizer.zero_grad()
                self.critic_optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(self.critic_params, cfg.max_grad_norm)
                self.critic_optimizer.step()
                accepted = False
                if actor_active:
                    nn.utils.clip_grad_norm_(self.actor_params, cfg.max_grad_norm)
                    if use_kl and cfg.kl_line_search:
                        tries, accepted = self._line_search_step(mb)
                        halvings += tries
                        rejections += not accepted
                        actor_active = accepted
                    else:
                        self.optimizer.step()
                        accepted = True
                    actor_steps += accepted
                kl = self._kl(mb)
                if accepted:
                    max_step_kl = max(max_step_kl, kl)
                epoch_kls.append(kl)
                terms["kl"] = kl
                for key in totals:
                    totals[key] += terms[key]
                num_minibatches += 1
            epochs_run += 1
            if use_kl and cfg.kl_early_stop and np.mean(epoch_kls) > cfg.target_kl:
                break

        # Refresh normalisation only now, so log π_old and V_old above used the same statistics.
        self.policy.normalizer.update(storage.observations)
        if self.policy.critic_normalizer is not None:
            self.policy.critic_normalizer.update(storage.critic_observations)
        storage.clear()
        stats = {key: value / max(num_minibatches, 1) for key, value in totals.items()}
        stats.update(
            explained_variance=explained_variance,
            max_step_kl=max_step_kl,
            line_search_halvings=float(halvings),
            line_search_rejections=float(rejections),
            actor_steps=float(actor_steps),
            epochs_run=float(epochs_run),
            action_std=self.policy.std.mean().item(),
        )
        return stats

    def _loss(self, mb: Minibatch) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        log_probs, entropy, values, means = self.policy.evaluate(
            mb.observations, mb.actions, mb.critic_observations
        )
        ratio = torch.exp(log_probs - mb.log_probs)
        # Pessimistic bound: the worse of the clipped and unclipped surrogate.
        surrogate = -mb.advantages * ratio
        surrogate_clipped = -mb.advantages * ratio.clamp(1.0 - cfg.clip, 1.0 + cfg.clip)
        policy_loss = torch.max(surrogate, surrogate_clipped).mean()
        if cfg.clip_value_loss:
            values_clipped = mb.values + (values - mb.values).clamp(-cfg.clip, cfg.clip)
            value_loss = torch.max(
                (values - mb.returns).square(), (values_clipped - mb.returns).square()
            ).mean()
        else:
            value_loss = (values - mb.returns).square().mean()
        loss = policy_loss + cfg.value_loss_coef * value_loss - cfg.entropy_coef * entropy.mean()
        sym_loss = torch.zeros(())
        if self._mirror_active:
            sym_loss = mirror_loss(
                self.policy.action_mean, mb.observations, self.obs_mirror, self.action_mirror, means
            )
            loss = loss + cfg.mirror_coef * sym_loss
        terms = {
            "policy_loss": policy_loss.item(),
            "value_loss": value_loss.item(),
            "entropy": entropy.mean().item(),
            "mirror_loss": sym_loss.item(),
            "clip_fraction": ((ratio - 1.0).abs() > cfg.clip).float().mean().item(),
        }
        return loss, terms

    @torch.no_grad()
    def _kl(self, mb: Minibatch) -> float:
        """Mean KL(π_old‖π) over the minibatch's states, for the current weights."""
        means = self.policy.action_mean(mb.observations)
        return (
            gaussian_kl(mb.action_means, mb.action_stds, means, self.policy.std.expand_as(means))
            .mean()
            .item()
        )

    def _line_search_step(self, mb: Minibatch) -> tuple[int, bool]:
        """Step with the gradients already in ``.grad``, halving lr while KL > target_kl.

        Adam's step is proportional to lr (its moments do not depend on lr), so retrying with
        the same gradients and half the lr takes exactly half the step. Returns (halvings,
        accepted); a step still over target after the last halving is undone. Only the actor
        (and the std) move here: the critic has stepped already.
        """
        saved = self._snapshot()
        accepted = False
        for halvings in range(self.cfg.max_line_search_halvings + 1):
            self._set_lr(self.cfg.lr * 0.5**halvings)
            self.optimizer.step()
            if self._kl(mb) <= self.cfg.target_kl:
                accepted = True
                break
            self._restore(saved)
        self._set_lr(self.cfg.lr)
        return halvings, accepted

    def _snapshot(self) -> tuple[list[torch.Tensor], dict]:
        params = [p.detach().clone() for p in self.actor_params]
        state = {
            p: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
            for p, s in self.optimizer.state.items()
        }
        return params, state

    @torch.no_grad()
    def _restore(self, saved: tuple[list[torch.Tensor], dict]) -> None:
        params, state = saved
        for p, value in zip(self.actor_params, params, strict=True):
            p.copy_(value)
        # Fresh clones: the optimiser updates its state in place, the snapshot must survive retries.
        self.optimizer.state.clear()
        for p, s in state.items():
            self.optimizer.state[p] = {
                k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()
            }

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    # ---------------------------------------------------------------- normaliser pre-pass

    @torch.no_grad()
    def prepass(self, env: VecEnv, steps: int, noise_std: float = 1.0) -> np.ndarray:
        """Fit the observation normaliser on ``steps`` observations from noisy rollouts.

        Like the original's 10k-step pre-pass: act with μ(s) + N(0, noise_std²) so the
        statistics cover states a little wider than the initial policy visits. ``steps``
        counts observations over all envs (rounded up to a multiple of num_envs). The
        normalisers' ``frozen`` flags are left as they were; an asymmetric critic's normaliser
        is fitted too. Resets the env and returns its obs.
        """
        normalizers = self._normalizers()
        was_frozen = [n.frozen for n in normalizers]
        for n in normalizers:
            n.frozen = False
        obs = env.reset()
        critic_obs = env.get_critic_observations()
        for _ in range(math.ceil(steps / env.num_envs)):
            self.policy.normalizer.update(obs)
            if self.policy.critic_normalizer is not None:
                self.policy.critic_normalizer.update(critic_obs)
            mean = self.policy.act_deterministic(self._tensor(obs))
            actions = mean + noise_std * torch.randn_like(mean)
            obs, _, _, extras = env.step(actions.cpu().numpy())
            critic_obs = extras.get("critic_obs")
        for n, frozen in zip(normalizers, was_frozen, strict=True):
            n.frozen = frozen
        return env.reset()


def _explained_variance(values: torch.Tensor, returns: torch.Tensor) -> float:
    """1 − Var(R − V)/Var(R): 1 is a perfect critic, 0 no better than a constant."""
    var_returns = returns.var().item()
    if var_returns == 0:
        return float("nan")
    return 1.0 - (returns - values).var().item() / var_returns
