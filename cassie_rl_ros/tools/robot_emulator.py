"""``cassie-rl robot-sim``: the simulator behind the robot side of Cassie's PD-mode UDP protocol.

    cassie-rl robot-sim                                   # real time on 127.0.0.1:25000
    cassie-rl robot-sim --lockstep --estimator-rate 0     # one physics step per packet
    cassie-rl bridge --ros-args -p robot_address:=127.0.0.1 -p robot_port:=25000 \\
        -p local_address:=127.0.0.1

For everyone without a robot: the hardware bridge talks to this exactly as to Cassie, and it
behaves like the robot's program (and libcassiemujoco's ``cassiesim``) in PD mode:

- Packets are a 2-byte header + ``pd_in_t`` in, header + ``state_out_t`` out (``protocol.py``);
  our header is [our sequence number, the last client sequence number received]. Packets of the
  wrong length are dropped and counted; so are inputs with a non-finite value or a negative gain
  (``CassieSim.set_pd`` refuses them). Task PD and telemetry are ignored (counted when non-zero).
- The physics starts with the first valid packet (a robot hangs still until a controller talks).
- Real time (default): every 0.5 ms of wall time, the newest input is applied (else the last one
  is reused), the physics steps once and the state goes to the sender of the last valid packet.
  After 100 ms without a valid packet the input is zeroed (all gains and torques 0: the motors go
  limp), as on the robot. If a step takes longer than 0.5 ms, it runs slower than real time.
- ``--lockstep``: each valid packet is applied, the physics steps once, the state answers it.
  Time advances only with packets, so the silence timeout never fires.

``state_out_t`` is filled like this:

- motors and passive joints (shin, tarsus, foot crank): the simulated encoders, filtered
  velocities and applied torques, as the simulator node publishes them;
- pelvis, terrain height and foot positions: the project's contact-aided invariant EKF
  (``cassie_sim_ros.estimator``) on the simulated sensors, at ``--estimator-rate`` (500 Hz by
  default, as in the simulator node; held between updates), as the robot's own estimator would.
  It initialises with the lower foot on z = 0 (about 1.0 m pelvis height), where the robot's
  estimator starts near 0.8 m. With ``--estimator-rate 0``, and before its first update:
  orientation from the IMU, rotational velocity from the gyro, translational acceleration from
  the accelerometer (R·a − g); position and velocity 0. Ground truth is never sent;
- foot orientations, velocities and forces, external forces, terrain slope: 0;
- radio: 16 channels from ``--radio`` (default channel 8 = +1, e-stop released; channel 9 = +1,
  mode switch at policy; the rest 0), signal good; battery: charge 1, current 0. In real time
  its operator arms each new client: the mode switch (``--mode-channel``, 9) reads damping in
  the first answer to it, as the bridge's start interlock wants, then its value. (A lockstep
  bridge talks only to this emulator and needs no arming.)

On exit (Ctrl-C or ``--duration``) it prints ``robot-sim stats {json}``.
"""

from __future__ import annotations

import argparse
import json
import math
import select
import signal
import socket
import sys
import time

import mujoco
import numpy as np

from cassie_rl_ros.bridge import protocol as P
from cassie_sim_ros.sim_server import SimNodeConfig, SimServer

DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 25000
TIMESTEP = 0.0005
"""The robot's loop: one physics step and one state packet every 0.5 ms."""
SILENCE_TIMEOUT = 0.1
"""Seconds without a valid packet before the robot zeroes its PD input."""
DEFAULT_RADIO = {8: 1.0, 9: 1.0}
MODE_CHANNEL = 9
"""E-stop released, mode switch at policy (the hardware bridge's default mapping)."""
GRAVITY = np.array([0.0, 0.0, -9.81])
MAX_LAG = 0.05
"""Real time: when this far behind (s), skip the lost time instead of catching up."""


