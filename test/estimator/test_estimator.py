"""Consistency checks of the contact-aided invariant EKF: each can fail if the filter is wrong."""

from __future__ import annotations

import dataclasses

import mujoco
import numpy as np
import pytest

from cassie_sim_ros import constants as C
from cassie_sim_ros.estimator import (SIMULATED_CONTACT_CREEP, CassieEstimator,
                                      EstimatorConfig, LegKinematics, OBSERVATION_46_LAYOUT,
                                      matrix_to_quat, observation_46, quat_to_matrix)
from cassie_sim_ros.model import STANDING_QPOS, load_model
from cassie_sim_ros.sim import CassieSim, SensorReadings, SimConfig

DT = 0.0005
LOADED_SHIN = -0.03  # rad: a shin spring deflection that means "foot on the ground"


@pytest.fixture(scope="module")
def model():
    return load_model()


@pytest.fixture(scope="module")
def kinematics(model):
    return LegKinematics(model)


def standing_angles(model) -> tuple[np.ndarray, np.ndarray]:
    """Motor (10,) and passive joint (6,) angles of the standing keyframe."""
    motor = np.array([STANDING_QPOS[model.jnt_qposadr[model.joint(n).id]] for n in C.MOTOR_NAMES])
    joint = np.array([STANDING_QPOS[model.jnt_qposadr[model.joint(n).id]]
                      for n in C.PASSIVE_JOINT_NAMES])
    return motor, joint


def readings(motor, joint, n=1, quat=(1.0, 0.0, 0.0, 0.0), gyro=(0.0, 0.0, 0.0),
             accel=(0.0, 0.0, 9.81), rng=None) -> SensorReadings:
    """One reading for ``n`` robots, with the simulator's noise levels when ``rng`` is given."""
    def rows(value, width):
        return np.broadcast_to(np.asarray(value, dtype=float), (n, width)).copy()
    out = SensorReadings(motor_position=rows(motor, 10), motor_velocity=rows(0.0, 10),
                         motor_torque=rows(0.0, 10), joint_position=rows(joint, 6),
                         joint_velocity=rows(0.0, 6), imu_orientation=rows(quat, 4),
                         imu_angular_velocity=rows(gyro, 3),
                         imu_linear_acceleration=rows(accel, 3),
                         imu_magnetometer=rows(0.0, 3))
    if rng is not None:
        out.joint_position += rng.normal(0.0, C.JOINT_ENCODER_NOISE, (n, 6))
        out.imu_angular_velocity += rng.normal(0.0, C.GYRO_NOISE, (n, 3))
        out.imu_linear_acceleration += rng.normal(0.0, C.ACCEL_NOISE, (n, 3))
    return out


def loaded_standing(model):
    motor, joint = standing_angles(model)
    joint = joint.copy()
    joint[[0, 3]] = LOADED_SHIN
    return motor, joint


# ------------------------------------------------------------------------- kinematics


def test_leg_kinematics_matches_mujoco_foot_sites_to_rounding_error(model, kinematics):
    rng = np.random.default_rng(0)
    data = mujoco.MjData(model)
    motor_adr = [model.jnt_qposadr[model.joint(n).id] for n in C.MOTOR_NAMES]
    joint_adr = [model.jnt_qposadr[model.joint(n).id] for n in C.PASSIVE_JOINT_NAMES]
    for _ in range(20):
        data.qpos[:] = STANDING_QPOS
        data.qpos[3:7] = rng.normal(size=4)
        data.qpos[3:7] /= np.linalg.norm(data.qpos[3:7])
        data.qpos[motor_adr] += rng.uniform(-0.4, 0.4, 10)
        data.qpos[joint_adr] += rng.uniform(-0.3, 0.3, 6)
        mujoco.mj_kinematics(model, data)
        points = kinematics.foot_points(data.qpos[motor_adr][None], data.qpos[joint_adr][None])[0]
        R = data.xmat[model.body("pelvis").id].reshape(3, 3)
        for s, side in enumerate(C.SIDES):
            site = data.site(f"{side}_foot").xpos
            np.testing.assert_allclose(data.xpos[1] + R @ points[s, 0], site, atol=1e-9)
            # Heel and toe: the ends of the sole capsule's axis.
            geom = model.geom(model.body_geomadr[model.body(f"{side}_foot").id])
            axis = data.geom_xmat[geom.id].reshape(3, 3)[:, 2] * geom.size[1]
            ends = sorted([site - axis, site + axis], key=lambda e: (R.T @ (e - site))[0])
            np.testing.assert_allclose(data.xpos[1] + R @ points[s, 1], ends[0], atol=1e-9)
            np.testing.assert_allclose(data.xpos[1] + R @ points[s, 2], ends[1], atol=1e-9)


