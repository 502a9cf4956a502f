"""The Cassie robot's UDP wire format: ``pd_in_t``, ``state_out_t``, ``cassie_user_in_t``.

Pure (numpy and the standard library). Facts from ../shared/cassie_facts.md §7, verified there
against the robot simulator's own pack functions:

- every value is a little-endian float32 in struct field order, without padding, although the
  C structs hold doubles; a ``bool`` is one byte; ``cassie_user_in_t``'s telemetry is int16;
- each datagram is a 2-byte header followed by the payload. Client → robot: [client sequence
  number, last robot sequence number seen]; robot → client: [robot sequence number, client
  sequence number being answered]. Both wrap at 256 (``seq_diff``).

Each message is a dataclass whose fields follow the C struct's field order (nested structs are
nested dataclasses, arrays are float64 numpy arrays of the C length). ``*_DTYPE`` is the matching
numpy structured dtype (offsets = the wire offsets, tested against §7). Pack and unpack work on
payloads; ``pack_packet``/``split_packet`` add and remove the header.

``cassie_out_t`` (raw sensors, torque mode) is not here: the bridge runs PD mode only.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

T = TypeVar("T")

HEADER = struct.Struct("<BB")
HEADER_SIZE = HEADER.size  # 2
SEQ_MODULO = 256

# ------------------------------------------------------------------------ field helpers


def _f32(n: int):
    """An array of ``n`` values, float32 on the wire."""
    return field(default_factory=lambda: np.zeros(n), metadata={"wire": ("<f4", n)})


def _scalar(fmt: str, default):
    return field(default=default, metadata={"wire": (fmt, 1)})


def _struct(cls):
    return field(default_factory=cls, metadata={"wire": cls})


def _i16(n: int):
    return field(default_factory=lambda: np.zeros(n, dtype=np.int16),
                 metadata={"wire": ("<i2", n)})


def _dtype(cls) -> np.dtype:
    """Packed (unaligned) little-endian structured dtype of a wire dataclass."""
    items = []
    for f in dataclasses.fields(cls):
        spec = f.metadata["wire"]
        if isinstance(spec, type):
            items.append((f.name, _dtype(spec)))
        elif spec[1] == 1 and not callable(f.default_factory):
            items.append((f.name, spec[0]))
        else:
            items.append((f.name, spec[0], (spec[1],)))
    return np.dtype(items)  # align=False: no padding, as on the wire


def _fill(record, obj):
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(f.metadata["wire"], type):
            _fill(record[f.name], value)
        else:
            record[f.name] = value


def _read(cls: type[T], record) -> T:
    kwargs = {}
    for f in dataclasses.fields(cls):
        spec = f.metadata["wire"]
        value = record[f.name]
        if isinstance(spec, type):
            kwargs[f.name] = _read(spec, value)
        elif spec[0] == "?":
            kwargs[f.name] = bool(value)
        elif spec[0] == "<i2":
            kwargs[f.name] = np.array(value, dtype=np.int16)
        elif spec[1] == 1 and not callable(f.default_factory):
            kwargs[f.name] = float(value)
        else:
            kwargs[f.name] = np.array(value, dtype=np.float64)
    return cls(**kwargs)


def _pack(obj, dtype: np.dtype) -> bytes:
    record = np.zeros((), dtype)
    _fill(record, obj)
    return record.tobytes()


def _unpack(cls: type[T], dtype: np.dtype, payload: bytes) -> T:
    if len(payload) != dtype.itemsize:
        raise ValueError(f"{cls.__name__} payload is {len(payload)} bytes, expected "
                         f"{dtype.itemsize}")
    return _read(cls, np.frombuffer(payload, dtype)[0])


def _leaves(dtype: np.dtype, prefix: str = "", base: int = 0):
    """(dotted name, byte offset, number of values) of every leaf field, in order."""
    for name, (sub, offset) in dtype.fields.items():
        if sub.names:
            yield from _leaves(sub, f"{prefix}{name}.", base + offset)
        else:
            yield f"{prefix}{name}", base + offset, int(np.prod(sub.shape))


def field_offsets(dtype: np.dtype) -> dict[str, int]:
    """Byte offset of every leaf field, by dotted name (``leftLeg.motorPd.pTarget``)."""
    return {name: offset for name, offset, _ in _leaves(dtype)}


# ------------------------------------------------------------------------ pd_in_t


@dataclass
class PdTaskIn:
    """``pd_task_in_t``: task-space PD (6 values each). The bridge sends zeros."""

    torque: np.ndarray = _f32(6)
    pTarget: np.ndarray = _f32(6)
    dTarget: np.ndarray = _f32(6)
    pGain: np.ndarray = _f32(6)
    dGain: np.ndarray = _f32(6)


@dataclass
class PdMotorIn:
    """``pd_motor_in_t``: per motor of a leg (hip roll, hip yaw, hip pitch, knee, foot):
    feed-forward torque (N·m), position target (rad), velocity target (rad/s), P and D gains.
    The robot applies ``torque + pGain·(pTarget − q) + dGain·(dTarget − q̇)`` at 2 kHz."""

    torque: np.ndarray = _f32(5)
    pTarget: np.ndarray = _f32(5)
    dTarget: np.ndarray = _f32(5)
    pGain: np.ndarray = _f32(5)
    dGain: np.ndarray = _f32(5)


@dataclass
class PdLegIn:
    taskPd: PdTaskIn = _struct(PdTaskIn)
    motorPd: PdMotorIn = _struct(PdMotorIn)


@dataclass
class PdIn:
    """``pd_in_t``: 476 bytes, 119 float32."""

    leftLeg: PdLegIn = _struct(PdLegIn)
    rightLeg: PdLegIn = _struct(PdLegIn)
    telemetry: np.ndarray = _f32(9)

    @classmethod
    def from_motors(cls, torque, p_target, d_target, p_gain, d_gain) -> PdIn:
        """Motor-PD input from (10,) arrays in the project's motor order (left leg, then right);
        task PD and telemetry zero."""
        out = cls()
        for leg, half in ((out.leftLeg, slice(0, 5)), (out.rightLeg, slice(5, 10))):
            m = leg.motorPd
            m.torque, m.pTarget, m.dTarget, m.pGain, m.dGain = (
                np.array(np.asarray(v, dtype=np.float64)[half]) for v in
                (torque, p_target, d_target, p_gain, d_gain))
        return out

    def motors(self) -> dict[str, np.ndarray]:
        """The motor PD fields as (10,) arrays in motor order: torque, pTarget, dTarget, pGain,
        dGain."""
        return {name: np.concatenate([getattr(self.leftLeg.motorPd, name),
                                      getattr(self.rightLeg.motorPd, name)])
                for name in ("torque", "pTarget", "dTarget", "pGain", "dGain")}


PD_IN_DTYPE = _dtype(PdIn)
PD_IN_SIZE = PD_IN_DTYPE.itemsize  # 476
# Float index (offset / 4) of each motor-PD field's 10 values, motor order (left, then right).
_MOTOR_PD_INDEX = tuple(
    np.concatenate([np.arange(5) + field_offsets(PD_IN_DTYPE)[f"{leg}.motorPd.{name}"] // 4
                    for leg in ("leftLeg", "rightLeg")])
    for name in ("torque", "pTarget", "dTarget", "pGain", "dGain"))
_OTHER_PD_INDEX = np.setdiff1d(np.arange(PD_IN_SIZE // 4), np.concatenate(_MOTOR_PD_INDEX))


def pack_pd_in(pd: PdIn) -> bytes:
    return _pack(pd, PD_IN_DTYPE)


def unpack_pd_in(payload: bytes) -> PdIn:
    return _unpack(PdIn, PD_IN_DTYPE, payload)


def pack_motor_pd(torque, p_target, d_target, p_gain, d_gain) -> bytes:
    """The ``pd_in_t`` payload of ``PdIn.from_motors(...)``, without building the dataclass:
    the 2 kHz loop's packer. Arguments are (10,) arrays in motor order."""
    flat = np.zeros(PD_IN_SIZE // 4, dtype="<f4")
    for index, value in zip(_MOTOR_PD_INDEX, (torque, p_target, d_target, p_gain, d_gain)):
        flat[index] = value
    return flat.tobytes()


def unpack_motor_pd(payload: bytes) -> tuple[tuple[np.ndarray, ...], bool]:
    """((torque, pTarget, dTarget, pGain, dGain), other): the motor-PD fields of a ``pd_in_t``
    payload, each (10,) float64 in motor order, and whether any other value (task PD,
    telemetry) is non-zero. The robot side's fast reader."""
    if len(payload) != PD_IN_SIZE:
        raise ValueError(f"pd_in_t payload is {len(payload)} bytes, expected {PD_IN_SIZE}")
    flat = np.frombuffer(payload, dtype="<f4").astype(np.float64)
    return (tuple(flat[index] for index in _MOTOR_PD_INDEX),
            bool(np.any(flat[_OTHER_PD_INDEX] != 0.0)))


# ------------------------------------------------------------------------ state_out_t


@dataclass
class StatePelvisOut:
    """Pelvis estimate. Orientation w, x, y, z; rotational velocity in the pelvis frame;
    translational velocity and acceleration in the world frame (acceleration without gravity).
    The robot's position estimate is not ground truth: its height starts near 0.8 m."""

    position: np.ndarray = _f32(3)
    orientation: np.ndarray = _f32(4)
    rotationalVelocity: np.ndarray = _f32(3)
    translationalVelocity: np.ndarray = _f32(3)
    translationalAcceleration: np.ndarray = _f32(3)
    externalMoment: np.ndarray = _f32(3)
    externalForce: np.ndarray = _f32(3)


@dataclass
class StateFootOut:
    position: np.ndarray = _f32(3)
    orientation: np.ndarray = _f32(4)
    footRotationalVelocity: np.ndarray = _f32(3)
    footTranslationalVelocity: np.ndarray = _f32(3)
    toeForce: np.ndarray = _f32(3)
    heelForce: np.ndarray = _f32(3)


@dataclass
class StateTerrainOut:
    height: float = _scalar("<f4", 0.0)
    slope: np.ndarray = _f32(2)


@dataclass
class StateMotorOut:
    """10 motors in motor order: position (rad), velocity (rad/s), torque (N·m)."""

    position: np.ndarray = _f32(10)
    velocity: np.ndarray = _f32(10)
    torque: np.ndarray = _f32(10)


@dataclass
class StateJointOut:
    """Passive joints per leg: shin, tarsus, foot (the project's ``foot_crank``)."""

    position: np.ndarray = _f32(6)
    velocity: np.ndarray = _f32(6)


@dataclass
class StateRadioOut:
    """The operator's radio: 16 channels in [−1, 1] and whether the receiver hears it."""

    channel: np.ndarray = _f32(16)
    signalGood: bool = _scalar("?", False)


@dataclass
class StateBatteryOut:
    stateOfCharge: float = _scalar("<f4", 0.0)
    current: float = _scalar("<f4", 0.0)


@dataclass
class StateOut:
    """``state_out_t``: 493 bytes (``<121f?2f``), the robot's estimator output at 2 kHz."""

    pelvis: StatePelvisOut = _struct(StatePelvisOut)
    leftFoot: StateFootOut = _struct(StateFootOut)
    rightFoot: StateFootOut = _struct(StateFootOut)
    terrain: StateTerrainOut = _struct(StateTerrainOut)
    motor: StateMotorOut = _struct(StateMotorOut)
    joint: StateJointOut = _struct(StateJointOut)
    radio: StateRadioOut = _struct(StateRadioOut)
    battery: StateBatteryOut = _struct(StateBatteryOut)


STATE_OUT_DTYPE = _dtype(StateOut)
STATE_OUT_SIZE = STATE_OUT_DTYPE.itemsize  # 493


def pack_state_out(state: StateOut) -> bytes:
    return _pack(state, STATE_OUT_DTYPE)


def unpack_state_out(payload: bytes) -> StateOut:
    return _unpack(StateOut, STATE_OUT_DTYPE, payload)


def view_state_out(payload: bytes) -> np.void:
    """Zero-copy read-only record of a ``state_out_t`` payload (``rec["motor"]["position"]``):
    what the 2 kHz loop reads instead of building a ``StateOut``."""
    if len(payload) != STATE_OUT_SIZE:
        raise ValueError(f"state_out_t payload is {len(payload)} bytes, expected "
                         f"{STATE_OUT_SIZE}")
    return np.frombuffer(payload, STATE_OUT_DTYPE)[0]


STATE_OUT_FLOATS = 121
"""The float32 values before ``radio.signalGood`` (byte 484)."""
STATE_OUT_SLICES = {name: slice(offset // 4, offset // 4 + n)
                    for name, offset, n in _leaves(STATE_OUT_DTYPE)
                    if offset < 4 * STATE_OUT_FLOATS}
"""Where each field lies in ``state_out_floats`` (``STATE_OUT_SLICES["motor.position"]``)."""


def state_out_floats(payload: bytes) -> np.ndarray:
    """The first 121 values of a ``state_out_t`` payload as float64, in one copy: the fastest
    way to read many fields (index with ``STATE_OUT_SLICES``)."""
    return np.frombuffer(payload, "<f4", count=STATE_OUT_FLOATS).astype(np.float64)


# ------------------------------------------------------------------------ cassie_user_in_t


@dataclass
class CassieUserIn:
    """``cassie_user_in_t`` (torque mode): 58 bytes, ``<10f9h``."""

    torque: np.ndarray = _f32(10)
    telemetry: np.ndarray = _i16(9)


CASSIE_USER_IN_DTYPE = _dtype(CassieUserIn)
CASSIE_USER_IN_SIZE = CASSIE_USER_IN_DTYPE.itemsize  # 58


def pack_cassie_user_in(u: CassieUserIn) -> bytes:
    return _pack(u, CASSIE_USER_IN_DTYPE)


def unpack_cassie_user_in(payload: bytes) -> CassieUserIn:
    return _unpack(CassieUserIn, CASSIE_USER_IN_DTYPE, payload)


# ------------------------------------------------------------------------ header


def seq_diff(a: int, b: int) -> int:
    """How far sequence number ``a`` is ahead of ``b``, modulo 256 (0..255)."""
    return (a - b) % SEQ_MODULO


def pack_packet(seq: int, echo: int, payload: bytes) -> bytes:
    """Header [own sequence number, last sequence number received from the peer] + payload."""
    return HEADER.pack(seq % SEQ_MODULO, echo % SEQ_MODULO) + payload


def split_packet(data: bytes) -> tuple[int, int, bytes]:
    """(sender's sequence number, the echo of ours it answers, payload)."""
    if len(data) < HEADER_SIZE:
        raise ValueError(f"packet of {len(data)} bytes has no header")
    seq, echo = HEADER.unpack_from(data)
    return seq, echo, data[HEADER_SIZE:]


REORDER_WINDOW = 8
"""Packets (4 ms at 2 kHz) by which one may arrive late and be dropped as out of order; a
number further back means the peer restarted its count, and the packet is taken."""


@dataclass
class SequenceState:
    """One side's header bookkeeping, as the robot's ``process_packet_header``.

    ``next_header`` numbers each outgoing packet; ``receive`` takes an incoming header and
    returns (lost, rtt): packets missing before it (0 when in order or after the peer restarted
    its count; None for a duplicate or a packet up to ``REORDER_WINDOW`` late, which should be
    dropped) and how many of our packets were sent since the one it echoes (the round trip in
    packets).
    """

    seq_out: int = -1
    """Sequence number of the last packet sent (−1: none yet)."""
    seq_in: int | None = None
    """Sequence number of the last packet accepted from the peer."""

    def next_header(self) -> tuple[int, int]:
        self.seq_out = (self.seq_out + 1) % SEQ_MODULO
        return self.seq_out, 0 if self.seq_in is None else self.seq_in

    def receive(self, seq: int, echo: int) -> tuple[int | None, int]:
        rtt = seq_diff(max(self.seq_out, 0), echo)
        if self.seq_in is None:
            self.seq_in = seq
            return 0, rtt
        ahead = seq_diff(seq, self.seq_in)
        if ahead == 0 or SEQ_MODULO - ahead <= REORDER_WINDOW:
            return None, rtt  # a duplicate, or a late packet: older than the last accepted
        self.seq_in = seq
        if ahead >= SEQ_MODULO // 2:
            return 0, rtt  # further back than reordering explains: the peer restarted
        return ahead - 1, rtt


__all__ = ["CASSIE_USER_IN_DTYPE", "CASSIE_USER_IN_SIZE", "CassieUserIn", "HEADER_SIZE",
           "PD_IN_DTYPE", "PD_IN_SIZE", "PdIn", "PdLegIn", "PdMotorIn", "PdTaskIn",
           "STATE_OUT_DTYPE", "STATE_OUT_FLOATS", "STATE_OUT_SIZE", "STATE_OUT_SLICES",
           "SEQ_MODULO", "SequenceState", "StateBatteryOut",
           "StateFootOut", "StateJointOut", "StateMotorOut", "StateOut", "StatePelvisOut",
           "StateRadioOut", "StateTerrainOut", "field_offsets", "pack_cassie_user_in",
           "pack_motor_pd", "pack_packet", "pack_pd_in", "pack_state_out", "seq_diff",
           "split_packet", "state_out_floats", "unpack_cassie_user_in", "unpack_motor_pd",
           "unpack_pd_in", "unpack_state_out", "view_state_out"]
