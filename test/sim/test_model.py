"""The project's Cassie model against the robot's published figures."""

import mujoco
import numpy as np
import pytest

from cassie_sim_ros import constants as C
from cassie_sim_ros.model import STANDING_QPOS, cassie_xml, load_model


@pytest.fixture(scope="module")
def standing():
    model = load_model()
    data = mujoco.MjData(model)
    data.qpos[:] = STANDING_QPOS
    mujoco.mj_forward(model, data)
    return model, data


def test_total_mass_is_cassies(standing):
    model, _ = standing
    assert model.body_mass.sum() == pytest.approx(C.TOTAL_MASS_KG, abs=0.05)


def test_standing_pose_has_pelvis_at_robot_height_and_feet_on_the_ground(standing):
    model, data = standing
    assert data.qpos[2] == pytest.approx(1.006, abs=0.002)
    for side in C.SIDES:
        sole = data.site(f"{side}_foot").xpos
        # The foot capsule (radius 2 cm) rests on the floor, under the hip, beside the midline.
        assert sole[2] == pytest.approx(0.02, abs=0.003)
        assert abs(sole[0]) < 0.05
        assert sole[1] == pytest.approx(0.135 if side == "left" else -0.135, abs=0.01)


def test_closed_chains_are_closed_in_the_standing_pose(standing):
    model, data = standing
    assert model.neq == 4
    # connect constraints: anchor points coincide to about a millimetre
    assert np.abs(data.efc_pos[data.efc_type == mujoco.mjtConstraint.mjCNSTR_EQUALITY]).max() < 2e-3


def test_legs_are_mirror_images(standing):
    model, data = standing
    for body in ("hip_pitch", "knee", "shin", "tarsus", "foot"):
        left, right = data.body(f"left_{body}"), data.body(f"right_{body}")
        np.testing.assert_allclose(left.xpos * [1, -1, 1], right.xpos, atol=1e-9)
        np.testing.assert_allclose(left.xipos * [1, -1, 1], right.xipos, atol=5e-4)
        assert model.body(f"left_{body}").mass == model.body(f"right_{body}").mass


def test_motors_in_robot_order_with_torque_limits():
    model = load_model()
    assert tuple(model.actuator(i).name for i in range(model.nu)) == C.MOTOR_NAMES
    for i, name in enumerate(C.MOTOR_NAMES):
        assert model.actuator(i).trnid[0] == model.joint(name).id
        np.testing.assert_allclose(model.actuator(i).forcerange,
                                   [-C.TORQUE_LIMIT[i], C.TORQUE_LIMIT[i]])
    np.testing.assert_allclose(C.TORQUE_LIMIT[:5], [140.63, 140.63, 216.16, 216.16, 45.14])


def test_joint_ranges_and_the_mirrored_hip_roll():
    model = load_model()
    np.testing.assert_allclose(np.degrees(model.joint("left_hip_roll").range), [-15, 22.5])
    np.testing.assert_allclose(np.degrees(model.joint("right_hip_roll").range), [-22.5, 15])
    np.testing.assert_allclose(np.degrees(model.joint("left_knee").range), [-164, -37])


@pytest.mark.parametrize("variant,shin,heel", [("regular", 1500, 1250), ("stiff", 18000, 15000),
                                               ("soft", 750, 625)])
def test_each_variant_loads_with_its_springs(variant, shin, heel):
    model = load_model(variant)
    for side in C.SIDES:
        assert model.joint(f"{side}_shin").stiffness[0] == shin
        assert model.joint(f"{side}_heel_spring").stiffness[0] == heel


def test_sensors_imu_site_and_ground():
    model = load_model()
    np.testing.assert_allclose(model.site("imu").pos, [0.03155, 0, -0.07996])
    names = {model.sensor(i).name for i in range(model.nsensor)}
    for expected in ("imu_orientation", "imu_gyro", "imu_accel", "imu_magnetometer",
                     *(f"{m}_pos" for m in C.MOTOR_NAMES),
                     *(f"{j}_pos" for j in C.PASSIVE_JOINT_NAMES)):
        assert expected in names
    assert model.geom("floor").type == mujoco.mjtGeom.mjGEOM_PLANE


def test_unknown_variant_and_bad_timestep_are_named():
    with pytest.raises(ValueError, match="unknown model variant 'bouncy'.*regular, stiff, soft"):
        cassie_xml("bouncy")
    with pytest.raises(ValueError, match="timestep"):
        cassie_xml("regular", timestep=-1.0)
