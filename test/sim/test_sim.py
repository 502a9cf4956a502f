"""CassieSim: the PD loop, the robot's actuator pipeline, batching, pushes and bad input."""

import numpy as np
import pytest

from cassie_sim_ros import constants as C
from cassie_sim_ros.actuator import ActuatorPipeline, PipelineConfig
from cassie_sim_ros.config import ConfigError, from_dict
from cassie_sim_ros.sim import CassieSim, SimConfig

ALL_OFF = PipelineConfig(encoder_delay=False, quantize_encoders=False, velocity_filter=False,
                         speed_torque_limit=False, torque_delay=False, soft_joint_limits=False)
HIP_YAW = C.MOTOR_NAMES.index("left_hip_yaw")


@pytest.mark.parametrize("actuator", ["faithful", "fast"])
def test_pd_target_moves_the_motor_toward_it(actuator):
    sim = CassieSim(SimConfig(actuator=actuator))
    q0, _ = sim.motor_state()
    target = q0[0].copy()
    target[HIP_YAW] += 0.15
    sim.set_pd(target)
    sim.step(200)  # 0.1 s
    q, _ = sim.motor_state()
    assert q[0, HIP_YAW] - q0[0, HIP_YAW] > 0.07


@pytest.mark.parametrize("actuator", ["faithful", "fast"])
def test_batched_sims_are_bit_identical_to_single_sims(actuator):
    config = SimConfig(actuator=actuator)
    rng = np.random.default_rng(0)
    batch = CassieSim(config, num_sims=3, num_threads=2)
    singles = [CassieSim(config) for _ in range(3)]
    q0, _ = batch.motor_state()
    for _ in range(4):
        targets = q0 + rng.normal(0, 0.1, q0.shape)
        batch.set_pd(targets)
        for i, single in enumerate(singles):
            single.set_pd(targets[i])
        batch.step(30)
        for single in singles:
            single.step(30)
    for i, single in enumerate(singles):
        np.testing.assert_array_equal(batch.qpos[i], single.qpos[0])
        np.testing.assert_array_equal(batch.qvel[i], single.qvel[0])


def test_fast_mode_matches_an_ideal_pd_in_numpy():
    fast = CassieSim(SimConfig(actuator="fast"))
    ideal = CassieSim(SimConfig(actuator="faithful", pipeline=ALL_OFF))
    q0, _ = fast.motor_state()
    target = q0 + 0.05
    for sim in (fast, ideal):
        sim.set_pd(target)
        sim.step(100)
    # MuJoCo integrates the PD's damping implicitly, numpy explicitly: close, not equal.
    np.testing.assert_allclose(fast.motor_state()[0], ideal.motor_state()[0], atol=3e-3)


def test_torque_never_exceeds_the_motor_limits():
    sim = CassieSim(SimConfig(actuator="fast"))
    sim.set_pd(np.full(10, 3.0), kp=np.full(10, 5000.0))
    sim.step(20)
    assert np.all(np.abs(sim.motor_torque()[0]) <= C.TORQUE_LIMIT + 1e-9)
    assert np.any(np.isclose(np.abs(sim.motor_torque()[0]), C.TORQUE_LIMIT))


def test_pipeline_delays_torque_by_three_ms_and_reads_encoders_one_ms_late():
    pipe = ActuatorPipeline(PipelineConfig(quantize_encoders=False, speed_torque_limit=False,
                                           soft_joint_limits=False), 1, 0.0005)
    assert (pipe.encoder_delay, pipe.torque_delay) == (2, 6)
    zeros = np.zeros((1, 10))
    kp, kd = np.ones((1, 10)), np.zeros((1, 10))
    pipe.reset(np.array([0]), zeros, zeros)
    applied = [pipe.torque(zeros, zeros, zeros + 1.0, zeros, zeros, kp, kd)[0, 0]
               for _ in range(8)]
    # Computed from step 0 on, the torque arrives 6 steps later.
    assert applied == [0.0] * 6 + [1.0, 1.0]
    # A position change reaches the PD 2 steps after it happens.
    seen = []
    for k in range(4):
        q = zeros + (0.5 if k >= 1 else 0.0)
        seen.append(pipe.torque(q, zeros, zeros, zeros, zeros, kp, kd))
    # the torque computed at step k arrives at step k + 6; compare what was computed
    slots = [(pipe._cursor - 4 + k) % pipe._tau_hist.shape[0] for k in range(4)]
    computed = pipe._tau_hist[slots, 0, 0]
    np.testing.assert_allclose(computed, [0.0, 0.0, 0.0, -0.5])


