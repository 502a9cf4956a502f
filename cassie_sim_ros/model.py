"""The project's Cassie MJCF, built from the robot's published figures.

One leg is described once (the left); the right leg is its mirror image through the pelvis's
sagittal plane. Mirroring negates, in each body frame, the axis that points sideways: local y in
the hip roll and yaw frames, local z from the hip pitch down (the leg frames are rotated so that
their joint axes are local z). Spring stiffness is set per variant.

Motors are ``general`` actuators in joint units (gear 1): ``CassieSim`` writes their gain and bias
so that MuJoCo either applies a torque computed outside (``faithful`` actuator pipeline) or runs
the PD itself (``fast``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mujoco
import numpy as np

from cassie_sim_ros import constants as C


@dataclass(frozen=True)
class Joint:
    name: str
    kind: str = "hinge"
    range_deg: tuple[float, float] | None = None
    ref_deg: float | None = None
    damping: float = 0.0
    armature: float = 0.0
    spring: str | None = None  # "shin" or "heel": stiffness comes from the variant
    mirror_range: bool = False  # the right joint's range is the negated, swapped left range


@dataclass(frozen=True)
class Geom:
    radius: float
    fromto: tuple[float, ...]
    collide: bool = True


@dataclass(frozen=True)
class Body:
    name: str
    pos: tuple[float, float, float]
    mass: float
    com: tuple[float, float, float]
    # ixx iyy izz ixy ixz iyz
    inertia: tuple[float, float, float, float, float, float]
    lateral: str  # "y" or "z": the local axis that points sideways
    xyaxes: tuple[float, ...] | None = None
    joint: Joint | None = None
    geoms: tuple[Geom, ...] = ()
    sites: tuple[tuple[str, tuple[float, float, float]], ...] = ()
    children: tuple["Body", ...] = field(default_factory=tuple)


_FOOT_SOLE_CENTER = (0.0084625, 0.041199, 0.0)  # middle of the foot's contact capsule

LEFT_LEG = Body(
    "hip_roll", (0.021, 0.135, 0.0), 1.82, (-0.01793, 0.0001, -0.04428),
    (0.003431, 0.003793, 0.002135, -6.65e-07, -0.00084, 3.99e-06), "y",
    xyaxes=(0, 0, -1, 0, 1, 0),
    joint=Joint("hip_roll", range_deg=(-15.0, 22.5), damping=1.0, armature=0.038125,
                mirror_range=True),
    children=(Body(
        "hip_yaw", (0.0, 0.0, -0.07), 1.171, (0.0, -1e-05, -0.034277),
        (0.002443, 0.002803, 0.000842, -4e-08, 2.462e-07, -2.71e-08), "y",
        xyaxes=(0, 0, 1, 0, 1, 0),
        joint=Joint("hip_yaw", range_deg=(-22.5, 22.5), damping=1.0, armature=0.038125),
        children=(Body(
            "hip_pitch", (0.0, 0.0, -0.09), 5.52, (0.05946, 5e-05, -0.03581),
            (0.010898, 0.029714, 0.030257, -0.0002669, -5.721e-05, 9.17e-06), "z",
            xyaxes=(0, 0, -1, 1, 0, 0),
            joint=Joint("hip_pitch", range_deg=(-50.0, 80.0), damping=1.0, armature=0.09344),
            geoms=(Geom(0.08, (0, 0, -0.05, 0.12, 0, -0.05)),),
            children=(
                Body(
                    "achilles_rod", (0.0, 0.0, 0.045), 0.1567, (0.24719, 0.0, 0.0),
                    (3.754e-06, 0.004487, 0.004488, -3.74e-08, -1.61e-08, 0.0), "z",
                    xyaxes=(0.7922, -0.60599, -0.072096, 0.60349, 0.79547, -0.054922),
                    joint=Joint("achilles_rod", kind="ball", damping=0.01),
                ),
                Body(
                    "knee", (0.12, 0.0, 0.0045), 0.7578, (0.023, 0.03207, -0.002181),
                    (0.001376, 0.0010335, 0.0021637, -0.00039744, -4.085e-05, -5.374e-05), "z",
                    xyaxes=(0.70711, -0.70711, 0, 0.70711, 0.70711, 0),
                    joint=Joint("knee", range_deg=(-164.0, -37.0), ref_deg=-45.0, damping=1.0,
                                armature=0.09344),
                    children=(
                        Body("knee_spring", (0.06068, 0.08241, 0.0), 0.186, (0.0836, 0.0034, 0.0),
                             (5.215e-05, 0.00041205, 0.0003669, 6.87e-06, 0.0, 0.0), "z"),
                        Body(
                            "shin", (0.06068, 0.04741, 0.0), 0.577, (0.18338, 0.001169, 0.0002123),
                            (0.00035939, 0.014728, 0.014707, -0.00020981, 2.266e-05, -1.2e-07), "z",
                            joint=Joint("shin", range_deg=(-20.0, 20.0), damping=0.1,
                                        spring="shin"),
                            geoms=(
                                Geom(0.04, (-0.06, 0, 0, 0.17, -0.01, 0)),
                                Geom(0.027, (0.17, -0.023, 0, 0.38, 0, 0)),
                                Geom(0.025, (-0.045, 0.045, 0, 0.43476, 0, 0)),
                            ),
                            children=(Body(
                                "tarsus", (0.43476, 0.02, 0.0), 0.782,
                                (0.11046, -0.03058, -0.00131),
                                (0.00039238, 0.013595, 0.013674, 0.00023651, -4.987e-05, -4.82e-06),
                                "z", xyaxes=(0.52992, 0.84805, 0, -0.84805, 0.52992, 0),
                                joint=Joint("tarsus", range_deg=(50.0, 170.0), ref_deg=58.0,
                                            damping=0.1),
                                geoms=(
                                    Geom(0.028, (0.01, -0.03059, 0.00092, 0.23, -0.04, 0)),
                                    Geom(0.033, (0.04, -0.07, 0.00092, 0.208, -0.04, 0)),
                                    Geom(0.02, (0.208, -0.04, 0, 0.43, -0.04, 0)),
                                ),
                                children=(
                                    Body(
                                        "heel_spring", (-0.01269, -0.03059, 0.00092), 0.126,
                                        (0.081, 0.0022, 0.0),
                                        (2.959e-05, 0.00022231, 0.0002007, 7.15e-06, -6e-07, 1e-07),
                                        "z",
                                        xyaxes=(-0.91211, 0.40829, 0.036948,
                                                -0.40992, -0.90952, -0.068841),
                                        joint=Joint("heel_spring", spring="heel"),
                                    ),
                                    Body(
                                        "foot_crank", (0.058, -0.034, 0.02275), 0.1261,
                                        (0.00493, 2e-05, -0.00215),
                                        (2.6941e-05, 4.9621e-05, 6.3362e-05, -2.1e-09,
                                         -3.9623e-06, -1.09e-08), "z",
                                        joint=Joint("foot_crank", range_deg=(-140.0, -30.0),
                                                    damping=1.0),
                                        children=(Body(
                                            "plantar_rod", (0.055, 0.0, -0.00791), 0.1186,
                                            (0.17792, 0.0, 0.0),
                                            (2.779e-06, 0.001774, 0.001775, -2.34e-08, -8.1e-09,
                                             0.0),
                                            "z", joint=Joint("plantar_rod"),
                                        ),),
                                    ),
                                    Body(
                                        "foot", (0.408, -0.04, 0.0), 0.1498,
                                        (0.00474, 0.02748, -0.00014),
                                        (0.00017388, 0.00016793, 0.00033261, 0.00011814,
                                         1.36e-06, -4e-07), "z",
                                        joint=Joint("foot", range_deg=(-140.0, -30.0), damping=1.0,
                                                    armature=0.01225),
                                        geoms=(Geom(0.02, (-0.052821, 0.092622, 0,
                                                           0.069746, -0.010224, 0)),),
                                        sites=(("foot", _FOOT_SOLE_CENTER),),
                                    ),
                                ),
                            ),),
                        ),
                    ),
                ),
            ),
        ),),
    ),),
)

PELVIS_MASS = 10.33
PELVIS_COM = (0.05066, 0.000346, 0.02841)
PELVIS_INERTIA = (0.085821, 0.049222, 0.08626, 1.276e-05, -0.00016022, -0.000414)
IMU_POS = (0.03155, 0.0, -0.07996)

# Closed chains: (rod body, body it closes on, anchor in the rod's frame).
CLOSED_CHAINS = (("plantar_rod", "foot", (0.35012, 0.0, 0.0)),
                 ("achilles_rod", "heel_spring", (0.5012, 0.0, 0.0)))

# Per leg, the coordinates a left/right mirror negates: hip roll and hip yaw turn the other way;
# the achilles ball joint lives in a frame whose sideways axis is z, so its rotation axis keeps z
# and flips x and y. Every other leg joint turns about the sideways axis and is unchanged.
_LEG_QPOS_SIGN = np.array([-1, -1, 1, 1, -1, -1, 1, 1, 1, 1, 1, 1, 1, 1], dtype=float)
_LEG_QVEL_SIGN = np.array([-1, -1, 1, -1, -1, 1, 1, 1, 1, 1, 1, 1, 1], dtype=float)

# Standing pose (the robot's "home" keyframe) of the left leg in qpos order: hip roll, hip yaw,
# hip pitch, achilles quaternion (4), knee, shin, tarsus, heel spring, foot crank, plantar rod,
# foot. The right leg is its exact mirror image.
_LEFT_STAND = np.array([0.00449956, 0.0, 0.497301, 0.97861, -0.0164104, 0.0177766, -0.204298,
                        -1.1997, 0.0, 1.42671, -2.25907e-06, -1.52439, 1.50645, -1.59681])
STANDING_QPOS = np.concatenate([[0.0, 0.0, C.STANDING_PELVIS_HEIGHT, 1.0, 0.0, 0.0, 0.0],
                                _LEFT_STAND, _LEFT_STAND * _LEG_QPOS_SIGN])
# Where the motors sit in qpos and qvel (the original model's layout too; tests check it).
MOTOR_QPOS_INDEX = [7, 8, 9, 14, 20, 21, 22, 23, 28, 34]
MOTOR_QVEL_INDEX = [6, 7, 8, 12, 18, 19, 20, 21, 25, 31]
STANDING_MOTOR_POSITION = STANDING_QPOS[MOTOR_QPOS_INDEX]


def _joint_range(body: Body, name: str, side: str) -> tuple[float, float] | None:
    """Range (rad) of the joint ``name`` below ``body`` on ``side``, as the MJCF writes it."""
    j = body.joint
    if j is not None and j.name == name and j.range_deg is not None:
        lo, hi = j.range_deg
        if side == "right" and j.mirror_range:
            lo, hi = -hi, -lo
        return np.radians(lo), np.radians(hi)
    for child in body.children:
        found = _joint_range(child, name, side)
        if found is not None:
            return found
    return None


MOTOR_RANGE = np.array([_joint_range(LEFT_LEG, motor, side)
                        for side in C.SIDES for motor in C.LEG_MOTORS])
"""(10, 2) joint range (rad) of each motor, motor order: the model's ``jnt_range``."""