def test_quaternion_round_trip_in_every_orientation():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(2000, 4))
    q[:4] = [[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0.0, 0.6, -0.8, 0.0], [1.0, 0, 0, 0]]
    R = quat_to_matrix(q)
    np.testing.assert_allclose(quat_to_matrix(matrix_to_quat(R)), R, atol=1e-12)


# ------------------------------------------------------------------------- stationary robot


def run_stationary(model, updates: int, n: int = 1, seed: int = 0, config=None,
                   quat=(1.0, 0.0, 0.0, 0.0)):
    motor, joint = loaded_standing(model)
    R = quat_to_matrix(np.asarray(quat, dtype=float))
    est = CassieEstimator(n, DT, config)
    rng = np.random.default_rng(seed)
    first = None
    for k in range(updates):
        state = est.update(readings(motor, joint, n, quat=quat, accel=R.T @ [0, 0, 9.81], rng=rng))
        if k == 0:
            first = state
    return est, first, state


def test_a_stationary_robot_stays_put(model):
    # Slightly tilted and turned, with noisy gyro, accelerometer and encoders, for 1.5 s.
    quat = np.array([0.98, 0.01, -0.015, 0.17])
    quat /= np.linalg.norm(quat)
    est, first, last = run_stationary(model, 3000, quat=quat)
    assert last.foot_contact.all()
    np.testing.assert_allclose(last.pelvis_position, first.pelvis_position, atol=0.003)
    assert np.linalg.norm(last.pelvis_translational_velocity) < 0.01
    dq = np.abs((last.pelvis_orientation * quat).sum())
    assert 2 * np.degrees(np.arccos(min(dq, 1.0))) < 0.1
    # The lower sole rests on z = 0 (its centre one radius up); the terrain is level with the
    # feet in contact, here the mean of two.
    feet_z = last.foot_position[0, :, 2]
    assert feet_z.min() == pytest.approx(0.02, abs=0.003)
    assert last.terrain_height[0] == pytest.approx(feet_z.mean() - 0.02, abs=0.001)
    assert last.pelvis_height[0] == pytest.approx(
        last.pelvis_position[0, 2] - last.terrain_height[0], abs=1e-12)


def test_an_accelerometer_bias_is_learnt_not_integrated(model):
    motor, joint = loaded_standing(model)
    est = CassieEstimator(1, DT)
    rng = np.random.default_rng(2)
    bias = np.array([0.0, 0.0, 0.2])  # vertical: separable from a tilt
    for _ in range(4000):
        state = est.update(readings(motor, joint, accel=np.array([0, 0, 9.81]) + bias, rng=rng))
    assert state.accel_bias[0, 2] == pytest.approx(0.2, abs=0.05)
    assert abs(state.pelvis_translational_velocity[0, 2]) < 0.01


# ------------------------------------------------------------------------- moving robot


def leg_ik(kinematics, motor, joint, targets, iterations=3):
    """Hip roll, hip pitch, knee and foot motors of both legs so that each sole centre sits at
    ``targets`` (2, 3) in the pelvis frame with the sole level. Newton, finite differences."""
    motor = motor.copy()
    cols = [[0, 2, 3, 4], [5, 7, 8, 9]]
    for _ in range(iterations):
        trial = np.repeat(motor[None], 5, axis=0)
        for j in range(4):
            for side in range(2):
                trial[j + 1, cols[side][j]] += 1e-6
        pts = kinematics.foot_points(trial, np.repeat(joint[None], 5, axis=0))
        res = np.concatenate([pts[:, :, 0] - targets,
                              (pts[:, :, 2, 2] - pts[:, :, 1, 2])[..., None]], axis=-1)
        for side in range(2):
            jac = ((res[1:, side] - res[0, side]) / 1e-6).T
            motor[cols[side]] -= np.linalg.solve(jac, res[0, side])
    return motor