def test_pipeline_quantises_encoders_and_filters_velocity():
    pipe = ActuatorPipeline(PipelineConfig(), 1, 0.0005)
    q = np.full((1, 10), 0.123456789)
    pipe.reset(np.array([0]), q, np.zeros((1, 10)))
    for k in range(12):  # a constant 1 rad/s ramp
        pipe.torque(q + 0.0005 * k, np.ones((1, 10)), q, np.zeros((1, 10)), np.zeros((1, 10)),
                    np.zeros((1, 10)), np.zeros((1, 10)))
    measured_q, measured_qd = pipe.measured()
    steps = measured_q / pipe.resolution
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-6)
    np.testing.assert_allclose(measured_qd, 1.0, atol=2 * pipe.resolution.max() / (9 * 0.0005))


def test_speed_dependent_torque_limit_cuts_torque_at_high_speed():
    ideal = PipelineConfig(encoder_delay=False, torque_delay=False, velocity_filter=False,
                           quantize_encoders=False)
    pipe = ActuatorPipeline(ideal, 1, 0.0005)
    speed = 0.75 * C.MAX_JOINT_SPEED[None]
    pipe.reset(np.array([0]), np.zeros((1, 10)), speed)
    tau = pipe.torque(np.zeros((1, 10)), speed, np.full((1, 10), 10.0), np.zeros((1, 10)),
                      np.zeros((1, 10)), np.full((1, 10), 1e4), np.zeros((1, 10)))
    np.testing.assert_allclose(tau[0], 0.5 * C.TORQUE_LIMIT)


def test_soft_joint_limits_push_back_only_past_their_onset():
    pipe = ActuatorPipeline(PipelineConfig(), 1, 0.0005)
    inside = C.NEUTRAL_MOTOR_OFFSET[None].copy()
    assert not pipe.soft_limit_torque(inside, np.zeros((1, 10))).any()
    past = inside.copy()
    past[0, 0] = C.SOFT_LIMIT_HIGH[0] + 0.01
    tau = pipe.soft_limit_torque(past, np.zeros((1, 10)))
    assert tau[0, 0] < 0 and not tau[0, 1:].any()


def test_push_moves_the_pelvis_and_ends_after_its_duration():
    pushed, still = CassieSim(SimConfig(actuator="fast"), num_sims=2).__class__(
        SimConfig(actuator="fast")), CassieSim(SimConfig(actuator="fast"))
    pushed.push([0.0, 200.0, 0.0], duration=0.05)
    for sim in (pushed, still):
        sim.step(200)
    vy_pushed = pushed.pelvis_twist()[0][0, 1]
    vy_still = still.pelvis_twist()[0][0, 1]
    assert vy_pushed - vy_still > 0.1
    assert not pushed._xfrc.any()


def test_reset_restores_the_keyframe_or_a_given_state():
    sim = CassieSim(SimConfig(actuator="fast"), num_sims=2)
    start = sim.qpos
    sim.step(500)
    assert not np.allclose(sim.qpos, start)
    sim.reset(ids=[1])
    np.testing.assert_array_equal(sim.qpos[1], start[1])
    qpos = start[0].copy()
    qpos[0] = 3.0
    sim.reset(ids=[0], qpos=qpos, qvel=np.zeros(32))
    assert sim.qpos[0, 0] == 3.0


@pytest.mark.parametrize("bad,match", [
    (np.full(10, np.nan), "non-finite"),
    (np.full(9, 0.0), "expected shape"),
    (np.full(10, np.inf), "non-finite"),
])
def test_bad_pd_targets_are_rejected_and_change_nothing(bad, match):
    sim = CassieSim()
    before = sim.pd_command()
    with pytest.raises(ValueError, match=match):
        sim.set_pd(bad)
    with pytest.raises(ValueError, match="non-finite"):
        sim.set_pd(before["p_target"][0], kp=np.full(10, np.nan))
    after = sim.pd_command()
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])


def test_bad_configs_name_the_key():
    with pytest.raises(ConfigError, match="^kp: expected 10 gains"):
        SimConfig(kp=(1.0, 2.0))
    with pytest.raises(ConfigError, match="^sim.kp: expected 10 gains"):
        from_dict(SimConfig, {"kp": [1.0, 2.0]}, "sim")
    with pytest.raises(ConfigError, match="variant.*'regular', 'stiff', 'soft'"):
        from_dict(SimConfig, {"variant": "bouncy"}, "sim")
    with pytest.raises(ConfigError, match="unknown key sim.timestamp"):
        from_dict(SimConfig, {"timestamp": 0.001}, "sim")