def _fmt(values) -> str:
    return " ".join(f"{float(v):.9g}" for v in values)


def _mirror(body: Body, parent_lateral: str) -> dict[str, tuple]:
    """Right-leg figures of a left-leg body.

    Its position and frame axes are in the parent's frame, so they flip the parent's sideways
    axis; its centre of mass and inertia are in its own frame and flip its own. The frame is
    R' = S_parent R S_own, so an own sideways y also reverses the frame's y axis.
    """
    pax = 1 if parent_lateral == "y" else 2
    pos = list(body.pos)
    pos[pax] = -pos[pax]
    ax = 1 if body.lateral == "y" else 2
    com = list(body.com)
    com[ax] = -com[ax]
    ixx, iyy, izz, ixy, ixz, iyz = body.inertia
    if ax == 1:
        inertia = (ixx, iyy, izz, -ixy, ixz, -iyz)
    else:
        inertia = (ixx, iyy, izz, ixy, -ixz, -iyz)
    xyaxes = None
    if body.xyaxes is not None:
        xyaxes = list(body.xyaxes)
        xyaxes[pax], xyaxes[pax + 3] = -xyaxes[pax], -xyaxes[pax + 3]
        if ax == 1:
            xyaxes[3:] = [-v for v in xyaxes[3:]]
    return {"pos": tuple(pos), "com": tuple(com), "inertia": inertia, "xyaxes": xyaxes}


def _body_xml(body: Body, side: str, springs: tuple[float, float], out: list[str], depth: int,
              parent_lateral: str = "y"):
    pad = "  " * depth
    figures = ({"pos": body.pos, "com": body.com, "inertia": body.inertia, "xyaxes": body.xyaxes}
               if side == "left" else _mirror(body, parent_lateral))
    name = f"{side}_{body.name}"
    frame = f' xyaxes="{_fmt(figures["xyaxes"])}"' if figures["xyaxes"] is not None else ""
    out.append(f'{pad}<body name="{name}" pos="{_fmt(figures["pos"])}"{frame}>')
    out.append(f'{pad}  <inertial pos="{_fmt(figures["com"])}" mass="{body.mass}" '
               f'fullinertia="{_fmt(figures["inertia"])}"/>')
    j = body.joint
    if j is not None:
        attrs = [f'name="{name}"', f'type="{j.kind}"']
        if j.range_deg is not None:
            lo, hi = j.range_deg
            if side == "right" and j.mirror_range:
                lo, hi = -hi, -lo
            attrs.append(f'range="{lo:g} {hi:g}"')
        if j.ref_deg is not None:
            attrs.append(f'ref="{j.ref_deg:g}"')
        if j.damping:
            attrs.append(f'damping="{j.damping:g}"')
        if j.armature:
            attrs.append(f'armature="{j.armature:g}"')
        if j.spring is not None:
            attrs.append(f'stiffness="{springs[0] if j.spring == "shin" else springs[1]:g}"')
        out.append(f'{pad}  <joint {" ".join(attrs)}/>')
    for geom in body.geoms:
        fromto = list(geom.fromto)
        if side == "right":
            ax = 1 if body.lateral == "y" else 2
            fromto[ax], fromto[ax + 3] = -fromto[ax], -fromto[ax + 3]
        out.append(f'{pad}  <geom class="collision-{side}" size="{geom.radius:g}" '
                   f'fromto="{_fmt(fromto)}"/>')
    for site_name, site_pos in body.sites:
        p = list(site_pos)
        if side == "right":
            ax = 1 if body.lateral == "y" else 2
            p[ax] = -p[ax]
        out.append(f'{pad}  <site name="{side}_{site_name}" pos="{_fmt(p)}" size="0.01"/>')
    for child in body.children:
        _body_xml(child, side, springs, out, depth + 1, body.lateral)
    out.append(f"{pad}</body>")


def cassie_xml(variant: str = "regular", timestep: float = 0.0005) -> str:
    """The MJCF text of Cassie with the springs of ``variant`` and the given physics timestep."""
    if variant not in C.SPRING_STIFFNESS:
        raise ValueError(f"unknown model variant {variant!r}; choose one of "
                         f"{', '.join(C.MODEL_VARIANTS)}")
    if not (np.isfinite(timestep) and 0.0 < timestep <= 0.005):
        raise ValueError(f"physics timestep {timestep!r} s is outside (0, 0.005]")
    springs = C.SPRING_STIFFNESS[variant]
    legs: list[str] = []
    for side in C.SIDES:
        _body_xml(LEFT_LEG, side, springs, legs, 3)
    actuators = []
    for motor, limit in zip(C.MOTOR_NAMES, C.TORQUE_LIMIT):
        actuators.append(f'    <general name="{motor}" joint="{motor}" forcelimited="true" '
                         f'forcerange="{-limit:g} {limit:g}" ctrllimited="false" '
                         f'biastype="affine"/>')
    sensors = []
    for motor in C.MOTOR_NAMES:
        sensors.append(f'    <jointpos name="{motor}_pos" joint="{motor}"/>')
    for joint in C.PASSIVE_JOINT_NAMES:
        sensors.append(f'    <jointpos name="{joint}_pos" joint="{joint}"/>')
    for motor in C.MOTOR_NAMES:
        sensors.append(f'    <jointvel name="{motor}_vel" joint="{motor}"/>')
    for joint in C.PASSIVE_JOINT_NAMES:
        sensors.append(f'    <jointvel name="{joint}_vel" joint="{joint}"/>')
    equalities = [f'    <connect body1="{side}_{a}" body2="{side}_{b}" anchor="{_fmt(anchor)}"/>'
                  for side in C.SIDES for a, b, anchor in CLOSED_CHAINS]
    return f"""<mujoco model="cassie_{variant}">
  <compiler angle="degree" eulerseq="zyx" autolimits="true"/>
  <option timestep="{timestep:g}" integrator="implicitfast"/>
  <size memory="2M"/>
  <visual><global offwidth="1280" offheight="720"/></visual>
  <default>
    <geom contype="0" conaffinity="0" condim="1" solref="0.005 1" rgba="0.55 0.55 0.6 1"/>
    <equality solref="0.005 1"/>
    <default class="collision-left"><geom type="capsule" contype="2" conaffinity="4"/></default>
    <default class="collision-right"><geom type="capsule" contype="4" conaffinity="2"/></default>
    <default class="collision-pelvis"><geom contype="1" conaffinity="0"/></default>
  </default>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.2 0.3 0.4" rgb2="0.1 0.2 0.3"
             width="512" height="512"/>
    <material name="grid" texture="grid" texrepeat="1 1" texuniform="true" reflectance="0.1"/>
  </asset>
  <worldbody>
    <light pos="0 0 4" dir="0 0 -1" directional="true"/>
    <geom name="floor" type="plane" size="0 0 0.125" material="grid" conaffinity="15" condim="3"/>
    <body name="pelvis" pos="0 0 {C.STANDING_PELVIS_HEIGHT}">
      <camera name="track" pos="0 -3 0.3" xyaxes="1 0 0 0 0.1 1" mode="trackcom"/>
      <inertial pos="{_fmt(PELVIS_COM)}" mass="{PELVIS_MASS}" fullinertia="{_fmt(PELVIS_INERTIA)}"/>
      <freejoint name="pelvis"/>
      <geom class="collision-pelvis" type="ellipsoid" size="0.15 0.12 0.13" pos="0.03 0 0.03"/>
      <geom class="collision-pelvis" type="capsule" size="0.095"
            fromto="-0.04 0.14 0.01 0.02 0.14 0.01"/>
      <geom class="collision-pelvis" type="capsule" size="0.095"
            fromto="-0.04 -0.14 0.01 0.02 -0.14 0.01"/>
      <site name="imu" pos="{_fmt(IMU_POS)}" size="0.01"/>
{chr(10).join(legs)}
    </body>
  </worldbody>
  <equality>
{chr(10).join(equalities)}
  </equality>
  <actuator>
{chr(10).join(actuators)}
  </actuator>
  <sensor>
{chr(10).join(sensors)}
    <framequat name="imu_orientation" objtype="site" objname="imu"/>
    <gyro name="imu_gyro" site="imu"/>
    <accelerometer name="imu_accel" site="imu"/>
    <magnetometer name="imu_magnetometer" site="imu"/>
    <contact name="left_foot_grf" subtree1="left_foot" geom2="floor" data="force"
             reduce="netforce" num="1"/>
    <contact name="right_foot_grf" subtree1="right_foot" geom2="floor" data="force"
             reduce="netforce" num="1"/>
  </sensor>
  <keyframe>
    <key name="standing" qpos="{_fmt(STANDING_QPOS)}"/>
  </keyframe>
</mujoco>
"""


def load_model(variant: str = "regular", timestep: float = 0.0005) -> mujoco.MjModel:
    """Compile Cassie: ``variant`` is one of ``regular``, ``stiff`` (12x springs), ``soft``."""
    return mujoco.MjModel.from_xml_string(cassie_xml(variant, timestep))



def mirror_qpos(qpos: np.ndarray) -> np.ndarray:
    """The generalised positions (..., 35) of the robot mirrored through the world's xz plane."""
    qpos = np.asarray(qpos, dtype=float)
    out = np.empty_like(qpos)
    out[..., 0:3] = qpos[..., 0:3] * [1, -1, 1]
    out[..., 3:7] = qpos[..., 3:7] * [1, -1, 1, -1]
    out[..., 7:21] = qpos[..., 21:35] * _LEG_QPOS_SIGN
    out[..., 21:35] = qpos[..., 7:21] * _LEG_QPOS_SIGN
    return out


def mirror_qvel(qvel: np.ndarray) -> np.ndarray:
    """The generalised velocities (..., 32) of the mirrored robot."""
    qvel = np.asarray(qvel, dtype=float)
    out = np.empty_like(qvel)
    out[..., 0:3] = qvel[..., 0:3] * [1, -1, 1]
    out[..., 3:6] = qvel[..., 3:6] * [-1, 1, -1]
    out[..., 6:19] = qvel[..., 19:32] * _LEG_QVEL_SIGN
    out[..., 19:32] = qvel[..., 6:19] * _LEG_QVEL_SIGN
    return out