class RobotEmulator:
    """The robot's side without sockets: ``handle`` packets, ``step``, ``reply``.

    The physics and the estimator are the simulator node's (``SimServer``, same config); the
    simulator node's own watchdog stays unarmed, since inputs go straight to the motors here.
    """

    def __init__(self, config: SimNodeConfig | None = None,
                 radio: dict[int, float] | None = None, mode_channel: int = MODE_CHANNEL,
                 arming: bool = True):
        config = config or SimNodeConfig()
        if config.timestep != TIMESTEP:
            raise ValueError(f"timestep: the robot steps every {TIMESTEP} s, not "
                             f"{config.timestep}")
        self.server = SimServer(config)
        self.sim = self.server.sim
        self.seq = P.SequenceState()
        self.record = np.zeros((), P.STATE_OUT_DTYPE)
        channels = dict(DEFAULT_RADIO if radio is None else radio)
        for ch, value in channels.items():
            if not (0 <= ch < 16 and math.isfinite(value)):
                raise ValueError(f"radio channel {ch} = {value}: channels are 0..15, values finite")
            self.record["radio"]["channel"][ch] = value
        self.record["radio"]["signalGood"] = True
        if not 0 <= mode_channel < 16:
            raise ValueError(f"mode channel {mode_channel}: channels are 0..15")
        self.mode_channel, self.arming = mode_channel, arming
        self.arming_left = 0  # answers still to send with the switch at damping
        self.record["battery"]["stateOfCharge"] = 1.0
        self.started = False
        self.client: tuple[str, int] | None = None
        self.last_input: float | None = None
        self.zeroed = False
        self._estimate_at = -1  # estimator update of the cached estimate
        self.counts = dict.fromkeys(("received", "wrong_length", "out_of_order",
                                     "rejected_inputs", "task_pd_ignored", "zeroed_inputs",
                                     "diverged", "sent"), 0)

    @property
    def estimator(self) -> str:
        return "sensors" if self.server.estimator is None else "inekf"

    # ---------------------------------------------------------------- input

    def handle(self, data: bytes, source: tuple[str, int], now: float) -> bool:
        """One datagram from a client; True when its input was applied."""
        if len(data) != P.HEADER_SIZE + P.PD_IN_SIZE:
            self.counts["wrong_length"] += 1
            return False
        seq, _, payload = P.split_packet(data)
        if self.seq.receive(seq, 0)[0] is None:
            self.counts["out_of_order"] += 1
            return False
        (torque, p, d, kp, kd), other = P.unpack_motor_pd(payload)
        try:
            self.sim.set_pd(p, d, torque, kp, kd)
        except ValueError:  # non-finite value or negative gain
            self.counts["rejected_inputs"] += 1
            return False
        self.counts["received"] += 1
        self.counts["task_pd_ignored"] += other
        if source != self.client and self.arming:
            self.arming_left = 1
        self.client, self.last_input, self.started, self.zeroed = source, now, True, False
        return True

    def check_silence(self, now: float):
        """Zero the input after ``SILENCE_TIMEOUT`` without a valid packet (real time)."""
        if self.started and not self.zeroed and now - self.last_input > SILENCE_TIMEOUT:
            zeros = np.zeros(10)
            self.sim.set_pd(zeros, zeros, zeros, zeros, zeros)
            self.zeroed = True
            self.counts["zeroed_inputs"] += 1

    # ---------------------------------------------------------------- physics and output

    def step(self):
        """One physics step (and an estimator update when one is due)."""
        if self.server.advance(1):  # the only event possible here: diverged, reset
            self.counts["diverged"] += 1

    def state_payload(self) -> bytes:
        """``state_out_t`` of the current state."""
        rec, server = self.record, self.server
        s = self.sim.sensors()
        motor, joint, pelvis = rec["motor"], rec["joint"], rec["pelvis"]
        motor["position"], motor["velocity"] = s.motor_position[0], s.motor_velocity[0]
        motor["torque"] = s.motor_torque[0]
        joint["position"], joint["velocity"] = s.joint_position[0], s.joint_velocity[0]
        estimator = server.estimator
        if estimator is not None and estimator.initialized[0]:
            update = server.steps // server.steps_per_estimate
            if self._estimate_at != update:  # state() only after an update
                self._estimate_at = update
                e = estimator.state()
                pelvis["position"] = e.pelvis_position[0]
                pelvis["orientation"] = e.pelvis_orientation[0]
                pelvis["rotationalVelocity"] = e.pelvis_rotational_velocity[0]
                pelvis["translationalVelocity"] = e.pelvis_translational_velocity[0]
                pelvis["translationalAcceleration"] = e.pelvis_translational_acceleration[0]
                rec["terrain"]["height"] = e.terrain_height[0]
                # Assumed: relative to the pelvis, in world axes (check on the robot).
                rec["leftFoot"]["position"] = e.foot_position[0, 0] - e.pelvis_position[0]
                rec["rightFoot"]["position"] = e.foot_position[0, 1] - e.pelvis_position[0]
        else:  # no estimator, or not initialised yet: the IMU's own values
            quat = s.imu_orientation[0]
            accel = np.empty(3)
            mujoco.mju_rotVecQuat(accel, s.imu_linear_acceleration[0], quat)
            pelvis["orientation"] = quat
            pelvis["rotationalVelocity"] = s.imu_angular_velocity[0]
            pelvis["translationalAcceleration"] = accel + GRAVITY
        return rec.tobytes()

    def reply(self) -> bytes:
        seq, echo = self.seq.next_header()
        self.counts["sent"] += 1
        payload = self.state_payload()
        if self.arming_left:
            self.arming_left -= 1
            record = np.frombuffer(payload, P.STATE_OUT_DTYPE)[0].copy()
            record["radio"]["channel"][self.mode_channel] = -1.0
            payload = record.tobytes()
        return P.pack_packet(seq, echo, payload)

    def stats(self) -> dict:
        return {"steps": self.server.steps, "sim_time": self.server.time,
                "estimator": self.estimator, **self.counts}


# -------------------------------------------------------------------- serving


def _drain(sock: socket.socket, emulator: RobotEmulator, now: float, then=None):
    """Handle every datagram waiting on the non-blocking socket; ``then()`` after each one
    whose input was applied."""
    while True:
        try:
            data, source = sock.recvfrom(2048)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionRefusedError:  # an ICMP error from an earlier send: ignore
            continue
        if emulator.handle(data, source, now) and then is not None:
            then()


