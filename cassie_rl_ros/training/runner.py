"""The training loop: rollout -> returns -> update -> evaluate -> log -> save, once per iteration.

Env-agnostic: the runner gets a factory ``make_env(env_config, num_envs, num_threads, seed) ->
VecEnv`` (``cassie_rl_ros.envs.cassie_env.make_env`` for Cassie). One run lives in one folder::

    <log_dir>/<experiment_name>/
        config.yaml         the resolved config of the latest (re)start
        checkpoint/         latest training state, replaced atomically (see checkpoint.py)
        best/               the policy with the best test return so far (+ best.json)
        policies/<iteration>/  a policy every runner.keep_policy_interval iterations (+ kept.json)
        metrics.jsonl       one JSON object per iteration (the keys below)
        history.jsonl       one JSON object per (re)start: its iteration and the config values
                            a resume changed
        tensorboard/        the same metrics as TensorBoard scalars

Resuming restores weights, normalisers, optimiser, RNG states, the env state (when the env
supports ``get_state``), counters and logs, so that a run stopped after k iterations and
resumed is bit-for-bit the run that was never stopped.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cassie_sim_ros.config import dump_yaml, to_dict

from ..algorithms.ppo import PPO
from ..envs.vec_env import VecEnv
from ..policies.actor_critic import ActorCritic
from .checkpoint import (HISTORY_FILE, KEPT_POLICIES, CheckpointError, check_state_dict,
                         load_checkpoint, load_policy, recover_dir, save_checkpoint, save_policy,
                         write_dir_atomically, write_file_atomically)
from .config import TrainConfig
from .progress import Progress, json_safe

EnvFactory = Callable[[Any, int, int, int], VecEnv]
"""``make_env(env_config, num_envs, num_threads, seed) -> VecEnv``."""

EVAL_SEED_OFFSET = 1_000_003
"""The evaluation env's seed is runner.seed + this, so its start states differ from training."""
MAX_EVAL_STEPS = 100_000
"""An evaluation episode longer than this means the env never ends one: an error."""
# PPO statistics that must be finite; explained variance may be NaN (constant returns).
FINITE_STATS = ("policy_loss", "value_loss", "entropy", "kl", "mirror_loss")


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"ppo": {"lr": 1e-3}} -> {"ppo.lr": 1e-3}: the keys overrides use."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class TrainingDivergedError(RuntimeError):
    """A loss, a weight or the env's data became NaN or infinite; nothing of it was saved."""


