"""SimServer, the simulator node's ROS-free core: command checks, watchdog, stepping, state."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mujoco
import numpy as np
import pytest
import yaml

from cassie_sim_ros import constants as C
from cassie_sim_ros.config import ConfigError, from_dict
from cassie_sim_ros.estimator import SIMULATED_CONTACT_CREEP
from cassie_sim_ros.sim_server import (JOINT_NAMES, Event, PdCommand, RealtimePacer, Rejection,
                                       SimNodeConfig, SimServer, Throttle, quat_rotate_inverse)

ROOT = Path(__file__).resolve().parents[2]
HIP_YAW = C.MOTOR_NAMES.index("left_hip_yaw")
FAST = SimNodeConfig(actuator="fast")


@pytest.fixture(scope="module")
def checker() -> SimServer:
    """A server used only for its (pure) input checks."""
    return SimServer(FAST)


def standing(server: SimServer) -> np.ndarray:
    return server.sim.motor_state()[0][0]


def command(server: SimServer, position=None, **kw) -> PdCommand:
    cmd = server.parse_command(C.MOTOR_NAMES, standing(server) if position is None else position,
                               **kw)
    assert isinstance(cmd, PdCommand), cmd
    return cmd


# ------------------------------------------------------------------ config


def test_config_file_matches_the_defaults():
    text = (ROOT / "config" / "sim.yaml").read_text()
    params = yaml.safe_load(text)["sim_node"]["ros__parameters"]
    assert from_dict(SimNodeConfig, params) == SimNodeConfig()


@pytest.mark.parametrize("params,match", [
    ({"mode": "fast"}, "mode: 'fast' is not one of the allowed values 'realtime', 'lockstep'"),
    ({"actuator": "ideal"}, "actuator: .*'faithful', 'fast'"),
    ({"variant": "bouncy"}, "variant: .*'regular', 'stiff', 'soft'"),
    ({"publish_rate": 300.0}, "publish_rate: .*divisor of the physics rate 2000 Hz"),
    ({"publish_rate": 4000.0}, r"publish_rate: .*\(0, 2000\]"),
    ({"publish_rate": 800.0, "timestep": 0.002}, r"publish_rate: .*\(0, 500\]"),
    ({"policy_period": 0.0251}, "policy_period: .*multiple of the timestep"),
    ({"kp": [100.0] * 9}, "kp: .*10 finite gains >= 0 in motor order"),
    ({"kd": [-1.0] * 10}, "kd: .*10 finite gains"),
    ({"timestep": 0.01}, r"timestep: .*\(0, 0.005\]"),
    ({"watchdog_timeout": 0.0}, "watchdog_timeout"),
    ({"push_duration": -1.0}, "push_duration"),
    ({"seed": -3}, "seed"),
    ({"rt_priority": 99}, r"rt_priority: 99 is not allowed.*1\.\.98"),
    ({"seed": 1.5}, "seed: expected an integer"),
    ({"sensor_noise": "yes"}, "sensor_noise: expected true or false"),
    ({"watchdog": 0.1}, "unknown key watchdog; allowed keys: .*watchdog_timeout"),
])
def test_bad_parameters_name_the_parameter_and_what_is_allowed(params, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(SimNodeConfig, params)


def test_integer_parameters_are_accepted_where_numbers_are_expected():
    config = from_dict(SimNodeConfig, {"publish_rate": 1000, "kp": [50] * 10})
    assert config.publish_rate == 1000.0 and config.kp == (50.0,) * 10
    assert SimServer(from_dict(SimNodeConfig, {"publish_rate": 1000,
                                               "actuator": "fast"})).steps_per_publish == 2


def test_the_core_imports_without_rclpy():
    code = ("import sys; sys.modules['rclpy'] = None; import cassie_sim_ros.sim_server; "
            "assert not any(m.startswith('rcl') for m in sys.modules if sys.modules[m])")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ------------------------------------------------------------------ input checks


def test_targets_by_name_in_any_order_are_put_in_motor_order(checker):
    order = list(reversed(C.MOTOR_NAMES))
    p = standing(checker)
    p_by_name = dict(zip(C.MOTOR_NAMES, p + 0.01))
    ff = {name: 0.5 * i for i, name in enumerate(C.MOTOR_NAMES)}
    cmd = checker.parse_command(order, [p_by_name[n] for n in order], [],
                                [ff[n] for n in order])
    assert isinstance(cmd, PdCommand)
    np.testing.assert_array_equal(cmd.position, p + 0.01)
    np.testing.assert_array_equal(cmd.velocity, np.zeros(10))  # empty means 0
    np.testing.assert_array_equal(cmd.effort, [ff[n] for n in C.MOTOR_NAMES])


def _with(values, index, value):
    values = list(values)
    values[index] = value
    return values


@pytest.mark.parametrize("case,kind", [
    ("nan_position", "non_finite"),
    ("inf_effort", "non_finite"),
    ("nan_velocity", "non_finite"),
    ("unknown_name", "unknown_motor"),
    ("passive_joint", "unknown_motor"),
    ("missing_motor", "missing_motor"),
    ("duplicate", "names"),
    ("short_position", "length"),
    ("long_effort", "length"),
    ("position_out_of_range", "position_range"),
    ("effort_over_limit", "effort_range"),
    ("velocity_over_limit", "velocity_range"),
    ("text_values", "malformed"),
])
def test_bad_targets_are_rejected_with_a_reason(checker, case, kind):
    names, p = list(C.MOTOR_NAMES), list(standing(checker))
    v, e = [0.0] * 10, [0.0] * 10
    if case == "nan_position":
        p = _with(p, 3, float("nan"))
    elif case == "inf_effort":
        e = _with(e, 0, float("inf"))
    elif case == "nan_velocity":
        v = _with(v, 9, float("nan"))
    elif case == "unknown_name":
        names = _with(names, 2, "left_hip_pich")
    elif case == "passive_joint":
        names, p, v, e = names + ["left_shin"], p + [0.0], v + [0.0], e + [0.0]
    elif case == "missing_motor":
        names, p, v, e = names[:-1], p[:-1], v[:-1], e[:-1]
    elif case == "duplicate":
        names = _with(names, 1, names[0])
    elif case == "short_position":
        p = p[:-1]
    elif case == "long_effort":
        e = e + [0.0]
    elif case == "position_out_of_range":
        p = _with(p, HIP_YAW, np.radians(22.5) + 0.25)
    elif case == "effort_over_limit":
        e = _with(e, 4, 45.2)
    elif case == "velocity_over_limit":
        v = _with(v, 0, 1000.0)
    elif case == "text_values":
        p = ["a"] * 10
    result = checker.parse_command(names, p, v, e)
    assert isinstance(result, Rejection) and result.kind == kind, result
    assert result.message


def test_a_huge_message_is_rejected_with_a_short_reason(checker):
    names = ["left_knee"] * 200_000 + ["x" * 10_000] * 10
    result = checker.parse_command(names, np.zeros(len(names)))
    assert isinstance(result, Rejection) and len(result.message) < 500
    result = checker.parse_command(list(C.MOTOR_NAMES) * 20_000, np.zeros(200_000))
    assert result.kind == "names" and len(result.message) < 500


def test_position_targets_within_the_margin_are_accepted(checker):
    p = _with(standing(checker), HIP_YAW, np.radians(22.5) + 0.15)
    assert isinstance(checker.parse_command(C.MOTOR_NAMES, p), PdCommand)
    e = _with(np.zeros(10), 4, -45.0)
    assert isinstance(checker.parse_command(C.MOTOR_NAMES, standing(checker), [], e), PdCommand)


@pytest.mark.parametrize("force,torque,ok", [
    ((0.0, 200.0, 0.0), (0.0, 0.0, 0.0), True),
    ((float("nan"), 0.0, 0.0), (0.0, 0.0, 0.0), False),
    ((0.0, 0.0, 0.0), (0.0, float("inf"), 0.0), False),
    ((5000.0, 0.0, 0.0), (0.0, 0.0, 0.0), False),
    ((0.0, 0.0), (0.0, 0.0, 0.0), False),
])
def test_pushes_are_checked(checker, force, torque, ok):
    result = checker.parse_push(force, torque)
    assert isinstance(result, Rejection) != ok


# ------------------------------------------------------------------ watchdog and stepping


def test_watchdog_damps_after_the_timeout_of_sim_time_and_the_next_target_resumes():
    server = SimServer(FAST)  # 0.1 s timeout = 200 steps
    assert server.advance(400) == [] and server.control_mode == "hold"  # not armed yet
    target = _with(standing(server), HIP_YAW, standing(server)[HIP_YAW] + 0.1)
    assert server.apply(command(server, target)) == []
    assert server.advance(200) == [] and server.control_mode == "pd"
    assert server.advance(1) == [Event.WATCHDOG_ENGAGED]
    assert server.control_mode == "damping"
    held = server.sim.pd_command()
    np.testing.assert_array_equal(held["kp"][0], np.zeros(10))
    np.testing.assert_array_equal(held["kd"][0], C.DEFAULT_KD)
    np.testing.assert_array_equal(held["feedforward"][0], np.zeros(10))
    np.testing.assert_array_equal(held["d_target"][0], np.zeros(10))
    assert server.advance(500) == []  # reported once, not every step
    assert server.apply(command(server, target)) == [Event.WATCHDOG_RELEASED]
    assert server.control_mode == "pd"
    np.testing.assert_array_equal(server.sim.pd_command()["kp"][0], C.DEFAULT_KP)


def test_watchdog_trips_at_the_exact_step_inside_a_chunk():
    server = SimServer(FAST)
    server.apply(command(server))
    server.advance(198)
    assert server.advance(5) == [Event.WATCHDOG_ENGAGED]  # at step 200 of this command
    assert server.steps == 203


def test_a_pd_target_moves_the_motor_toward_it():
    server = SimServer(SimNodeConfig())  # faithful actuators
    q0 = standing(server)[HIP_YAW]
    target = command(server, _with(standing(server), HIP_YAW, q0 + 0.15))
    for _ in range(40):  # 0.1 s, a target every 2.5 ms
        server.apply(target)
        server.step_realtime()
    assert server.snapshot().joint_position[HIP_YAW] - q0 > 0.07


def test_lockstep_advances_exactly_one_policy_period_per_target():
    server = SimServer(SimNodeConfig(actuator="fast", mode="lockstep", policy_period=0.03))
    for k in range(1, 4):
        server.lockstep(command(server))
        assert server.steps == 60 * k
        assert server.snapshot().time == pytest.approx(0.03 * k, abs=1e-12)


def test_lockstep_with_the_same_seed_and_targets_is_bit_identical():
    config = SimNodeConfig(mode="lockstep", sensor_noise=True, seed=7)

    def run(cfg):
        server = SimServer(cfg)
        rng = np.random.default_rng(1)
        q0 = standing(server)
        states = [server.snapshot()]
        for _ in range(6):
            server.lockstep(command(server, q0 + rng.normal(0, 0.05, 10)))
            states.append(server.snapshot())
        return np.array([np.concatenate([s.joint_position, s.joint_velocity, s.joint_effort,
                                         s.imu_angular_velocity]) for s in states])

    a, b = run(config), run(config)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, run(SimNodeConfig(mode="lockstep", sensor_noise=True, seed=8)))


def test_reset_returns_to_standing_and_holds_while_time_runs_on():
    server = SimServer(FAST)
    start = server.sim.qpos.copy()
    server.apply(command(server))
    server.push(np.array([0.0, 300.0, 0.0]), np.zeros(3))
    server.advance(600)
    assert server.control_mode == "damping"
    assert abs(server.sim.qpos[0, 1] - start[0, 1]) > 0.01
    server.reset()
    np.testing.assert_array_equal(server.sim.qpos, start)
    assert server.control_mode == "hold" and server.time == pytest.approx(0.3)
    assert server.advance(400) == []  # the watchdog waits for a target again


def test_push_lasts_the_configured_duration():
    server = SimServer(SimNodeConfig(actuator="fast", push_duration=0.01))
    server.push(np.array([0.0, 200.0, 0.0]), np.zeros(3))
    server.advance(10)
    assert server.sim._xfrc.any()
    server.advance(10)
    assert not server.sim._xfrc.any()


def test_a_diverged_simulation_is_reset_and_reported():
    server = SimServer(FAST)
    qvel = np.zeros(server.sim.model.nv)
    qvel[6:] = 1e12
    server.apply(command(server))
    server.sim.reset(qvel=qvel)
    assert Event.DIVERGED in server.advance(5)
    assert server.control_mode == "hold" and not server.sim.diverged.any()
    assert np.isfinite(server.snapshot().joint_position).all()


# ------------------------------------------------------------------ published state


def test_snapshot_is_si_in_documented_frames_and_order():
    server = SimServer(FAST)
    for _ in range(6):
        server.apply(command(server))
        server.advance(100)
    s = server.snapshot()
    assert s.joint_position.shape == s.joint_velocity.shape == s.joint_effort.shape == (16,)
    assert len(JOINT_NAMES) == 16 and JOINT_NAMES[:10] == C.MOTOR_NAMES
    np.testing.assert_array_equal(s.joint_effort[10:], 0.0)
    np.testing.assert_array_equal(s.joint_position[:10], server.sim.motor_state()[0][0])
    # On its feet (settling into the springs): both feet push up with about the robot's
    # weight, and the accelerometer reads about +g.
    weight = C.TOTAL_MASS_KG * 9.81
    assert np.all(s.foot_forces[:, 2] > 0.2 * weight)
    assert 0.7 * weight < s.foot_forces[:, 2].sum() < 1.4 * weight
    assert 0.7 * 9.81 < np.linalg.norm(s.imu_linear_acceleration) < 1.3 * 9.81
    assert s.control_mode == "pd" and s.time == pytest.approx(0.3)
    # Twist in the pelvis frame: rotating it back gives the world velocity.
    world = server.sim.pelvis_twist()[0][0]
    back = np.zeros(3)
    mujoco.mju_rotVecQuat(back, s.pelvis_linear_velocity, s.pelvis_orientation)
    np.testing.assert_allclose(back, world, atol=1e-12)


def test_quat_rotate_inverse_matches_mujoco():
    rng = np.random.default_rng(0)
    for _ in range(5):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        v = rng.normal(size=3)
        expected = np.zeros(3)
        neg = np.zeros(4)
        mujoco.mju_negQuat(neg, q)
        mujoco.mju_rotVecQuat(expected, v, neg)
        np.testing.assert_allclose(quat_rotate_inverse(q, v), expected, atol=1e-12)


# ------------------------------------------------------------------ pacing and throttling


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_pacer_counts_gaps_in_the_stream_and_skips_long_stalls():
    clock = FakeClock()
    period = 0.0025
    pacer = RealtimePacer(period, clock=clock, max_lag=0.1)
    pacer.start()
    for _ in range(400):  # on time, give or take a little jitter
        clock.now += pacer.time_to_next() + (0.0004 if pacer.chunks % 3 else 0.0)
        pacer.done()
    assert pacer.missed == 0
    clock.now += pacer.time_to_next() + 1.5 * period  # this chunk comes late...
    pacer.done()
    assert pacer.missed == 1  # ...leaving one period without a message
    clock.now += pacer.time_to_next()  # the next one is on time again: no new gap
    pacer.done()
    assert pacer.missed == 1
    clock.now += 1.0  # a one-second (400-period) stall ends with this chunk's message
    pacer.done()
    assert pacer.missed == 1 + 399  # the slots the stall left empty
    assert pacer.time_to_next() == pytest.approx(period)  # no catching up in a burst
    totals = pacer.totals()
    assert totals["publish_periods"] == 403
    assert totals["real_time_factor"] < 0.6


def test_pacer_window_reports_the_real_time_factor():
    clock = FakeClock()
    pacer = RealtimePacer(0.01, clock=clock)
    pacer.start()
    for _ in range(100):
        clock.now += 0.02  # half speed
        pacer.done()
    wall, rtf, _ = pacer.window()
    assert wall == pytest.approx(2.0) and rtf == pytest.approx(0.5)


def test_throttle_logs_each_kind_at_once_then_once_per_interval():
    clock = FakeClock()
    throttle = Throttle(1.0, clock)
    assert throttle("non_finite") == 0
    assert throttle("non_finite") is None
    assert throttle("unknown_motor") == 0  # another kind is not hidden
    clock.now += 0.5
    assert throttle("non_finite") is None
    clock.now += 0.6
    assert throttle("non_finite") == 2  # and says how many it held back


def test_the_estimator_runs_at_its_rate_and_can_be_turned_off():
    server = SimServer(SimNodeConfig(actuator="fast", estimator_rate=500.0))
    server.advance(200)  # 0.1 s: 50 estimator updates
    estimate = server.snapshot().estimate
    assert estimate is not None and estimate.valid[0]
    true_up = server.snapshot().pelvis_orientation
    assert np.allclose(estimate.pelvis_orientation[0][[1, 2]], true_up[[1, 2]], atol=0.02)
    # The simulator's estimate knows its own ground: MuJoCo's soft contact creeps.
    assert server.estimator.config.contact_creep == SIMULATED_CONTACT_CREEP > 0
    assert SimServer(SimNodeConfig(estimator_rate=0.0)).snapshot().estimate is None
    with pytest.raises(ConfigError, match="estimator_rate"):
        SimNodeConfig(estimator_rate=300.0)  # not a divisor of 2000 Hz
