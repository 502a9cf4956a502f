"""The robot's wire format, field by field, against the byte offsets of cassie_facts.md §7."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from cassie_rl_ros.bridge import protocol as P

# Documented offsets (bytes) and lengths (values), in struct order.
PD_IN_FIELDS = [
    *[(f"{leg}.taskPd.{name}", base + 24 * i, 6)
      for leg, base in (("leftLeg", 0), ("rightLeg", 220))
      for i, name in enumerate(("torque", "pTarget", "dTarget", "pGain", "dGain"))],
    *[(f"{leg}.motorPd.{name}", base + 20 * i, 5)
      for leg, base in (("leftLeg", 120), ("rightLeg", 340))
      for i, name in enumerate(("torque", "pTarget", "dTarget", "pGain", "dGain"))],
    ("telemetry", 440, 9),
]
# The ones §7 spells out, as a check on the table above.
PD_IN_DOCUMENTED = {"leftLeg.motorPd.torque": 120, "leftLeg.motorPd.pTarget": 140,
                    "leftLeg.motorPd.dTarget": 160, "leftLeg.motorPd.pGain": 180,
                    "leftLeg.motorPd.dGain": 200, "rightLeg.taskPd.torque": 220,
                    "rightLeg.motorPd.pTarget": 360, "rightLeg.motorPd.pGain": 400,
                    "rightLeg.motorPd.dGain": 420, "telemetry": 440}
FOOT = [("position", 0, 3), ("orientation", 12, 4), ("footRotationalVelocity", 28, 3),
        ("footTranslationalVelocity", 40, 3), ("toeForce", 52, 3), ("heelForce", 64, 3)]
STATE_OUT_FIELDS = [
    ("pelvis.position", 0, 3), ("pelvis.orientation", 12, 4),
    ("pelvis.rotationalVelocity", 28, 3), ("pelvis.translationalVelocity", 40, 3),
    ("pelvis.translationalAcceleration", 52, 3), ("pelvis.externalMoment", 64, 3),
    ("pelvis.externalForce", 76, 3),
    *[(f"leftFoot.{name}", 88 + off, n) for name, off, n in FOOT],
    *[(f"rightFoot.{name}", 164 + off, n) for name, off, n in FOOT],
    ("terrain.height", 240, 1), ("terrain.slope", 244, 2),
    ("motor.position", 252, 10), ("motor.velocity", 292, 10), ("motor.torque", 332, 10),
    ("joint.position", 372, 6), ("joint.velocity", 396, 6),
    ("radio.channel", 420, 16),
    ("battery.stateOfCharge", 485, 1), ("battery.current", 489, 1),
]


def get(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def put(obj, dotted: str, value):
    *path, last = dotted.split(".")
    for part in path:
        obj = getattr(obj, part)
    setattr(obj, last, value)


def distinct_values(fields_, start: float = 1.0):
    """A different float32-exact value for every element of every field."""
    out, k = {}, start
    for name, _, n in fields_:
        out[name] = np.arange(k, k + n) * 0.25
        k += n
    return out


def test_sizes_and_struct_formats_match_the_documented_layout():
    assert P.PD_IN_SIZE == 476 == struct.calcsize("<119f")
    assert P.STATE_OUT_SIZE == 493 == struct.calcsize("<121f?2f")
    assert P.CASSIE_USER_IN_SIZE == 58 == struct.calcsize("<10f9h")
    assert P.HEADER_SIZE == 2


def test_dtype_offsets_are_the_documented_ones():
    pd = P.field_offsets(P.PD_IN_DTYPE)
    assert pd == {name: off for name, off, _ in PD_IN_FIELDS}
    assert {k: pd[k] for k in PD_IN_DOCUMENTED} == PD_IN_DOCUMENTED
    state = P.field_offsets(P.STATE_OUT_DTYPE)
    expected = {name: off for name, off, _ in STATE_OUT_FIELDS}
    expected["radio.signalGood"] = 484
    assert state == expected
    assert P.field_offsets(P.CASSIE_USER_IN_DTYPE) == {"torque": 0, "telemetry": 40}


def test_pd_in_packs_every_field_at_its_offset_and_round_trips():
    values = distinct_values(PD_IN_FIELDS)
    pd = P.PdIn()
    for name, _, n in PD_IN_FIELDS:
        assert get(pd, name).shape == (n,)
        put(pd, name, values[name])
    data = P.pack_pd_in(pd)
    assert len(data) == 476
    for name, offset, n in PD_IN_FIELDS:
        np.testing.assert_array_equal(struct.unpack_from(f"<{n}f", data, offset), values[name],
                                      err_msg=name)
    back = P.unpack_pd_in(data)
    for name, _, _ in PD_IN_FIELDS:
        np.testing.assert_array_equal(get(back, name), values[name], err_msg=name)


def test_motor_pd_fast_path_equals_the_dataclass_and_uses_motor_order():
    rng = np.random.default_rng(0)
    fields5 = [rng.normal(size=10).astype(np.float32).astype(float) for _ in range(5)]
    data = P.pack_motor_pd(*fields5)
    assert data == P.pack_pd_in(P.PdIn.from_motors(*fields5))
    # Left leg's pTarget at byte 140 holds motors 0..4, the right leg's at 360 motors 5..9.
    np.testing.assert_array_equal(struct.unpack_from("<5f", data, 140), fields5[1][:5])
    np.testing.assert_array_equal(struct.unpack_from("<5f", data, 360), fields5[1][5:])
    np.testing.assert_array_equal(struct.unpack_from("<5f", data, 400), fields5[3][5:])
    motors, other = P.unpack_motor_pd(data)
    for got, want in zip(motors, fields5):
        np.testing.assert_array_equal(got, want)
    assert not other
    pd = P.PdIn.from_motors(*fields5)
    pd.rightLeg.taskPd.pGain[5] = 1.0
    assert P.unpack_motor_pd(P.pack_pd_in(pd))[1]
    np.testing.assert_array_equal(P.PdIn.from_motors(*fields5).motors()["dGain"], fields5[4])


def test_state_out_packs_every_field_at_its_offset_and_round_trips():
    values = distinct_values(STATE_OUT_FIELDS)
    state = P.StateOut()
    for name, _, n in STATE_OUT_FIELDS:
        put(state, name, float(values[name][0]) if n == 1 and not isinstance(
            get(state, name), np.ndarray) else values[name])
    state.radio.signalGood = True
    data = P.pack_state_out(state)
    assert len(data) == 493
    for name, offset, n in STATE_OUT_FIELDS:
        np.testing.assert_array_equal(struct.unpack_from(f"<{n}f", data, offset), values[name],
                                      err_msg=name)
    assert data[484] == 1
    # The whole packet is the documented struct format.
    flat = struct.unpack("<121f?2f", data)
    assert flat[121] is True
    back = P.unpack_state_out(data)
    for name, _, _ in STATE_OUT_FIELDS:
        np.testing.assert_array_equal(np.atleast_1d(get(back, name)), values[name],
                                      err_msg=name)
    assert back.radio.signalGood is True
    view = P.view_state_out(data)
    np.testing.assert_array_equal(view["motor"]["velocity"], values["motor.velocity"])
    assert bool(view["radio"]["signalGood"])


def test_cassie_user_in_round_trip():
    u = P.CassieUserIn(torque=np.arange(10) * 1.5, telemetry=np.arange(-4, 5, dtype=np.int16))
    data = P.pack_cassie_user_in(u)
    assert struct.unpack("<10f9h", data) == (*(np.arange(10) * 1.5), *range(-4, 5))
    back = P.unpack_cassie_user_in(data)
    np.testing.assert_array_equal(back.torque, u.torque)
    np.testing.assert_array_equal(back.telemetry, u.telemetry)


def test_wrong_payload_lengths_raise():
    with pytest.raises(ValueError, match="493"):
        P.unpack_state_out(bytes(492))
    with pytest.raises(ValueError, match="476"):
        P.unpack_pd_in(bytes(477))
    with pytest.raises(ValueError, match="476"):
        P.unpack_motor_pd(bytes(10))
    with pytest.raises(ValueError, match="header"):
        P.split_packet(b"\x01")


def test_header_is_sequence_then_echo_and_wraps():
    data = P.pack_packet(257, -1, b"xyz")
    assert data[:2] == bytes([1, 255]) and P.split_packet(data) == (1, 255, b"xyz")
    assert P.seq_diff(3, 250) == 9 and P.seq_diff(250, 3) == 247 and P.seq_diff(7, 7) == 0


def test_sequence_state_counts_loss_and_round_trip_across_the_wrap():
    ours = P.SequenceState()
    headers = [ours.next_header() for _ in range(300)]
    assert [h[0] for h in headers[:3]] == [0, 1, 2] and headers[256][0] == 0
    assert ours.seq_out == 299 % 256
    # The peer answers our packet 295 (5 of ours sent since): round trip 4 packets.
    assert ours.receive(seq=250, echo=295 % 256) == (0, 4)
    assert ours.receive(seq=252, echo=ours.seq_out) == (1, 0)  # 251 lost
    assert ours.receive(seq=2, echo=ours.seq_out) == (5, 0)  # 253, 254, 255, 0, 1 lost
    assert ours.receive(seq=2, echo=ours.seq_out)[0] is None  # duplicate
    assert ours.receive(seq=255, echo=ours.seq_out)[0] is None  # older: out of order
    assert ours.receive(seq=3, echo=ours.seq_out)[0] == 0
    assert ours.next_header() == (300 % 256, 3)  # the echo is the last accepted peer number


def test_a_peer_that_restarts_its_count_is_followed_at_once():
    # Far further back than a late packet can be: the robot or bridge restarted; the robot's
    # own header code always takes the newest number, and so does this one.
    ours = P.SequenceState()
    for seq in range(30, 40):
        ours.receive(seq=seq, echo=0)
    assert ours.receive(seq=36, echo=0)[0] is None  # 3 late: reordered, dropped
    assert ours.receive(seq=0, echo=0) == (0, 0) and ours.seq_in == 0
    assert ours.receive(seq=1, echo=0)[0] == 0 and ours.next_header()[1] == 1
