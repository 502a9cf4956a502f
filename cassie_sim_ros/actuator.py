"""The robot simulator's motor control pipeline, vectorised over N simulations.

What Agility's simulator (and the robot's own 2 kHz loop) does between a PD command and the
torque at the joint: the PD runs on encoder readings 1 ms old, positions quantised to the encoder
resolution and velocities from a 9-tap filter; the torque then meets the speed-dependent torque
limit and a 3 ms delay; past soft joint limits a stiff spring pushes back. Each part can be
switched off; with all off the result is an ideal PD on the true state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cassie_sim_ros import constants as C


@dataclass(frozen=True)
class PipelineConfig:
    """Parts of the faithful actuator pipeline (used when ``SimConfig.actuator == 'faithful'``)."""

    encoder_delay: bool = True
    """The PD sees encoder readings 1 ms old."""
    quantize_encoders: bool = True
    """Motor positions are rounded to the encoder resolution (13 or 18 bit per motor turn)."""
    velocity_filter: bool = True
    """Motor velocity is the 9-tap moving average of encoder differences, not the true speed."""
    speed_torque_limit: bool = True
    """Torque limit falls linearly to zero at the motor's maximum speed."""
    torque_delay: bool = True
    """Torque reaches the joint 3 ms after it is computed."""
    soft_joint_limits: bool = True
    """A stiff spring-damper pushes back past the robot simulator's soft limit onsets."""


def delay_steps(seconds: float, timestep: float) -> int:
    """Whole physics steps closest to ``seconds`` (halves round up)."""
    return int(np.floor(seconds / timestep + 0.5 + 1e-9))


class ActuatorPipeline:
    """Torques for N simulations from PD commands and the true motor state, one physics step at
    a time.

    Histories are ring buffers over physics steps; ``reset(ids, q)`` fills them with a resting
    state so a fresh simulation sees no spurious velocity or stale torque.
    """

    def __init__(self, config: PipelineConfig, num_sims: int, timestep: float):
        self.config = config
        self.timestep = timestep
        robot_dt = 0.0005  # the robot's own loop, which the delays and filter are defined at
        total = delay_steps(C.ENCODER_DELAY_S * config.encoder_delay
                            + C.TORQUE_DELAY_S * config.torque_delay, timestep)
        self.encoder_delay = min(total, delay_steps(C.ENCODER_DELAY_S, timestep)
                                 if config.encoder_delay else 0)
        self.torque_delay = total - self.encoder_delay
        self.filter_steps = (max(1, delay_steps(C.VELOCITY_FILTER_TAPS * robot_dt, timestep))
                             if config.velocity_filter else 1)
        self.resolution = 2.0 * np.pi / (2.0 ** C.ENCODER_BITS * C.GEAR_RATIO)
        # Encoder history: enough past readings for the delay and the velocity filter.
        self._q_hist = np.zeros((self.encoder_delay + self.filter_steps + 1, num_sims,
                                 C.NUM_MOTORS))
        self._qd_hist = np.zeros((self.encoder_delay + 1, num_sims, C.NUM_MOTORS))
        self._tau_hist = np.zeros((self.torque_delay + 1, num_sims, C.NUM_MOTORS))
        self._cursor = 0
        self._no_soft_limit_torque = np.zeros((num_sims, C.NUM_MOTORS))
        self._no_soft_limit_torque.flags.writeable = False  # returned to every caller
        # Below half the maximum speed the speed-dependent limit is the plain torque limit.
        self._half_speed = 0.5 * C.MAX_JOINT_SPEED

    def reset(self, ids: np.ndarray, motor_q: np.ndarray, motor_qd: np.ndarray) -> None:
        q = self._quantize(motor_q)
        self._q_hist[:, ids] = q
        self._qd_hist[:, ids] = motor_qd
        self._tau_hist[:, ids] = 0.0

    def _quantize(self, q: np.ndarray) -> np.ndarray:
        if not self.config.quantize_encoders:
            return q
        return np.rint(q / self.resolution) * self.resolution  # np.round's own kernel

    def _reading(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Encoder position and velocity as the robot had them at physics step ``step``."""
        q_len = self._q_hist.shape[0]
        q = self._q_hist[step % q_len]
        if self.config.velocity_filter:
            # The moving average of the last taps' differences telescopes to one difference.
            qd = (q - self._q_hist[(step - self.filter_steps) % q_len]) / (
                self.filter_steps * self.timestep)
        else:
            qd = self._qd_hist[step % self._qd_hist.shape[0]]
        return q, qd

    def measured(self) -> tuple[np.ndarray, np.ndarray]:
        """The newest encoder position and velocity readings (what the robot reports)."""
        return self._reading(self._cursor - 1)

    def torque(self, motor_q: np.ndarray, motor_qd: np.ndarray, p_target: np.ndarray,
               d_target: np.ndarray, feedforward: np.ndarray, kp: np.ndarray,
               kd: np.ndarray) -> np.ndarray:
        """Record this step's true motor state and return the torque applied during the step."""
        self._q_hist[self._cursor % self._q_hist.shape[0]] = self._quantize(motor_q)
        if not self.config.velocity_filter:  # else velocities come from the positions
            self._qd_hist[self._cursor % self._qd_hist.shape[0]] = motor_qd
        q_seen, qd_seen = self._reading(self._cursor - self.encoder_delay)
        tau = kp * (p_target - q_seen) + kd * (d_target - qd_seen) + feedforward
        # np.minimum/np.maximum rather than np.clip: the same numbers, less call overhead.
        if self.config.speed_torque_limit and not (np.abs(qd_seen) <= self._half_speed).all():
            limit = np.minimum(np.maximum(
                2.0 * C.TORQUE_LIMIT * (1.0 - np.abs(qd_seen) / C.MAX_JOINT_SPEED), 0.0),
                C.TORQUE_LIMIT)
        else:
            limit = C.TORQUE_LIMIT
        tau = np.maximum(np.minimum(tau, limit), -limit)
        t_len = self._tau_hist.shape[0]
        self._tau_hist[self._cursor % t_len] = tau
        applied = self._tau_hist[(self._cursor - self.torque_delay) % t_len]
        self._cursor += 1
        return applied

    def soft_limit_torque(self, motor_q: np.ndarray, motor_qd: np.ndarray) -> np.ndarray:
        """Joint torque of the soft limits (zero inside them)."""
        if not self.config.soft_joint_limits or not (
                (motor_q > C.SOFT_LIMIT_HIGH) | (motor_q < C.SOFT_LIMIT_LOW)).any():
            return self._no_soft_limit_torque  # the usual case: every joint inside its limits
        over = np.maximum(motor_q - C.SOFT_LIMIT_HIGH, 0.0)
        under = np.minimum(motor_q - C.SOFT_LIMIT_LOW, 0.0)
        depth = over + under
        tau = -C.SOFT_LIMIT_STIFFNESS * depth - C.SOFT_LIMIT_DAMPING * motor_qd * (depth != 0.0)
        cap = 0.9 * C.TORQUE_LIMIT
        return np.clip(tau, -cap, cap)

    def get_state(self) -> dict:
        return {"q_hist": self._q_hist.copy(), "qd_hist": self._qd_hist.copy(),
                "tau_hist": self._tau_hist.copy(), "cursor": self._cursor}

    def set_state(self, state: dict) -> None:
        self._q_hist[:] = state["q_hist"]
        self._qd_hist[:] = state["qd_hist"]
        self._tau_hist[:] = state["tau_hist"]
        self._cursor = int(state["cursor"])