@pytest.fixture(scope="module")
def walking_on_the_spot(model, kinematics):
    """The pelvis moving at a constant 0.3 m/s forward and 0.1 m/s sideways over two planted
    feet for 0.5 s: encoder angles from inverse kinematics, IMU at rest (constant velocity)."""
    velocity = np.array([0.3, 0.1, 0.0])
    motor, joint = loaded_standing(model)
    start = kinematics.foot_points(motor[None], joint[None])[0, :, 0]
    start[:, 0] += 0.07  # feet ahead of the pelvis at the start, behind at the end
    start[:, 1] += 0.02
    motor = leg_ik(kinematics, motor, joint, start, iterations=8)
    angles = []
    for k in range(1000):
        motor = leg_ik(kinematics, motor, joint, start - velocity * (k + 1) * DT)
        angles.append(motor.copy())
    reached = kinematics.foot_points(motor[None], joint[None])[0, :, 0]
    np.testing.assert_allclose(reached, start - velocity * 1000 * DT, atol=1e-9)
    return velocity, np.array(angles), joint


def test_a_known_constant_velocity_is_recovered_and_planted_feet_do_not_slide(
        walking_on_the_spot):
    velocity, angles, joint = walking_on_the_spot
    est = CassieEstimator(1, DT)  # starts believing the robot is at rest
    rng = np.random.default_rng(3)
    feet, pelvis = [], []
    for k, motor in enumerate(angles):
        state = est.update(readings(motor, joint, rng=rng))
        feet.append(state.foot_position[0])
        pelvis.append(state.pelvis_position[0])
        if k == 400:
            # 0.2 s in, the velocity has been found from leg kinematics alone: the IMU feels
            # nothing at constant velocity.
            np.testing.assert_allclose(state.pelvis_translational_velocity[0], velocity,
                                       atol=0.02)
    np.testing.assert_allclose(state.pelvis_translational_velocity[0], velocity, atol=0.01)
    assert state.foot_contact.all()
    feet, pelvis = np.array(feet), np.array(pelvis)
    # The estimated contact points move while the velocity is being found, then stay put,
    # and the pelvis covers the true distance.
    assert np.abs(feet[400:] - feet[400]).max() < 0.002
    np.testing.assert_allclose(pelvis[-1] - pelvis[400], velocity * 599 * DT, atol=0.003)


def test_tracks_the_simulated_robot_settling_onto_its_springs():
    # The faithful simulator with noise and quantised encoders: the robot drops onto its
    # springs from the standing keyframe and sinks under the default PD's hold, its feet
    # rolling onto their heels.
    sim = CassieSim(SimConfig(sensor_noise=True, actuator="faithful"), num_sims=1)
    sim.set_pd(sim.motor_state()[0])
    est = CassieEstimator(1, DT)
    errors = []
    for _ in range(600):
        sim.step(1)
        state = est.update(sim.sensors())
        pos, quat = sim.pelvis_pose()
        errors.append(np.concatenate([state.pelvis_translational_velocity[0]
                                      - sim.pelvis_twist()[0][0],
                                      [state.pelvis_height[0] - pos[0, 2]],
                                      [abs((state.pelvis_orientation[0] * quat[0]).sum())]]))
    errors = np.array(errors)
    assert np.sqrt(np.mean(errors[:, :3] ** 2)) < 0.02  # m/s
    assert np.abs(errors[:, 3]).max() < 0.01  # m
    assert np.degrees(2 * np.arccos(np.minimum(errors[:, 4], 1.0))).max() < 0.5
    assert state.foot_contact.all()


def test_a_fall_does_not_lift_the_terrain_under_the_robot():
    # Damping after 0.3 s: Cassie collapses onto its pelvis and its legs whip up, the shin
    # springs ringing (contact flagged while the feet fly). Terrain comes only from feet that
    # held still, so it stays at the floor and so does the height above it.
    sim = CassieSim(SimConfig(sensor_noise=True, actuator="faithful"), num_sims=1)
    stand = sim.motor_state()[0]
    sim.set_pd(stand)
    est = CassieEstimator(1, DT)
    terrain, height_error = [], []
    for k in range(4000):
        if k == 600:
            sim.set_pd(stand, kp=np.zeros(C.NUM_MOTORS))
        sim.step(1)
        state = est.update(sim.sensors())
        terrain.append(state.terrain_height[0])
        height_error.append(state.pelvis_height[0] - sim.pelvis_pose()[0][0, 2])
    assert sim.pelvis_pose()[0][0, 2] < 0.3  # it did fall
    assert np.abs(terrain).max() < 0.01
    assert np.abs(height_error).max() < 0.02  # the goal (the pelvis lies on the floor)