def test_a_diverging_sim_is_flagged_and_parked_without_touching_the_others():
    sim = CassieSim(SimConfig(actuator="fast"), num_sims=2)
    qvel = np.zeros(32)
    qvel[6:] = 1e12
    sim.reset(ids=[0], qvel=qvel)
    sim.step(20)
    assert sim.diverged.tolist() == [True, False]
    assert np.isfinite(sim.qpos).all()


def test_a_sim_that_diverges_again_after_its_reset_is_flagged_again():
    # The reset clears MuJoCo's warning counters: the second divergence must still count.
    sim = CassieSim(SimConfig(actuator="fast"), num_sims=2)
    qvel = np.zeros(32)
    qvel[6:] = 1e12
    for _ in range(2):
        sim.reset(ids=[0], qvel=qvel)
        assert not sim.diverged[0]
        sim.step(20)
        assert sim.diverged.tolist() == [True, False]


def test_a_zero_duration_push_pushes_nothing():
    pushed, still = CassieSim(), CassieSim()
    pushed.push([300.0, 0.0, 0.0], duration=0.0)
    pushed.step(200)
    still.step(200)
    np.testing.assert_array_equal(pushed.qpos, still.qpos)


def test_per_sim_dynamics_match_a_single_sim_with_the_same_dynamics():
    batch = CassieSim(SimConfig(actuator="fast"), num_sims=2)
    single = CassieSim(SimConfig(actuator="fast"))
    dyn = batch.nominal_dynamics()
    dyn.mass_scale[1] *= 1.2
    dyn.spring_scale[1] = [0.8, 1.1]
    dyn.pelvis_com_offset[1] = [0.01, 0.0, -0.01]
    dyn.damping_scale[1] *= 1.5
    dyn.friction_scale[1] = 0.7
    batch.set_dynamics(dyn)
    one = single.nominal_dynamics()
    for name in vars(one):
        getattr(one, name)[0] = getattr(dyn, name)[1]
    single.set_dynamics(one)
    assert batch.mj_model(1).body_mass.sum() == pytest.approx(1.2 * C.TOTAL_MASS_KG, rel=2e-3)
    batch.step(300)
    single.step(300)
    np.testing.assert_array_equal(batch.qpos[1], single.qpos[0])
    assert not np.array_equal(batch.qpos[0], batch.qpos[1])


def test_sensor_noise_is_off_by_default_and_on_when_asked():
    quiet, noisy = CassieSim(), CassieSim(SimConfig(sensor_noise=True))
    for sim in (quiet, noisy):
        sim.step(10)
    a, b = quiet.sensors(), noisy.sensors()
    np.testing.assert_array_equal(quiet.sensors().imu_angular_velocity, a.imu_angular_velocity)
    assert not np.array_equal(a.imu_angular_velocity, b.imu_angular_velocity)
    np.testing.assert_allclose(a.imu_linear_acceleration, b.imu_linear_acceleration, atol=0.1)


@pytest.mark.parametrize("timestep", [0.0005, 0.002])
def test_feet_carry_the_weight_and_the_imu_reads_gravity(timestep):
    sim = CassieSim(SimConfig(actuator="fast", timestep=timestep))
    # Stiff gains hold the standing pose for a while (it tips over later: balance is the
    # policy's job).
    sim.set_pd(sim.motor_state()[0][0], kp=np.full(10, 1500.0), kd=np.full(10, 60.0))
    sim.step(int(0.5 / timestep))
    forces = sim.foot_forces()[0]
    weight = C.TOTAL_MASS_KG * 9.81
    assert 0.7 * weight < forces[:, 2].sum() < 1.5 * weight
    assert forces[0, 2] == pytest.approx(forces[1, 2], rel=0.1)
    np.testing.assert_allclose(sim.sensors().imu_orientation[0], [1, 0, 0, 0], atol=0.05)
    sim.step(int(2.0 / timestep))  # fallen and at rest
    assert np.linalg.norm(sim.sensors().imu_linear_acceleration[0]) == pytest.approx(9.81, abs=0.2)


def test_ground_reaction_forces_only_push_even_when_the_legs_touch_while_falling():
    sim = CassieSim(SimConfig(actuator="fast", timestep=0.002))
    sim.set_pd(C.NEUTRAL_MOTOR_OFFSET + np.tile([0.3, 0.3, 0, 0, 0], 2))  # legs crossed inward
    lowest = np.inf
    for _ in range(150):
        sim.step(10)
        lowest = min(lowest, sim.foot_forces()[0, :, 2].min())
    assert lowest >= 0.0