def _send(sock: socket.socket, emulator: RobotEmulator):
    try:
        sock.sendto(emulator.reply(), emulator.client)
    except OSError:  # the client went away: keep running, as the robot does
        pass


def serve_realtime(sock: socket.socket, emulator: RobotEmulator, deadline: float,
                   timing: dict):
    """Stream state every 0.5 ms once the first packet arrived; fills ``timing``."""
    while not emulator.started and time.monotonic() < deadline:
        if select.select([sock], [], [], 0.05)[0]:
            _drain(sock, emulator, time.monotonic())
    start = next_due = time.monotonic()
    steps0, skipped = emulator.server.steps, 0.0
    try:
        while next_due < deadline:
            now = time.monotonic()
            _drain(sock, emulator, now)
            emulator.check_silence(now)
            emulator.step()
            _send(sock, emulator)
            next_due += TIMESTEP
            wait = next_due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            elif -wait > MAX_LAG:
                skipped += -wait
                next_due = time.monotonic()
    finally:
        wall = time.monotonic() - start
        steps = emulator.server.steps - steps0
        timing.update(wall_time=round(wall, 3), skipped_s=round(skipped, 3),
                      real_time_factor=round(steps * TIMESTEP / wall, 4) if wall > 0 else 0.0)


def serve_lockstep(sock: socket.socket, emulator: RobotEmulator, deadline: float,
                   timing: dict):
    """Answer each valid packet with one physics step."""
    def answer():
        emulator.step()
        _send(sock, emulator)

    while time.monotonic() < deadline:
        if select.select([sock], [], [], 0.05)[0]:
            _drain(sock, emulator, time.monotonic(), answer)


def _radio(text: str) -> tuple[int, float]:
    try:
        ch, value = text.split("=", 1)
        return int(ch), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not CHANNEL=VALUE (e.g. 9=0)") from None


def main(argv: list[str] | None = None) -> int:
    """Run the emulator; ``argv`` is the argument list without the program name."""
    parser = argparse.ArgumentParser(
        prog="cassie-rl robot-sim", description="Emulate Cassie's PD-mode UDP interface with "
        "the MuJoCo simulator (see the module docstring for what it fills in).")
    parser.add_argument("--address", default=DEFAULT_ADDRESS, help="address to bind "
                        f"(default {DEFAULT_ADDRESS})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to bind (default {DEFAULT_PORT}; 0: any, printed)")
    parser.add_argument("--lockstep", action="store_true",
                        help="one physics step per received packet instead of real time")
    parser.add_argument("--estimator-rate", type=float, default=500.0, metavar="HZ",
                        help="rate of the project's state estimator (default 500, as the "
                        "simulator node; a divisor of 2000); 0: pelvis state from the IMU")
    parser.add_argument("--radio", type=_radio, action="append", default=[], metavar="CH=VALUE",
                        help="radio channel value (repeatable); default 8=1 (e-stop released), "
                        "9=1 (policy); 9=-1 damping, 9=0 stand, 8=-1 e-stop")
    parser.add_argument("--mode-channel", type=int, default=MODE_CHANNEL,
                        help=f"the mode switch's channel (default {MODE_CHANNEL}): in real "
                        "time it reads damping in the first answer to each new client")
    parser.add_argument("--variant", choices=("regular", "stiff", "soft"), default="regular")
    parser.add_argument("--actuator", choices=("faithful", "fast"), default="faithful")
    parser.add_argument("--sensor-noise", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--duration", type=float, default=0.0,
                        help="stop after this many seconds (default 0: run until Ctrl-C)")
    args = parser.parse_args(argv)
    radio = dict(DEFAULT_RADIO)
    radio.update(dict(args.radio))
    try:
        emulator = RobotEmulator(
            SimNodeConfig(variant=args.variant, actuator=args.actuator,
                          sensor_noise=args.sensor_noise, seed=args.seed,
                          estimator_rate=args.estimator_rate), radio=radio,
            mode_channel=args.mode_channel, arming=not args.lockstep)
    except ValueError as err:  # ConfigError included: it names the setting
        parser.error(str(err))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((args.address, args.port))
    except OSError as err:
        print(f"robot-sim: cannot bind {args.address}:{args.port}: {err.strerror}",
              file=sys.stderr)
        return 2
    sock.setblocking(False)
    address, port = sock.getsockname()
    print(f"robot-sim: listening on {address}:{port} "
          f"({'lockstep' if args.lockstep else 'real time'}, estimator "
          f"{emulator.estimator})", flush=True)
    deadline = time.monotonic() + args.duration if args.duration > 0 else math.inf
    timing: dict = {}
    # Ctrl-C and SIGTERM end the loop (also when started in the background, where a shell
    # would have SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        serve = serve_lockstep if args.lockstep else serve_realtime
        serve(sock, emulator, deadline, timing)
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
        print(f"robot-sim stats {json.dumps({**emulator.stats(), **timing})}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