def test_the_estimate_follows_feet_creeping_on_the_soft_ground():
    # Under the default PD hold Cassie slumps, and its loaded feet slide backwards in MuJoCo's
    # soft contact, well inside the friction cone. A rigid-contact estimate (the default)
    # carries the pelvis along with them; the creep model (mass x IMU acceleration as the feet's
    # horizontal force) follows them.
    sim = CassieSim(SimConfig(actuator="faithful"), num_sims=1)
    sim.set_pd(sim.motor_state()[0])
    feet_before = sim.foot_positions()[0, :, :2].copy()
    est = CassieEstimator(1, DT, EstimatorConfig(contact_creep=SIMULATED_CONTACT_CREEP))
    for k in range(1400):
        sim.step(1)
        state = est.update(sim.sensors())
        if k == 0:
            start_error = state.pelvis_position[0, :2] - sim.pelvis_pose()[0][0, :2]
    crept = np.linalg.norm(sim.foot_positions()[0, :, :2] - feet_before, axis=1)
    assert crept.min() > 0.005  # m: what a rigid-contact estimate would miss
    error = state.pelvis_position[0, :2] - sim.pelvis_pose()[0][0, :2] - start_error
    assert np.linalg.norm(error) < 0.002


# ------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("field,index,value", [
    ("imu_angular_velocity", 1, np.nan),
    ("imu_linear_acceleration", 2, np.inf),
    ("imu_linear_acceleration", 0, 5000.0),  # out of any accelerometer's range
    ("imu_angular_velocity", 0, 12.0),  # a one-sample jump the body cannot make
    ("joint_position", 1, 0.9),  # tarsus jumps by 0.9 rad for one sample
    ("motor_position", 3, np.nan),
    ("imu_orientation", 0, 3.0),  # not a unit quaternion
    ("motor_torque", 0, -np.inf),
])
def test_bad_values_are_rejected_without_touching_the_state(model, field, index, value):
    motor, joint = loaded_standing(model)
    est = CassieEstimator(2, DT)
    ref = CassieEstimator(2, DT)
    rng = np.random.default_rng(4)
    stream = [readings(motor, joint, 2, rng=rng) for _ in range(400)]
    for r in stream[:200]:
        est.update(r)
        ref.update(r)
    before = est.state()
    bad = dataclasses.replace(stream[200], **{field: getattr(stream[200], field).copy()})
    getattr(bad, field)[0, index] += value if np.isfinite(value) else 0.0
    if not np.isfinite(value):
        getattr(bad, field)[0, index] = value
    after = est.update(bad)
    ref.update(stream[200])
    assert after.rejected_updates.tolist() == [1, 0]
    for f in dataclasses.fields(after):
        if f.name not in ("rejected_updates", "consecutive_rejections"):
            np.testing.assert_array_equal(getattr(after, f.name)[0], getattr(before, f.name)[0],
                                          err_msg=f.name)
    # Robot 1 saw a good reading and was updated as usual.
    np.testing.assert_array_equal(after.pelvis_position[1], ref.state().pelvis_position[1])
    for r in stream[201:]:
        est.update(r)
        last = ref.update(r)
    final = est.state()
    # The skipped reading left no mark beyond one missed 0.5 ms step.
    assert np.all(np.isfinite(final.pelvis_position)) and np.all(np.isfinite(est.P))
    np.testing.assert_allclose(final.pelvis_position, last.pelvis_position, atol=1e-4)
    np.testing.assert_allclose(final.pelvis_translational_velocity,
                               last.pelvis_translational_velocity, atol=1e-3)
    assert final.rejected_updates.tolist() == [1, 0]


def test_a_lasting_step_change_is_accepted_after_one_sample(model):
    motor, joint = loaded_standing(model)
    est = CassieEstimator(1, DT)
    rng = np.random.default_rng(5)
    for _ in range(50):
        est.update(readings(motor, joint, rng=rng))
    for _ in range(5):
        state = est.update(readings(motor, joint, gyro=(0.0, 0.0, 11.0), rng=rng))
    assert state.rejected_updates[0] == 1
    assert state.pelvis_rotational_velocity[0, 2] == pytest.approx(11.0, abs=0.01)


# ------------------------------------------------------------------------- batching


