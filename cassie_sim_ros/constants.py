"""Cassie figures in one place: names, order, gains and limits of the robot and its simulator.

Per-motor arrays follow the robot's motor order: left hip roll, hip yaw, hip pitch, knee, foot,
then the same on the right. Angles are joint-side radians, torques joint-side N·m.
"""

from __future__ import annotations

import numpy as np

LEG_MOTORS = ("hip_roll", "hip_yaw", "hip_pitch", "knee", "foot")
LEG_PASSIVE = ("shin", "tarsus", "foot_crank")
SIDES = ("left", "right")

MOTOR_NAMES = tuple(f"{side}_{m}" for side in SIDES for m in LEG_MOTORS)
PASSIVE_JOINT_NAMES = tuple(f"{side}_{j}" for side in SIDES for j in LEG_PASSIVE)
NUM_MOTORS = len(MOTOR_NAMES)

# Per leg, repeated for both legs.
GEAR_RATIO = np.tile([25.0, 25.0, 16.0, 16.0, 50.0], 2)
TORQUE_LIMIT = np.tile([140.63, 140.63, 216.16, 216.16, 45.14], 2)
MAX_MOTOR_RPM = np.tile([2900.0, 2900.0, 1300.0, 1300.0, 5500.0], 2)
# Joint-side speed at which the speed-dependent torque limit reaches zero.
MAX_JOINT_SPEED = MAX_MOTOR_RPM * 2.0 * np.pi / 60.0 / GEAR_RATIO
# Encoder resolution (bits per motor revolution) of the robot's motor encoders.
ENCODER_BITS = np.tile([13, 13, 13, 13, 18], 2)

# PD gains of deep-rl / apex / RSS-2020 (joint side).
DEFAULT_KP = np.tile([100.0, 100.0, 88.0, 96.0, 50.0], 2)
DEFAULT_KD = np.tile([10.0, 10.0, 8.0, 9.6, 5.0], 2)

# Added to no-delta policy actions to give the motor position target. The original used the left
# leg's values for both legs; the right hip roll is mirrored here (as in the standing keyframe) so
# that a mirrored action gives exactly the mirrored target.
NEUTRAL_MOTOR_OFFSET = np.array([0.0045, 0.0, 0.4973, -1.1997, -1.5968,
                                 -0.0045, 0.0, 0.4973, -1.1997, -1.5968])

# Soft joint limits of the robot simulator: a stiff spring pushes back past these onsets (rad).
# The right hip roll range mirrors the left one.
SOFT_LIMIT_LOW = np.array([-0.112, -0.234, -0.723, -2.573, -np.inf,
                           -0.199, -0.234, -0.723, -2.573, -np.inf])
SOFT_LIMIT_HIGH = np.array([0.199, 0.234, 1.246, -0.883, np.inf,
                            0.112, 0.234, 1.246, -0.883, np.inf])
# Stiffness and damping of the soft limit: chosen so its torque reaches 0.9 of the hip-roll
# limit about 0.05 rad past the onset, as the robot simulator's does.
SOFT_LIMIT_STIFFNESS = 0.9 * 140.63 / 0.05
SOFT_LIMIT_DAMPING = 50.0

# Passive springs (N·m/rad) per variant: knee-shin spring, heel spring.
SPRING_STIFFNESS = {
    "regular": (1500.0, 1250.0),
    "stiff": (18000.0, 15000.0),
    "soft": (750.0, 625.0),
}
MODEL_VARIANTS = tuple(SPRING_STIFFNESS)

# Sensor noise (standard deviations) of the robot's sensors.
GYRO_NOISE = 5e-4
ACCEL_NOISE = 1e-2
JOINT_ENCODER_NOISE = 2e-4

# Robot simulator control pipeline, in physics steps of 0.5 ms.
ENCODER_DELAY_S = 0.001
TORQUE_DELAY_S = 0.003
VELOCITY_FILTER_TAPS = 9

TOTAL_MASS_KG = 33.3
STANDING_PELVIS_HEIGHT = 1.0059301