class OnPolicyRunner:
    """Trains an :class:`ActorCritic` with :class:`PPO` on a :class:`VecEnv`.

    Args:
        cfg: the whole training config.
        make_env: the env factory, called for the training env and each evaluation.
        run_dir: the run's folder; default ``cfg.run_dir``.
        resume: continue the run saved in ``run_dir/checkpoint``; otherwise ``run_dir`` must not
            hold a checkpoint yet.
        on_iteration: called with each iteration's metrics dict (the ROS node publishes them).
        verbose: print a progress line per iteration (a tqdm bar when tqdm is installed).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        make_env: EnvFactory,
        run_dir: str | Path | None = None,
        *,
        resume: bool = False,
        on_iteration: Callable[[dict[str, float]], None] | None = None,
        verbose: bool = True,
    ) -> None:
        rc = cfg.runner
        self.cfg = cfg
        self.make_env = make_env
        self.run_dir = Path(run_dir) if run_dir is not None else cfg.run_dir
        self.on_iteration = on_iteration
        self.verbose = verbose
        self._stop = threading.Event()
        self._phase = "idle"  # "collect" | "learn" | "idle": where a KeyboardInterrupt lands
        checkpoint_dir = self.run_dir / "checkpoint"
        recover_dir(checkpoint_dir)
        if not resume and checkpoint_dir.exists():
            raise CheckpointError(
                f"{self.run_dir}: already holds a run; resume it (--resume {self.run_dir}) "
                "or choose another runner.experiment_name"
            )

        if rc.torch_threads > 0:
            torch.set_num_threads(rc.torch_threads)
        # Network init, action sampling and minibatch shuffles all draw from torch's global
        # generator; seeding it here (and saving its state) makes runs repeatable and resumable.
        torch.manual_seed(rc.seed)
        self.env = make_env(cfg.env, rc.num_envs, rc.num_threads, rc.seed)
        env = self.env
        self.policy = ActorCritic(env.num_obs, env.num_actions, cfg.policy, env.num_critic_obs,
                                  env.fixed_scale_obs, env.fixed_scale_critic_obs)
        self.ppo = PPO(
            self.policy,
            cfg.ppo,
            rc.num_envs,
            rc.num_steps_per_env,
            obs_mirror=env.obs_mirror,
            action_mirror=env.action_mirror,
        )

        self.iteration = 0
        """Completed iterations."""
        self.env_steps = 0
        """Env steps (over all envs) collected so far."""
        self.wall_time = 0.0
        """Seconds spent in iterations so far, over all restarts."""
        self.best_test_return: float | None = None
        self.last_checkpoint_iteration: int | None = None
        # Per-env running sums of the episodes in progress, for the batch return.
        self.episode_return = np.zeros(rc.num_envs)
        self.episode_length = np.zeros(rc.num_envs, dtype=np.int64)

        previous_config: TrainConfig | None = None
        if resume:
            previous_config = self._resume(checkpoint_dir)
        else:
            if rc.init_from:
                self._warm_start(rc.init_from)
            elif rc.prepass_steps > 0:
                self.ppo.prepass(env, rc.prepass_steps, rc.prepass_noise_std)
            env.reset()
        # Metrics past the checkpoint (all of them for a new run) are from an attempt that
        # crashed before saving: drop them.
        self._truncate_metrics()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_file_atomically(self.run_dir / "config.yaml", dump_yaml(cfg))
        self._record_start(previous_config)

    def _record_start(self, previous: TrainConfig | None) -> None:
        """Append this start to ``history.jsonl``: the iteration it starts from and, on a
        resume, every config value that differs from the checkpoint's. ``config.yaml`` is only
        the latest config; with this a run trained in stages can be retraced."""
        changes = {}
        if previous is not None:
            old, new = _flatten(to_dict(previous)), _flatten(to_dict(self.cfg))
            changes = {key: [old.get(key), new.get(key)] for key in sorted(old.keys() | new.keys())
                       if old.get(key) != new.get(key)}
        entry = {"iteration": self.iteration, "env_steps": self.env_steps,
                 "resumed": previous is not None, "changes": changes,
                 "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        with open(self.run_dir / HISTORY_FILE, "a") as f:
            f.write(json.dumps(entry) + "\n")

    # ------------------------------------------------------------------------------ the loop

    def learn(self, until: int | None = None) -> dict[str, float]:
        """Train until ``runner.max_iterations`` (or ``until`` iterations, if fewer: a stage's
        end) or :meth:`request_stop`; return the last metrics.

        Saves a checkpoint every ``save_interval`` iterations and whenever it stops. A
        KeyboardInterrupt saves the last completed iteration and re-raises, unless it lands in the
        middle of the update (then nothing is saved).
        """
        from torch.utils.tensorboard import SummaryWriter

        rc = self.cfg.runner
        # purge_step drops TensorBoard events a crashed earlier attempt wrote past the checkpoint.
        writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.iteration + 1)
        progress = Progress(rc.max_iterations, self.iteration, self.verbose)
        obs, critic_obs = self.env.get_observations(), self.env.get_critic_observations()
        metrics: dict[str, float] = {}
        try:
            last = rc.max_iterations if until is None else min(until, rc.max_iterations)
            while self.iteration < last and not self._stop.is_set():
                start = time.perf_counter()
                # ---- rollout: num_steps_per_env steps of every env with the current policy
                self._phase = "collect"
                episodes = _EpisodeStats()
                for _ in range(rc.num_steps_per_env):
                    actions = self.ppo.act(obs, critic_obs)
                    obs, rewards, dones, extras = self.env.step(actions)
                    critic_obs = extras.get("critic_obs")
                    self.ppo.process_env_step(rewards, dones, extras)
                    self._track_episodes(episodes, rewards, dones, extras.get("log", {}))
                # ---- returns: GAE(λ) bootstrapped from the value of the last observation
                self.ppo.compute_returns(obs, critic_obs)
                collect_time = time.perf_counter() - start

                # ---- update
                self._phase = "learn"
                self._check_rollout_finite()
                learn_start = time.perf_counter()
                stats = self.ppo.update(self.iteration + 1)
                learn_time = time.perf_counter() - learn_start
                self._check_update_finite(stats)
                self._phase = "idle"
                self.iteration += 1
                self.env_steps += rc.num_envs * rc.num_steps_per_env

                # ---- evaluate the deterministic policy
                test_return = None
                if rc.eval_interval and (
                    self.iteration % rc.eval_interval == 0 or self.iteration == rc.max_iterations
                ):
                    test_return = self.evaluate()
                self.wall_time += time.perf_counter() - start

                # ---- log
                metrics = self._metrics(episodes, stats, test_return, collect_time, learn_time)
                self._log(writer, progress, metrics)

                # ---- save
                if test_return is not None and (
                    self.best_test_return is None or test_return > self.best_test_return
                ):
                    self.best_test_return = test_return
                    self._save_best(test_return)
                if (rc.save_interval and self.iteration % rc.save_interval == 0) or (
                    self.iteration == rc.max_iterations
                ):
                    self.save_checkpoint()
                if rc.keep_policy_interval and self.iteration % rc.keep_policy_interval == 0:
                    self._keep_policy()
            if self.last_checkpoint_iteration != self.iteration:
                self.save_checkpoint()  # stopped early: keep what was done
        except KeyboardInterrupt:
            # While collecting (or between iterations) the weights and optimiser are those of
            # the last completed iteration: a valid place to continue from. Mid-update they are
            # half-way between two iterations.
            if self._phase != "learn":
                self.save_checkpoint()
                progress.write(f"interrupted: saved iteration {self.iteration} to {self.run_dir}")
            else:
                progress.write(
                    "interrupted during the update: not saved; the last checkpoint is "
                    f"iteration {self.last_checkpoint_iteration}"
                )
            raise
        finally:
            self._phase = "idle"
            writer.close()
            progress.close()
        return metrics

    def request_stop(self) -> None:
        """Finish the current iteration, save a checkpoint and return from :meth:`learn`.

        Thread-safe and signal-safe (it only sets an event).
        """
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    # ------------------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def evaluate(self) -> float:
        """Test return: mean undiscounted return of the deterministic policy (the mean action).

        Runs ``eval_episodes`` episodes, one per env of a fresh env with a fixed seed, so every
        call starts from the same states. The env config is the training one, or what its
        ``for_evaluation()`` makes of it (a curriculum's training aids off: the whole task).
        """
        rc = self.cfg.runner
        env_config = self.cfg.env
        if hasattr(env_config, "for_evaluation"):
            env_config = env_config.for_evaluation()
        env = self.make_env(env_config, rc.eval_episodes, rc.num_threads,
                            rc.seed + EVAL_SEED_OFFSET)
        try:
            obs = env.reset()
            returns = np.zeros(env.num_envs)
            finished = np.zeros(env.num_envs, dtype=bool)
            for _ in range(MAX_EVAL_STEPS):
                actions = self.policy.act_deterministic(torch.as_tensor(obs, dtype=torch.float32))
                obs, rewards, dones, _ = env.step(actions.numpy())
                returns += np.where(finished, 0.0, rewards)  # only each env's first episode
                finished |= dones
                if finished.all():
                    return float(returns.mean())
            raise RuntimeError(f"evaluation: episodes did not end within {MAX_EVAL_STEPS} steps")
        finally:
            env.close()

    # ------------------------------------------------------------------------------ saving

    def save_checkpoint(self) -> Path:
        """Atomically write the full training state to ``run_dir/checkpoint``."""
        state = {
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "wall_time": self.wall_time,
            "best_test_return": self.best_test_return,
            "num_envs": self.cfg.runner.num_envs,
            "torch_rng": torch.get_rng_state(),
            "episode_return": self.episode_return,
            "episode_length": self.episode_length,
            "optimizer": self.ppo.optimizer.state_dict(),
            "critic_optimizer": self.ppo.critic_optimizer.state_dict(),
            "env": self.env.get_state(),
        }
        path = save_checkpoint(self.run_dir / "checkpoint", self.policy, self.cfg, state,
                               torchscript=self.cfg.runner.export_torchscript,
                               trained_forward_max=self.env.trained_forward_max())
        self.last_checkpoint_iteration = self.iteration
        return path

    def _keep_policy(self) -> None:
        (self.run_dir / KEPT_POLICIES).mkdir(exist_ok=True)
        self._save_policy_folder(self.run_dir / KEPT_POLICIES / f"{self.iteration:06d}",
                                 "kept.json", {"iteration": self.iteration,
                                               "env_steps": self.env_steps})

    def _save_best(self, test_return: float) -> None:
        self._save_policy_folder(self.run_dir / "best", "best.json",
                                 {"iteration": self.iteration, "test_return": test_return})

    def _save_policy_folder(self, folder: Path, info_file: str, info: dict) -> None:
        """The current policy, deployable (policy.safetensors, config.yaml, policy.pt), and a
        JSON note of when it was saved, written atomically to ``folder``."""

        def write(tmp: Path) -> None:
            save_policy(self.policy, self.cfg, tmp, self.cfg.runner.export_torchscript,
                        self.env.trained_forward_max())
            (tmp / info_file).write_text(json.dumps(info) + "\n")

        write_dir_atomically(folder, write)

    # ------------------------------------------------------------------------------ restarts

    def _check_sizes(self, num_obs: int, num_actions: int, num_critic_obs: int | None,
                     path: Path) -> None:
        env = self.env
        given = (num_obs, num_actions, num_critic_obs)
        expected = (env.num_obs, env.num_actions, env.num_critic_obs)
        if given != expected:
            raise CheckpointError(
                f"{path}: policy sizes (num_obs, num_actions, num_critic_obs) = {given}, but the "
                f"env has {expected}; the env config differs from the one it was trained with"
            )

    def _resume(self, checkpoint_dir: Path) -> TrainConfig:
        """Restore the run saved in ``checkpoint_dir``; returns the config it was saved with."""
        ckpt = load_checkpoint(checkpoint_dir)
        policy_file = checkpoint_dir / "policy.safetensors"
        self._check_sizes(ckpt.num_obs, ckpt.num_actions, ckpt.num_critic_obs, policy_file)
        # The config may differ in runner fields (more iterations, another save interval), not
        # in the network: the weights must fit.
        check_state_dict(self.policy, ckpt.policy_state, policy_file)
        self.policy.load_state_dict(ckpt.policy_state)
        state = ckpt.state
        state_file = checkpoint_dir / "state.safetensors"
        if "critic_optimizer" not in state:
            raise CheckpointError(
                f"{state_file}: written before the critic had its own optimiser (an older "
                "version of cassie-rl); start a new run from its policy instead: "
                f"cassie-rl train --init-from {checkpoint_dir}")
        try:
            self.ppo.optimizer.load_state_dict(state["optimizer"])
            self.ppo.critic_optimizer.load_state_dict(state["critic_optimizer"])
            torch.set_rng_state(state["torch_rng"])
            self.iteration = int(state["iteration"])
            self.env_steps = int(state["env_steps"])
            self.wall_time = float(state["wall_time"])
            self.best_test_return = state["best_test_return"]
        except (KeyError, ValueError, RuntimeError, TypeError) as err:
            raise CheckpointError(f"{state_file}: bad training state ({err!r})") from None
        self.last_checkpoint_iteration = self.iteration
        same_envs = state.get("num_envs") == self.cfg.runner.num_envs
        if same_envs:
            self.episode_return = np.array(state["episode_return"], dtype=np.float64)
            self.episode_length = np.array(state["episode_length"], dtype=np.int64)
        if same_envs and state.get("env") is not None:
            self.env.set_state(state["env"])
        else:
            # Not an exact continuation (the env cannot restore its state, or the number of
            # envs changed), but a valid one: the episodes start afresh.
            if self.verbose:
                print(f"resuming {self.run_dir} with fresh episodes: "
                      + ("the env cannot save its state" if same_envs else
                         "runner.num_envs changed"))
            if state.get("env") is not None:
                self.env.restore_progress(state["env"])  # before the reset draws commands
            self.env.reset()
            self.episode_return[:] = 0.0
            self.episode_length[:] = 0
        return ckpt.config

    def _warm_start(self, path: str) -> None:
        """Copy a saved policy's weights and normaliser statistics into the fresh policy.

        The actor side (actor, log-std, normaliser) must match; the critic side is copied when
        it fits and otherwise left freshly initialised (e.g. a new privileged critic). The
        log-std is kept from this run's config when that fixes it (``policy.learn_std: false``).
        """
        source, _ = load_policy(path)
        source_file = Path(path)
        if (source.num_obs, source.num_actions) != (self.env.num_obs, self.env.num_actions):
            self._check_sizes(source.num_obs, source.num_actions, self.env.num_critic_obs,
                              source_file)
        incoming = source.state_dict()

        def critic_side(key: str) -> bool:
            return key.startswith(("critic.", "critic_normalizer."))

        check_state_dict(self.policy, incoming, source_file, keys=lambda k: not critic_side(k))
        merged = {k: v for k, v in incoming.items() if not critic_side(k)}
        if not self.cfg.policy.learn_std:
            # A fixed std is this run's hyperparameter, not a weight to inherit.
            del merged["log_std"]
        try:
            check_state_dict(self.policy, incoming, source_file, keys=critic_side)
            merged.update({k: v for k, v in incoming.items() if critic_side(k)})
        except CheckpointError as err:
            if self.verbose:
                print(f"warm start: critic left freshly initialised ({err})")
        self.policy.load_state_dict(merged, strict=False)

    # ------------------------------------------------------------------------------ bookkeeping

    def _track_episodes(self, episodes: _EpisodeStats, rewards: np.ndarray, dones: np.ndarray,
                        log: dict[str, float]) -> None:
        self.episode_return += rewards
        self.episode_length += 1
        done = np.asarray(dones, dtype=bool)
        episodes.returns.extend(self.episode_return[done].tolist())
        episodes.lengths.extend(self.episode_length[done].tolist())
        self.episode_return[done] = 0.0
        self.episode_length[done] = 0
        for key, value in log.items():
            episodes.log_sums[key] = episodes.log_sums.get(key, 0.0) + float(value)
        episodes.steps += 1

    def _check_rollout_finite(self) -> None:
        s = self.ppo.storage
        for name in ("observations", "critic_observations", "rewards"):
            data = getattr(s, name)
            if data is not None and not torch.isfinite(data).all():
                raise TrainingDivergedError(
                    f"iteration {self.iteration + 1}: the env returned non-finite {name}; "
                    f"stopped without saving (last checkpoint: iteration "
                    f"{self.last_checkpoint_iteration})"
                )

    def _check_update_finite(self, stats: dict[str, float]) -> None:
        bad = [k for k in FINITE_STATS if not math.isfinite(stats[k])]
        bad += [n for n, p in self.policy.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise TrainingDivergedError(
                f"iteration {self.iteration + 1}: non-finite {', '.join(bad)} after the update; "
                f"stopped without saving (last checkpoint: iteration "
                f"{self.last_checkpoint_iteration}). Try a lower ppo.lr or ppo.max_grad_norm."
            )

    def _metrics(self, episodes: _EpisodeStats, stats: dict[str, float],
                 test_return: float | None, collect_time: float,
                 learn_time: float) -> dict[str, float]:
        rc = self.cfg.runner
        samples = rc.num_envs * rc.num_steps_per_env
        metrics: dict[str, float] = {
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "wall_time": self.wall_time,
        }
        if test_return is not None:
            metrics["return/test"] = test_return
        metrics.update({
            "return/batch": _mean(episodes.returns),
            "episode/length": _mean(episodes.lengths),
            "episode/count": len(episodes.returns),
            "loss/policy": stats["policy_loss"],
            "loss/value": stats["value_loss"],
            "loss/mirror": stats["mirror_loss"],
            "policy/entropy": stats["entropy"],
            "policy/kl": stats["kl"],
            "policy/max_step_kl": stats["max_step_kl"],
            "policy/clip_fraction": stats["clip_fraction"],
            "policy/action_std": stats["action_std"],
            "policy/line_search_halvings": stats["line_search_halvings"],
            "policy/line_search_rejections": stats["line_search_rejections"],
            "policy/epochs_run": stats["epochs_run"],
            "policy/actor_steps": stats["actor_steps"],
            "value/explained_variance": stats["explained_variance"],
            "perf/collect_s": collect_time,
            "perf/learn_s": learn_time,
            "perf/collect_steps_per_s": samples / collect_time,
            "perf/steps_per_s": samples / (collect_time + learn_time),
        })
        for key, total in sorted(episodes.log_sums.items()):
            metrics[f"env/{key}"] = total / episodes.steps
        return metrics

    def _log(self, writer, progress: Progress, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            if key != "iteration":
                writer.add_scalar(key, value, self.iteration)
        writer.flush()
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(json_safe(metrics)) + "\n")
        progress.update(metrics)
        if self.on_iteration is not None:
            self.on_iteration(metrics)

    def _truncate_metrics(self) -> None:
        """Drop metrics.jsonl lines past ``self.iteration``."""
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            if row.get("iteration", math.inf) <= self.iteration:
                kept.append(line)
        write_file_atomically(path, "".join(line + "\n" for line in kept))

    def close(self) -> None:
        self.env.close()


class _EpisodeStats:
    """Episodes completed and env log sums within one iteration."""

    def __init__(self) -> None:
        self.returns: list[float] = []
        self.lengths: list[int] = []
        self.log_sums: dict[str, float] = {}
        self.steps = 0


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan
