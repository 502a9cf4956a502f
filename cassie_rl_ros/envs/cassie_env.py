"""``CassieEnv``: N Cassies learning to walk, a ``VecEnv`` over one batched ``CassieSim``.

One policy step holds the PD targets for ``policy_substeps`` physics steps. Actions are motor
position offsets: added to the neutral standing pose (``no_delta``) or to the reference
trajectory's motor positions at the current phase (``delta``). The actor sees what the robot's
sensors report (``observations.ObservationBuilder``); the critic may also see ground truth.
Rewards, terminations and the reset distribution are named in the config (``rewards``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from cassie_rl_ros.envs.actions import (ActionOrigin, advance_clock, clip_actions,
                                        motor_targets, reference_state)
from cassie_rl_ros.envs.curriculum import SpeedCurriculum, SpeedCurriculumConfig
from cassie_rl_ros.envs.gait_prior import GaitPriorConfig
from cassie_rl_ros.envs.observations import (ObservationBuilder, ObservationConfig, TaskInputs,
                                             action_mirror_matrix, gravity_in_frame)
from cassie_rl_ros.envs.reference import (MOTOR_QPOS_INDEX, SHIN_QPOS_INDEX, check_layout,
                                          load_reference)
from cassie_rl_ros.envs.rewards import (REWARD_TERMS, TERMINATIONS, StepContext, resolve,
                                        swing_airborne)
from cassie_rl_ros.envs.vec_env import VecEnv
from cassie_sim_ros import constants as C
from cassie_sim_ros.config import ConfigError
from cassie_sim_ros.model import STANDING_QPOS
from cassie_sim_ros.estimator import CassieEstimator
from cassie_sim_ros.sim import CassieSim, SimConfig

Range = tuple[float, float]
# Ground truth the critic gets on top of the actor's observation: pelvis height, velocity in the
# heading frame (3), angular velocity (3), tilt (2), vertical foot forces (2), foot heights (2).
PRIVILEGED_SIZE = 13


@dataclass(frozen=True)
class TermConfig:
    """A named reward term or termination with its weight and keyword parameters."""

    weight: float = 1.0
    """Reward weight (ignored for terminations); 0 skips the term."""
    params: dict[str, float] = field(default_factory=dict)
    """Keyword arguments of the term's function."""


@dataclass(frozen=True)
class CommandConfig:
    """Speed commands, drawn per episode (and again every ``resample_seconds``)."""

    forward: Range = (0.0, 1.0)
    """Forward speed range (m/s)."""
    lateral: Range = (0.0, 0.0)
    """Lateral speed range (m/s)."""
    yaw_rate: Range = (0.0, 0.0)
    """Yaw rate range (rad/s)."""
    zero_probability: float = 0.1
    """Share of draws that command standing still (all zero)."""
    resample_seconds: float = 0.0
    """Draw a new command this often within an episode; 0: once per episode."""
    curriculum: SpeedCurriculumConfig = field(default_factory=SpeedCurriculumConfig)
    """Widen the forward range as the policy learns to track it (envs/curriculum.py)."""


@dataclass(frozen=True)
class GaitConfig:
    """The clock: phase φ in [0, 1) advances step_frequency · dt / cycle_seconds per step."""

    cycle_seconds: float = 0.8
    """Duration of one two-step gait cycle at stepping frequency 1 (s)."""
    swing_ratio: float = 0.4
    """Share of each leg's cycle spent in swing."""
    leg_phase_offset: Range = (0.0, 0.5)
    """Per-leg phase shift: (0, 0.5) walks, equal shifts hop."""
    step_frequency: Range = (1.0, 1.0)
    """Stepping frequency range drawn per episode (1 single, 2 double)."""


@dataclass(frozen=True)
class ResetConfig:
    """Initial state distribution around the standing keyframe."""

    motor_noise: float = 0.02
    """Std of the noise on the motor joint positions (rad)."""
    velocity_noise: float = 0.05
    """Std of the noise on all joint velocities."""
    random_heading: bool = True
    """Start facing a uniformly random direction (the command is relative to it)."""
    random_phase: bool = True
    """Start at a uniformly random gait phase."""
    command_velocity: float = 0.0
    """Start moving at this fraction of the commanded planar velocity (0 to 1): the robot starts
    with the momentum of the gait it must learn, so standing still is not the easy way out."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.command_velocity <= 1.0:
            raise ConfigError(f"command_velocity: {self.command_velocity!r} is not allowed; "
                              "allowed values: 0 to 1")


@dataclass(frozen=True)
class RandomizationConfig:
    """Dynamics randomisation, drawn per simulation at every reset (RSS-2020 / roadrunner)."""

    enabled: bool = False
    mass_scale: Range = (0.75, 1.25)
    damping_scale: Range = (0.5, 1.5)
    friction_scale: Range = (0.6, 1.2)
    spring_scale: Range = (0.8, 1.2)
    pelvis_com_offset: Range = (-0.02, 0.02)
    """Uniform offset of the pelvis centre of mass per axis (m)."""


@dataclass(frozen=True)
class PushConfig:
    """Random pushes on the pelvis during training."""

    rate: float = 0.0
    """Expected pushes per second per sim (0: none)."""
    force: Range = (20.0, 60.0)
    """Horizontal force magnitude (N), random direction."""
    duration: float = 0.2
    """Seconds each push lasts."""


def _default_rewards() -> dict[str, TermConfig]:
    return {
        "forward_velocity": TermConfig(0.25),
        "lateral_velocity": TermConfig(0.1),
        "heading": TermConfig(0.1),
        "upright": TermConfig(0.1),
        "pelvis_height": TermConfig(0.05),
        "swing_foot_force": TermConfig(0.15),
        "stance_foot_speed": TermConfig(0.15),
        "torque": TermConfig(0.05),
        "action_rate": TermConfig(0.05),
    }


def _default_terminations() -> dict[str, TermConfig]:
    return {"fallen": TermConfig(params={"min_height": 0.6})}


@dataclass(frozen=True)
class CassieEnvConfig:
    """The Cassie task."""

    sim: SimConfig = field(default_factory=SimConfig)
    """Physics and actuation."""
    policy_substeps: int = 50
    """Physics steps per policy step (50 x 0.5 ms = 40 Hz)."""
    episode_seconds: float = 10.0
    """Episode length before a time-out (s)."""
    action: Literal["no_delta", "delta", "gait_prior"] = "no_delta"
    """no_delta: target = action + neutral pose; delta: target = action + reference pose;
    gait_prior: target = action + the kinematic gait's pose at the phase and commanded speed."""
    action_clip: float = 1.5
    """Actions are clipped to ±action_clip rad."""
    observation: ObservationConfig = field(default_factory=ObservationConfig)
    """What the actor sees."""
    estimator_rate: float = 500.0
    """Rate of the state estimator (Hz) for ``state_est`` observations, as the simulator node
    runs it: a divisor of the physics rate."""
    privileged_critic: bool = True
    """The critic also sees ground truth (pelvis height and velocity, foot forces and heights)."""
    reference_path: str | None = None
    """Reference trajectory (.bin) for delta actions, reference observations and imitation."""
    gait: GaitConfig = field(default_factory=GaitConfig)
    gait_prior: GaitPriorConfig = field(default_factory=GaitPriorConfig)
    """The kinematic gait of ``gait_prior`` actions (envs/gait_prior.py)."""
    command: CommandConfig = field(default_factory=CommandConfig)
    rewards: dict[str, TermConfig] = field(default_factory=_default_rewards)
    """Reward terms by name (see envs/rewards.py) with weights and parameters."""
    terminations: dict[str, TermConfig] = field(default_factory=_default_terminations)
    """Termination conditions by name."""
    reset: ResetConfig = field(default_factory=ResetConfig)
    randomization: RandomizationConfig = field(default_factory=RandomizationConfig)
    pushes: PushConfig = field(default_factory=PushConfig)

    def __post_init__(self):
        if self.policy_substeps < 1:
            raise ConfigError(f"policy_substeps: must be >= 1, got {self.policy_substeps}")
        if self.episode_seconds <= 0:
            raise ConfigError("episode_seconds: must be > 0")
        for name, term in self.rewards.items():
            if name not in REWARD_TERMS and ":" not in name:
                raise ConfigError(f"rewards.{name}: unknown reward term; registered: "
                                  f"{', '.join(sorted(REWARD_TERMS))} (or package.module:function)")
        for name in self.terminations:
            if name not in TERMINATIONS and ":" not in name:
                raise ConfigError(f"terminations.{name}: unknown termination; registered: "
                                  f"{', '.join(sorted(TERMINATIONS))}")
        # The gait prior stands in for a reference in the joint imitation terms.
        joint_terms = (("imitation_joints", "imitation_spring") if self.action == "gait_prior"
                       else ())
        needs_reference = (self.action == "delta" or self.observation.reference
                           or any(n.startswith("imitation") and n not in joint_terms
                                  for n in self.rewards))
        if needs_reference and not self.reference_path:
            raise ConfigError("reference_path: delta actions, reference observations and "
                              "imitation rewards need a reference trajectory (.bin); with "
                              "gait_prior actions imitation_joints and imitation_spring "
                              "follow the gait prior")
        if not 0.0 < self.gait.swing_ratio < 1.0:
            raise ConfigError("gait.swing_ratio: must be in (0, 1)")
        if self.observation.state == "state_est":
            steps = (1.0 / (self.estimator_rate * self.sim.timestep) if self.estimator_rate > 0
                     else 0)
            if not (steps >= 1 and abs(steps - round(steps)) < 1e-9):
                raise ConfigError(f"estimator_rate: {self.estimator_rate!r} Hz must divide the "
                                  f"physics rate {1.0 / self.sim.timestep:g} Hz")

    @property
    def policy_dt(self) -> float:
        return self.sim.timestep * self.policy_substeps

    def for_evaluation(self) -> CassieEnvConfig:
        """The task a policy is judged on (the trainer's test return): the whole command range
        from the first episode, and every episode starting from standing still."""
        return replace(self, command=replace(self.command, curriculum=replace(
            self.command.curriculum, enabled=False)),
            reset=replace(self.reset, command_velocity=0.0))


class CassieEnv(VecEnv):
    """N Cassie environments stepped together; finished ones reset themselves."""

    def __init__(self, config: CassieEnvConfig, num_envs: int, num_threads: int = 1,
                 seed: int = 0):
        self.config = config
        self.num_envs = num_envs
        self.dt = config.policy_dt
        self.max_episode_steps = max(1, int(round(config.episode_seconds / self.dt)))
        self.rng = np.random.default_rng(seed)
        sim_config = SimConfig(**{**vars(config.sim), "seed": seed})
        self.sim = CassieSim(sim_config, num_sims=num_envs, num_threads=num_threads)
        model = self.sim.model
        joint_qadr = {model.joint(i).name: int(model.jnt_qposadr[i]) for i in range(model.njnt)}
        joint_dadr = {model.joint(i).name: int(model.jnt_dofadr[i]) for i in range(model.njnt)}
        self.obs_builder = ObservationBuilder(config.observation, joint_qadr, joint_dadr)
        self.reference = None
        if config.reference_path:
            self.reference = load_reference(config.reference_path)
            check_layout(model)
        self.action_origin = ActionOrigin(config, self.reference)
        self.estimator = None
        if config.observation.state == "state_est":
            self._steps_per_estimate = int(round(1.0 / (config.estimator_rate
                                                        * config.sim.timestep)))
            self.estimator = CassieEstimator(num_envs,
                                             dt=self._steps_per_estimate * config.sim.timestep)
            self._steps_since_estimate = 0
        self.num_obs = self.obs_builder.size
        self.num_actions = C.NUM_MOTORS
        self.obs_mirror = self.obs_builder.mirror
        self.action_mirror = action_mirror_matrix()
        self.num_critic_obs = self.num_obs + PRIVILEGED_SIZE if config.privileged_critic else None
        # The critic's observation starts with the actor's.
        self.fixed_scale_obs = self.fixed_scale_critic_obs = self.obs_builder.task_indices
        self._rewards = [(name, resolve(name, REWARD_TERMS, "reward term"), term)
                         for name, term in config.rewards.items() if term.weight != 0.0]
        self._terminations = [(name, resolve(name, TERMINATIONS, "termination"), term)
                              for name, term in config.terminations.items()]

        n = num_envs
        self.task = TaskInputs(phase=np.zeros(n), command=np.zeros((n, 3)),
                               step_frequency=np.ones(n), target_heading=np.zeros(n))
        self.episode_step = np.zeros(n, dtype=np.int64)
        self.action = np.zeros((n, C.NUM_MOTORS))
        self.last_action = np.zeros((n, C.NUM_MOTORS))
        self._foot_pos = np.zeros((n, 2, 3))
        self._command_timer = np.zeros(n)
        self.curriculum = SpeedCurriculum(config.command.curriculum, config.command.forward[1], n)
        self._obs = np.zeros((n, self.num_obs), dtype=np.float32)
        self._critic_obs = None
        self.reset()

    # ------------------------------------------------------------------ VecEnv

    def get_observations(self) -> np.ndarray:
        return self._obs.copy()

    def get_critic_observations(self) -> np.ndarray | None:
        return None if self._critic_obs is None else self._critic_obs.copy()

    def reset(self) -> np.ndarray:
        self._reset_envs(np.arange(self.num_envs))
        self._obs, self._critic_obs = self._observe()
        return self.get_observations()

    def step(self, actions: np.ndarray):
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (self.num_envs, self.num_actions):
            raise ValueError(f"actions: expected shape {(self.num_envs, self.num_actions)}, "
                             f"got {actions.shape}")
        # The policy node maps actions to targets with the same two functions (envs/actions.py).
        self.last_action = self.action
        self.action = clip_actions(actions, self.config.action_clip)
        self.sim.set_pd(motor_targets(self.action, self.action_origin.pose(self.task)))
        self._maybe_push()
        foot_before = self._foot_pos
        if self.estimator is None:
            self.sim.step(self.config.policy_substeps)
        else:  # the estimator reads the sensors at its own rate, as on the robot
            remaining = self.config.policy_substeps
            while remaining > 0:
                chunk = min(remaining, self._steps_per_estimate - self._steps_since_estimate)
                self.sim.step(chunk)
                remaining -= chunk
                self._steps_since_estimate += chunk
                if self._steps_since_estimate == self._steps_per_estimate:
                    self.estimator.update(self.sim.sensors(), return_state=False)
                    self._steps_since_estimate = 0

        self.episode_step += 1
        self._advance_clock()
        ctx = self._context(foot_before)
        rewards = np.zeros(self.num_envs)
        log = {}
        for name, fn, term in self._rewards:
            value = fn(ctx, **term.params)
            rewards += term.weight * value
            log[f"reward/{name}"] = float(value.mean())
        terminated = self.sim.diverged.copy()
        for name, fn, term in self._terminations:
            hit = fn(ctx, **term.params)
            terminated |= hit
            log[f"termination/{name}"] = float(hit.mean())
        # Whether it moves at all, apart from how well it tracks: the commanded and the actual
        # forward speed, and their gap.
        forward = ctx.heading_frame_velocity()[:, 0]
        log["speed/forward"] = float(forward.mean())
        log["speed/command"] = float(ctx.command[:, 0].mean())
        log["speed/forward_error"] = float(np.abs(forward - ctx.command[:, 0]).mean())
        # Whether it steps at all: 0 means it stands on both feet whatever the clock says.
        swing = ctx.swing()
        if (swing > 0.99).any():
            log["gait/swing_airborne"] = float(swing_airborne(swing, ctx.foot_force).sum()
                                               / (swing > 0.99).sum())
        time_outs = (self.episode_step >= self.max_episode_steps) & ~terminated
        dones = terminated | time_outs
        # A diverged simulation was put back on its feet inside the step: its last state is
        # not one to reward.
        rewards[self.sim.diverged] = 0.0
        if self.curriculum.enabled:
            self.curriculum.record(np.abs(forward - ctx.command[:, 0]))
            ended = np.flatnonzero(dones)
            if ended.size:
                self.curriculum.episodes_ended(ended, self.episode_step[ended], time_outs[ended],
                                               self.task.command[ended, 0])
            log["curriculum/forward_max"] = self.curriculum.limit

        self._resample_due_commands()
        obs, critic_obs = self._observe()
        extras = {"time_outs": time_outs, "terminal_obs": obs.copy(), "log": log}
        if critic_obs is not None:
            extras["terminal_critic_obs"] = critic_obs.copy()
        done_ids = np.flatnonzero(dones)
        if done_ids.size:
            self._reset_envs(done_ids)
            new_obs, new_critic = self._observe()
            obs[done_ids] = new_obs[done_ids]
            if critic_obs is not None:
                critic_obs[done_ids] = new_critic[done_ids]
        self._obs, self._critic_obs = obs, critic_obs
        if critic_obs is not None:
            extras["critic_obs"] = critic_obs.copy()
        return obs.copy(), rewards.astype(np.float32), dones, extras

    def trained_forward_max(self) -> float | None:
        if not self.curriculum.enabled or self.curriculum.limit >= self.config.command.forward[1]:
            return None
        return max(self.config.command.forward[0], self.curriculum.limit)

    def get_state(self) -> dict:
        """Simulator, per-env counters, commands and the generator: enough to continue exactly."""
        return {"sim": self.sim.get_state(), "phase": self.task.phase.copy(),
                "command": self.task.command.copy(),
                "step_frequency": self.task.step_frequency.copy(),
                "target_heading": self.task.target_heading.copy(),
                "episode_step": self.episode_step.copy(), "action": self.action.copy(),
                "last_action": self.last_action.copy(), "foot_pos": self._foot_pos.copy(),
                "command_timer": self._command_timer.copy(), "obs": self._obs.copy(),
                "critic_obs": None if self._critic_obs is None else self._critic_obs.copy(),
                "curriculum": self.curriculum.get_state(), "rng": self.rng.bit_generator.state}

    def set_state(self, state: dict) -> None:
        self.sim.set_state(state["sim"])
        self.task = TaskInputs(phase=np.array(state["phase"]), command=np.array(state["command"]),
                               step_frequency=np.array(state["step_frequency"]),
                               target_heading=np.array(state["target_heading"]))
        self.episode_step = np.array(state["episode_step"])
        self.action = np.array(state["action"])
        self.last_action = np.array(state["last_action"])
        self._foot_pos = np.array(state["foot_pos"])
        self._command_timer = np.array(state["command_timer"])
        self._obs = np.array(state["obs"])
        self._critic_obs = None if state["critic_obs"] is None else np.array(state["critic_obs"])
        if "curriculum" in state:  # absent from checkpoints older than the curriculum
            self.curriculum.set_state(state["curriculum"])
        self.rng.bit_generator.state = state["rng"]

    def restore_progress(self, state: dict) -> None:
        if "curriculum" in state:
            self.curriculum.set_stage(state["curriculum"])

    def close(self) -> None:
        self.sim = None

    # ------------------------------------------------------------------ commands

    def set_commands(self, command: np.ndarray | None = None,
                     step_frequency: np.ndarray | None = None, ids=None) -> None:
        """Change the speed command (N, 3) or stepping frequency (N,) at run time."""
        ids = np.arange(self.num_envs) if ids is None else np.asarray(ids)
        if command is not None:
            self.task.command[ids] = command
        if step_frequency is not None:
            self.task.step_frequency[ids] = step_frequency

    # ------------------------------------------------------------------ internals

    def _advance_clock(self):
        advance_clock(self.task, self.dt, self.config.gait.cycle_seconds)

    def _resample_due_commands(self):
        """New commands where ``resample_seconds`` ran out: after the step's reward, which
        judges the command the policy saw, and before the observation that shows the new one."""
        if self.config.command.resample_seconds > 0:
            self._command_timer += self.dt
            due = np.flatnonzero(self._command_timer >= self.config.command.resample_seconds)
            if due.size:
                self._sample_commands(due)

    def _sample_commands(self, ids: np.ndarray):
        cfg = self.config.command
        n = ids.size
        forward = (cfg.forward[0], min(cfg.forward[1], max(cfg.forward[0], self.curriculum.limit)))
        command = np.stack([self.rng.uniform(*forward, n), self.rng.uniform(*cfg.lateral, n),
                            self.rng.uniform(*cfg.yaw_rate, n)], axis=1)
        command[self.rng.random(n) < cfg.zero_probability] = 0.0
        self.task.command[ids] = command
        self._command_timer[ids] = 0.0

    def _reset_envs(self, ids: np.ndarray):
        cfg, rng, n = self.config, self.rng, ids.size
        gait = cfg.gait
        self.task.phase[ids] = rng.random(n) if cfg.reset.random_phase else 0.0
        self.task.step_frequency[ids] = rng.uniform(*gait.step_frequency, n)
        self._sample_commands(ids)
        if self.reference is not None and cfg.action == "delta":
            index = self.reference.index(self.task.phase[ids])
            qpos = self.reference.qpos[index].copy()
            qvel = self.reference.qvel[index].copy()
            qpos[:, :2] = 0.0  # start at the origin, whatever the reference's position
        else:
            qpos = np.tile(STANDING_QPOS, (n, 1))
            qvel = np.zeros((n, self.sim.model.nv))
        qpos[:, MOTOR_QPOS_INDEX] += rng.normal(0.0, cfg.reset.motor_noise, (n, C.NUM_MOTORS))
        qvel[:, 6:] += rng.normal(0.0, cfg.reset.velocity_noise, (n, qvel.shape[1] - 6))
        heading = rng.uniform(-math.pi, math.pi, n) if cfg.reset.random_heading else np.zeros(n)
        qpos[:, 3:7] = _quat_multiply(np.stack([np.cos(heading / 2), np.zeros(n), np.zeros(n),
                                                np.sin(heading / 2)], axis=1), qpos[:, 3:7])
        c, s = np.cos(heading), np.sin(heading)
        # A reference state's planar velocity is along +x: turn it with the robot.
        qvel[:, 0], qvel[:, 1] = c * qvel[:, 0] - s * qvel[:, 1], s * qvel[:, 0] + c * qvel[:, 1]
        self.task.target_heading[ids] = heading
        if cfg.reset.command_velocity > 0.0:
            forward, lateral = (cfg.reset.command_velocity * self.task.command[ids, i]
                                for i in (0, 1))
            qvel[:, 0] += c * forward - s * lateral  # the free joint's world-frame velocity
            qvel[:, 1] += s * forward + c * lateral
        if cfg.randomization.enabled:
            self.sim.set_dynamics(self._draw_dynamics(n), ids)
        self.sim.reset(ids, qpos, qvel)
        if self.estimator is not None:
            # Like the robot's, it starts from its sensors: x = y = 0, the lower foot on z = 0.
            self.estimator.reset(ids)
            readings = self.sim.sensors()
            self.estimator.update(readings.select(ids), ids=ids, return_state=False)
        self.episode_step[ids] = 0
        self.action[ids] = 0.0
        self.last_action[ids] = 0.0
        self._foot_pos[ids] = self.sim.foot_positions()[ids]

    def _draw_dynamics(self, n: int):
        r, rng, m = self.config.randomization, self.rng, self.sim.model
        dyn = self.sim.nominal_dynamics()
        dyn.mass_scale = rng.uniform(*r.mass_scale, (n, m.nbody))
        dyn.damping_scale = rng.uniform(*r.damping_scale, (n, m.nv))
        dyn.friction_scale = rng.uniform(*r.friction_scale, n)
        dyn.spring_scale = rng.uniform(*r.spring_scale, (n, 2))
        dyn.pelvis_com_offset = rng.uniform(*r.pelvis_com_offset, (n, 3))
        return dyn

    def _maybe_push(self):
        p = self.config.pushes
        if p.rate <= 0.0:
            return
        start = np.flatnonzero(self.rng.random(self.num_envs) < p.rate * self.dt)
        if start.size:
            angle = self.rng.uniform(-math.pi, math.pi, start.size)
            magnitude = self.rng.uniform(*p.force, start.size)
            force = np.stack([np.cos(angle), np.sin(angle), np.zeros(start.size)], 1)
            self.sim.push(force * magnitude[:, None], duration=p.duration, ids=start)

    def _context(self, foot_before: np.ndarray) -> StepContext:
        sim = self.sim
        pelvis_pos, pelvis_quat = sim.pelvis_pose()
        pelvis_vel, pelvis_angvel = sim.pelvis_twist()
        foot_pos = sim.foot_positions()
        self._foot_pos = foot_pos
        motor_pos, motor_vel = sim.motor_state()
        qpos = sim.qpos
        reference_qpos = None
        if self.reference is not None:
            reference_qpos = self.reference.qpos[self.reference.index(self.task.phase)]
        elif self.action_origin.gait_prior is not None:
            reference_qpos = self.action_origin.gait_prior.joint_positions(
                self.task.phase, self.action_origin.stride_speed(self.task))
        return StepContext(
            dt=self.dt, pelvis_pos=pelvis_pos, pelvis_quat=pelvis_quat, pelvis_vel=pelvis_vel,
            pelvis_angvel=pelvis_angvel, foot_pos=foot_pos,
            foot_vel=(foot_pos - foot_before) / self.dt, foot_force=sim.foot_forces(),
            motor_pos=motor_pos, motor_vel=motor_vel, motor_torque=sim.motor_torque(),
            shin_pos=qpos[:, SHIN_QPOS_INDEX], action=self.action, last_action=self.last_action,
            phase=self.task.phase, swing_ratio=self.config.gait.swing_ratio,
            leg_phase_offset=self.config.gait.leg_phase_offset, command=self.task.command,
            target_heading=self.task.target_heading, reference_qpos=reference_qpos, qpos=qpos)

    def _observe(self) -> tuple[np.ndarray, np.ndarray | None]:
        sim = self.sim
        qpos, qvel = sim.qpos, sim.qvel
        estimate = None if self.estimator is None else self.estimator.state()
        obs = self.obs_builder.build(sim.sensors(), self.task, qpos, qvel, self.rng,
                                     self._reference_state(), estimate)
        if not self.config.privileged_critic:
            return obs, None
        pelvis_vel, pelvis_angvel = sim.pelvis_twist()
        c, s = np.cos(self.task.target_heading), np.sin(self.task.target_heading)
        heading_vel = np.stack([c * pelvis_vel[:, 0] + s * pelvis_vel[:, 1],
                                -s * pelvis_vel[:, 0] + c * pelvis_vel[:, 1], pelvis_vel[:, 2]], 1)
        feet = sim.foot_positions()
        privileged = np.concatenate([
            qpos[:, 2:3], heading_vel, pelvis_angvel, gravity_in_frame(qpos[:, 3:7])[:, :2],
            sim.foot_forces()[:, :, 2] / 300.0, feet[:, :, 2]], axis=1).astype(np.float32)
        return obs, np.concatenate([obs, privileged], axis=1)

    def _reference_state(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The reference's qpos and qvel at the next policy step's phase."""
        if not self.config.observation.reference:
            return None
        return reference_state(self.reference, self.task, self.dt,
                               self.config.gait.cycle_seconds)


def _quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aw, ax, ay, az = a.T
    bw, bx, by, bz = b.T
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw],
                    axis=1)


def make_env(config: CassieEnvConfig, num_envs: int, num_threads: int = 1,
             seed: int = 0) -> CassieEnv:
    """The env factory the trainer, evaluation and benchmarks use."""
    return CassieEnv(config, num_envs, num_threads, seed)