def test_batched_is_bit_identical_to_single_robots(model, walking_on_the_spot):
    _, angles, joint = walking_on_the_spot
    motor_stand, joint_stand = loaded_standing(model)
    n = 3
    batch = CassieEstimator(n, DT)
    singles = [CassieEstimator(1, DT) for _ in range(n)]
    rng = np.random.default_rng(6)
    for k in range(300):
        # Robot 0 walks on the spot, robot 1 stands, robot 2 lifts and plants its feet.
        lifted = joint_stand.copy()
        lifted[[0, 3]] = LOADED_SHIN if k % 50 < 25 else 0.0
        motors = np.stack([angles[k], motor_stand, motor_stand])
        joints = np.stack([joint, joint_stand, lifted])
        r = readings(motors, joints, n, rng=rng)
        if k == 150:
            r.imu_angular_velocity[1, 0] = np.nan  # one robot rejects, the others go on
        if k == 200:
            batch.reset([2])
            singles[2].reset()
        ids = [0, 2] if k % 7 == 3 else None  # sometimes a subset is updated
        if ids is None:
            batch.update(r)
            for i in range(n):
                singles[i].update(r.select(slice(i, i + 1)))
        else:
            batch.update(r.select(ids), ids=ids)
            for i in ids:
                singles[i].update(r.select(slice(i, i + 1)))
    state = batch.state()
    for i, single in enumerate(singles):
        one = single.state()
        for f in dataclasses.fields(state):
            np.testing.assert_array_equal(getattr(state, f.name)[i], getattr(one, f.name)[0],
                                          err_msg=f"robot {i}: {f.name}")
        np.testing.assert_array_equal(batch.P[i], single.P[0])


def test_readings_waiting_to_be_propagated_give_the_one_by_one_result_bit_for_bit(
        model, walking_on_the_spot):
    """Updates of every robot wait and are propagated together (at a correction or a read);
    naming the robots (``ids``) propagates each reading at once. Both must agree exactly,
    through corrections, reads at odd times and a rejected reading."""
    _, angles, joint = walking_on_the_spot
    waiting, one_by_one = CassieEstimator(1, DT), CassieEstimator(1, DT)
    rng = np.random.default_rng(8)
    for k in range(300):
        r = readings(angles[k], joint, gyro=(0.3, -0.2, 0.5), accel=(0.4, -0.1, 9.9), rng=rng)
        if k == 120:
            r.imu_linear_acceleration[0, 0] = np.nan
        waiting.update(r, return_state=k % 37 == 0)
        one_by_one.update(r, ids=[0], return_state=False)
    assert waiting.state().rejected_updates[0] == 1
    a, b = waiting.state(), one_by_one.state()
    for f in dataclasses.fields(a):
        np.testing.assert_array_equal(getattr(a, f.name), getattr(b, f.name), err_msg=f.name)
    np.testing.assert_array_equal(waiting.P, one_by_one.P)


# ------------------------------------------------------------------------- API


def test_reset_takes_a_given_pose_and_observation_46_has_the_original_layout(model):
    motor, joint = loaded_standing(model)
    est = CassieEstimator(2, DT)
    quat = np.array([np.cos(0.5), 0.0, 0.0, np.sin(0.5)])  # yawed by 1 rad
    est.reset([1], position=[1.0, 2.0, 1.0], orientation=quat)
    state = est.update(readings(motor, joint, 2, quat=(1.0, 0.0, 0.0, 0.0)))
    np.testing.assert_allclose(state.pelvis_position[1], [1.0, 2.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(state.pelvis_orientation[1], quat, atol=1e-12)
    np.testing.assert_allclose(state.pelvis_position[0, :2], [0.0, 0.0], atol=1e-12)
    obs = observation_46(state)
    assert obs.shape == (2, 46)
    assert sum(size for _, size in OBSERVATION_46_LAYOUT) == 46
    np.testing.assert_array_equal(obs[:, 0], state.pelvis_height)
    np.testing.assert_array_equal(obs[:, 1:5], state.pelvis_orientation)
    np.testing.assert_array_equal(obs[:, 5:15], state.motor_position)
    np.testing.assert_array_equal(obs[:, 15:18], state.pelvis_translational_velocity)
    np.testing.assert_array_equal(obs[:, 18:21], state.pelvis_rotational_velocity)
    np.testing.assert_array_equal(obs[:, 21:31], state.motor_velocity)
    np.testing.assert_array_equal(obs[:, 31:34], state.pelvis_translational_acceleration)
    np.testing.assert_array_equal(obs[:, 34:40], state.joint_position)
    np.testing.assert_array_equal(obs[:, 40:46], state.joint_velocity)


def test_config_rejects_inconsistent_thresholds():
    with pytest.raises(ValueError):
        EstimatorConfig(contact_on=-0.001, contact_off=-0.01)
    with pytest.raises(ValueError):
        EstimatorConfig(kinematics_std=0.0)
    with pytest.raises(ValueError, match="contact_creep"):
        EstimatorConfig(contact_creep=-1e-4)
