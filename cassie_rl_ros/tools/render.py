"""``cassie-rl render``: watch a policy walk, in MuJoCo's viewer or offscreen to a video.

    cassie-rl render --policy runs/walk --speed 0.5               # window (needs a display)
    cassie-rl render --policy runs/walk --video walk.mp4 --seconds 10
    cassie-rl render --policy runs/walk --frames frames/ --seconds 2
    cassie-rl render --ros --policy runs/walk                     # as render.launch.py

By default the simulation runs in this process: a ``CassieSim`` with the policy's training
simulation settings, driven by the same ``PolicyRunner`` as the policy node (same observations,
actions and clock), stepped one policy period at a time and paced to the wall clock in a window.
Nothing goes over ROS, so a video needs neither a ROS graph nor real time: 10 s of video take
as long as the CPU needs, and the same seed gives the same video.

``--ros`` instead starts the simulator node (real time), the policy node and ``viewer_node``
(the ROS viewer: it shows the simulator node's robot from /cassie/ground_truth and
/cassie/joint_states and sends the keys as commands) with ``cassie_rl_ros.bringup``, exactly as
``ros2 launch cassie_rl_ros render.launch.py`` does.

The window follows the pelvis, shows the commanded and the actual forward speed, and takes keys:
Up/Down speed ±0.1 m/s, PageUp/PageDown stepping frequency ±0.1, Left/Right a 200 N push (0.2 s)
towards the robot's left/right, Backspace reset (MuJoCo's own letter keys keep their meaning).
Commands are clamped to the policy's trained range, as on the robot.

Headless (no display, or ``--video``/``--frames``): offscreen rendering through EGL (set
``MUJOCO_GL=osmesa`` for software rendering) into an H.264 MP4 (``imageio-ffmpeg``, whose wheel
ships an ffmpeg binary) or numbered PNG frames (Pillow), with the same speeds written on the
frames.
"""

from __future__ import annotations

import argparse
import math
import os
import queue
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PUSH_FORCE = 200.0
"""N: the original viewer's push."""
PUSH_DURATION = 0.2
SPEED_STEP = 0.1
FREQUENCY_STEP = 0.1
# GLFW key codes (what mujoco.viewer's key_callback receives).
KEY_RIGHT, KEY_LEFT, KEY_DOWN, KEY_UP = 262, 263, 264, 265
KEY_PAGE_UP, KEY_PAGE_DOWN, KEY_BACKSPACE = 266, 267, 259
KEYS = {KEY_UP: ("speed", SPEED_STEP), KEY_DOWN: ("speed", -SPEED_STEP),
        KEY_PAGE_UP: ("frequency", FREQUENCY_STEP), KEY_PAGE_DOWN: ("frequency", -FREQUENCY_STEP),
        KEY_LEFT: ("push", 1.0), KEY_RIGHT: ("push", -1.0), KEY_BACKSPACE: ("reset", 0.0)}
"""Key code -> (what, amount). Push +1 is towards the robot's left (its +y), -1 its right."""
KEY_HELP = ("Up/Down speed ±0.1   PgUp/PgDn step freq ±0.1   Left/Right push 200 N   "
            "Backspace reset")
MAX_SOLVE_STEP = 0.1
"""rad: largest joint change per Gauss-Newton step of StateMirror."""
CAMERA = {"distance": 3.0, "azimuth": 90.0, "elevation": -12.0}
"""Tracking camera: 3 m from the pelvis, looking at the robot's left side, slightly down."""


# ---------------------------------------------------------------------------- shared pieces


def tracking_camera(model):
    """A camera following the pelvis (``mujoco.MjvCamera``)."""
    import mujoco

    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_TRACKING
    cam.trackbodyid = model.body("pelvis").id
    cam.distance, cam.azimuth, cam.elevation = (CAMERA["distance"], CAMERA["azimuth"],
                                                CAMERA["elevation"])
    return cam


def status_text(command: tuple[float, ...], step_frequency: float, actual_speed: float,
                sim_time: float) -> str:
    """The overlay: commanded and actual forward speed, stepping frequency, sim time."""
    return (f"speed: commanded {command[0]:+.2f} m/s, actual {actual_speed:+.2f} m/s\n"
            f"step frequency {step_frequency:.2f}   t = {sim_time:.2f} s")


def push_force(yaw: float, side: float) -> np.ndarray:
    """World-frame force of a push towards the robot's left (side +1) or right (-1)."""
    return PUSH_FORCE * side * np.array([-math.sin(yaw), math.cos(yaw), 0.0])


def draw_text(frame: np.ndarray, text: str) -> np.ndarray:
    """``frame`` (H, W, 3) uint8 with ``text`` in its top left corner (white on dark)."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    box = draw.multiline_textbbox((8, 6), text, font=font)
    draw.rectangle((box[0] - 4, box[1] - 3, box[2] + 4, box[3] + 3), fill=(0, 0, 0))
    draw.multiline_text((8, 6), text, fill=(255, 255, 255), font=font)
    return np.asarray(image)


class FrameSink:
    """Frames to an MP4 (path ending in .mp4, H.264 via imageio-ffmpeg) or to PNG files
    ``frame_00000.png``... in a folder."""

    def __init__(self, path: str | Path, width: int, height: int, fps: float):
        self.path = Path(path)
        self.count = 0
        self._writer = None
        if self.path.suffix.lower() == ".mp4":
            try:
                import imageio_ffmpeg
            except ImportError:
                raise RuntimeError("MP4 output needs imageio-ffmpeg (pip install imageio-ffmpeg); "
                                   "or write PNG frames with --frames DIR") from None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = imageio_ffmpeg.write_frames(
                str(self.path), (width, height), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                quality=7, macro_block_size=2, ffmpeg_log_level="error")
            self._writer.send(None)  # start ffmpeg
        else:
            self.path.mkdir(parents=True, exist_ok=True)

    def write(self, frame: np.ndarray) -> None:
        if self._writer is not None:
            self._writer.send(np.ascontiguousarray(frame))
        else:
            from PIL import Image

            Image.fromarray(frame).save(self.path / f"frame_{self.count:05d}.png")
        self.count += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class Offscreen:
    """Offscreen rendering of a model from the tracking camera. ``fast``: no shadows and no
    floor reflection, about 7x faster in software GL (llvmpipe)."""

    def __init__(self, model, width: int, height: int, fast: bool = False):
        import mujoco

        model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        self.renderer = mujoco.Renderer(model, height, width)
        self.camera = tracking_camera(model)
        self.off = ([mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION]
                    if fast else [])

    def render(self, data, text: str | None = None) -> np.ndarray:
        self.renderer.update_scene(data, camera=self.camera)
        for flag in self.off:
            self.renderer.scene.flags[flag] = 0
        frame = self.renderer.render()
        return draw_text(frame, text) if text else frame

    def close(self) -> None:
        self.renderer.close()


def even(n: int) -> int:
    """H.264 with yuv420p wants even sizes."""
    return max(2, n - n % 2)


class StateMirror:
    """The whole MuJoCo pose of a robot known only from what the simulator node publishes.

    /cassie/ground_truth gives the pelvis pose and /cassie/joint_states the 10 motors and the
    shin, tarsus and foot crank joints; the closed chains' other joints (the achilles rod's ball
    joint, the heel spring, the plantar rod) are solved so that the chains close: Gauss-Newton
    on the equality constraints' residuals over those joints only, warm-started from the last
    pose (a millimetre after the first call, well below a pixel after two).
    """

    SOLVED = ("achilles_rod", "heel_spring", "plantar_rod")

    def __init__(self, model):
        import mujoco

        from cassie_sim_ros import constants as C

        self._mj = mujoco
        self.model = model
        model.opt.jacobian = mujoco.mjtJacobian.mjJAC_DENSE
        self.data = mujoco.MjData(model)
        if model.nkey:
            self.data.qpos[:] = model.key_qpos[0]
        mujoco.mj_forward(model, self.data)
        self.qadr = {n: int(model.jnt_qposadr[model.joint(n).id])
                     for n in C.MOTOR_NAMES + C.PASSIVE_JOINT_NAMES}
        dofs = []
        for side in C.SIDES:
            for name in self.SOLVED:
                j = model.joint(f"{side}_{name}").id
                width = 3 if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_BALL else 1
                dofs += range(int(model.jnt_dofadr[j]), int(model.jnt_dofadr[j]) + width)
        self.solved_dofs = np.array(dofs)
        self.updates = 0

    def update(self, pelvis_position, pelvis_quat_wxyz, names, positions,
               iterations: int | None = None):
        """Set the pose (names: any of the 16 published joints) and close the chains; returns
        the ``MjData`` with its kinematics computed."""
        mj, m, d = self._mj, self.model, self.data
        d.qpos[0:3] = pelvis_position
        d.qpos[3:7] = pelvis_quat_wxyz
        for name, value in zip(names, positions):
            adr = self.qadr.get(name)
            if adr is not None:
                d.qpos[adr] = value
        dq = np.zeros(m.nv)
        if iterations is None:
            iterations = 3 if self.updates else 30
        self.updates += 1
        for _ in range(iterations):
            mj.mj_fwdPosition(m, d)
            rows = d.efc_type[:d.nefc] == mj.mjtConstraint.mjCNSTR_EQUALITY
            if not rows.any():
                break
            jac = d.efc_J[:d.nefc * m.nv].reshape(d.nefc, m.nv)[rows][:, self.solved_dofs]
            step, *_ = np.linalg.lstsq(jac, -d.efc_pos[:d.nefc][rows], rcond=None)
            # Small steps keep the chain on its branch (a rod can close a chain two ways).
            step *= min(1.0, MAX_SOLVE_STEP / max(float(np.abs(step).max()), 1e-12))
            dq[:] = 0.0
            dq[self.solved_dofs] = step
            mj.mj_integratePos(m, d.qpos, dq, 1.0)
        mj.mj_kinematics(m, d)
        return d

    def residual(self) -> float:
        """Largest constraint violation (m) of the current pose."""
        mj, m, d = self._mj, self.model, self.data
        mj.mj_fwdPosition(m, d)
        rows = d.efc_type[:d.nefc] == mj.mjtConstraint.mjCNSTR_EQUALITY
        return float(np.abs(d.efc_pos[:d.nefc][rows]).max()) if rows.any() else 0.0


# ---------------------------------------------------------------------------- in-process sim


@dataclass
class Rollout:
    """A simulated Cassie driven by a ``PolicyRunner``, one policy period per :meth:`step`."""

    runner: object  # PolicyRunner
    seed: int = 0

    def __post_init__(self):
        from cassie_sim_ros.sim import CassieSim, SimConfig
        from cassie_sim_ros.config import from_dict, to_dict

        config = self.runner.config
        sim_cfg = from_dict(SimConfig, {**to_dict(config.sim), "seed": self.seed})
        self.sim = CassieSim(sim_cfg)
        self.substeps = config.policy_substeps
        # The runner reads the sensors once per policy step, or, for a state_est policy, at
        # the estimator's rate (as the env and a robot driver feed it).
        self.chunk = self.substeps
        if self.runner.estimator is not None:
            self.chunk = max(1, int(round(self.runner.estimator.dt / config.sim.timestep)))
        self.physics_steps = 0
        self.time = 0.0
        self._read()

    def _read(self) -> None:
        stamp = self.physics_steps * round(self.sim.timestep * 1e9)
        for note in self.runner.readings(self.sim.sensors(), stamp * 1e-9, stamp):
            if "re-anchored" in note or "estimator" in note:
                print(note, file=sys.stderr)

    def step(self) -> None:
        """One policy period: act on the latest readings, then simulate it."""
        out = self.runner.step(self.physics_steps * self.sim.timestep)
        if out is not None:
            self.sim.set_pd(out.targets)
        remaining = self.substeps
        while remaining > 0:
            n = min(self.chunk, remaining)
            self.sim.step(n)
            self.physics_steps += n
            remaining -= n
            self._read()
        self.time += self.runner.dt

    def yaw(self) -> float:
        _, quat = self.sim.pelvis_pose()
        w, x, y, z = quat[0]
        return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))

    def forward_speed(self) -> float:
        """Pelvis velocity along the direction it faces (m/s)."""
        vel, _ = self.sim.pelvis_twist()
        yaw = self.yaw()
        return float(math.cos(yaw) * vel[0, 0] + math.sin(yaw) * vel[0, 1])

    def apply(self, what: str, amount: float) -> str | None:
        """A key's effect; returns a warning (a command clamped to the trained range)."""
        runner = self.runner
        if what == "speed":
            c = runner.command
            fb = runner.set_command(round(c[0] + amount, 6), c[1], c[2])
            return fb.warning or fb.error
        if what == "frequency":
            fb = runner.set_step_frequency(round(runner.step_frequency + amount, 6))
            return fb.warning or fb.error
        if what == "push":
            self.sim.push(push_force(self.yaw(), amount), duration=PUSH_DURATION)
        elif what == "reset":
            self.sim.reset()
            runner.reanchor()
            if runner.estimator is not None:
                runner.estimator.reset()
            self._read()
        return None

    def status(self) -> str:
        return status_text(self.runner.command, self.runner.step_frequency,
                           self.forward_speed(), self.time)


def render_offscreen(rollout: Rollout, sink: FrameSink, seconds: float, width: int,
                     height: int, fast: bool = False) -> int:
    """Run ``seconds`` of the rollout, one frame per policy step; returns the frame count."""
    import mujoco

    model = rollout.sim.mj_model(0)
    data = mujoco.MjData(model)
    offscreen = Offscreen(model, width, height, fast)
    try:
        steps = max(1, int(round(seconds / rollout.runner.dt)))
        for _ in range(steps + 1):
            rollout.sim.mj_data(0, data)
            sink.write(offscreen.render(data, rollout.status()))
            rollout.step()
    finally:
        offscreen.close()
        sink.close()
    return sink.count


def run_window(rollout: Rollout, seconds: float) -> None:
    """MuJoCo's passive viewer, the simulation paced to the wall clock, keys as commands."""
    import mujoco
    import mujoco.viewer

    model = rollout.sim.mj_model(0)
    data = mujoco.MjData(model)
    keys: queue.Queue = queue.Queue()

    def on_key(keycode: int):
        if keycode in KEYS:
            keys.put(KEYS[keycode])

    print(KEY_HELP, file=sys.stderr)
    with mujoco.viewer.launch_passive(model, data, key_callback=on_key) as viewer:
        cam = tracking_camera(model)
        viewer.cam.type, viewer.cam.trackbodyid = cam.type, cam.trackbodyid
        viewer.cam.distance, viewer.cam.azimuth, viewer.cam.elevation = (
            cam.distance, cam.azimuth, cam.elevation)
        start = time.monotonic()
        while viewer.is_running() and (seconds <= 0 or rollout.time < seconds):
            while not keys.empty():
                message = rollout.apply(*keys.get_nowait())
                if message:
                    print(message, file=sys.stderr)
            rollout.step()
            with viewer.lock():
                rollout.sim.mj_data(0, data)
                viewer.set_texts((None, mujoco.mjtGridPos.mjGRID_TOPLEFT, rollout.status(),
                                  KEY_HELP))
            viewer.sync()
            wait = start + rollout.time - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            elif wait < -0.5:  # slower than real time: do not try to catch up
                start -= wait


# ---------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cassie-rl render", description=__doc__.splitlines()[0]
                                     .split(": ", 1)[1])
    parser.add_argument("--policy", nargs="+", default=[], metavar="PATH",
                        help="saved policy (several: an ensemble); default: the shipped policy")
    parser.add_argument("--speed", type=float, default=0.5, help="forward speed command (m/s)")
    parser.add_argument("--step-frequency", type=float, default=None,
                        help="stepping frequency (default: the trained one)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--video", metavar="OUT.mp4", help="render offscreen to this MP4")
    out.add_argument("--frames", metavar="DIR", help="render offscreen to PNG frames in DIR")
    parser.add_argument("--seconds", type=float, default=None,
                        help="simulated seconds (default: 10 offscreen, until closed in a window)")
    parser.add_argument("--headless", action="store_true",
                        help="never open a window (default when there is no display)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fast", action="store_true",
                        help="offscreen: no shadows or reflections (much faster without a GPU)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sensor noise")
    parser.add_argument("--ros", action="store_true",
                        help="run the simulator, policy and viewer nodes (render.launch.py)")
    parser.add_argument("--variant", default="regular", help="--ros: spring variant")
    return parser


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                or sys.platform in ("darwin", "win32"))


def _run_ros(args) -> int:
    from cassie_rl_ros.bringup import render_nodes, start

    env = dict(os.environ)
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    output = args.video or args.frames or ""
    nodes = render_nodes(args.policy, variant=args.variant, speed=args.speed, video=output,
                         seconds=args.seconds or 0.0)
    running = start(nodes, env=env)
    try:
        running.wait()  # until one exits: the viewer when its window closes or video is done
    except KeyboardInterrupt:
        pass
    finally:
        codes = running.stop()
    return 0 if all(c in (0, -2) for c in codes.values()) else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.ros:
        return _run_ros(args)
    offscreen = bool(args.video or args.frames) or args.headless or not _has_display()
    if offscreen and not (args.video or args.frames):
        print("cassie-rl render: no display (or --headless): give --video OUT.mp4 or "
              "--frames DIR", file=sys.stderr)
        return 2
    if offscreen:
        # Before mujoco is imported: it picks its GL backend then.
        os.environ.setdefault("MUJOCO_GL", "egl")
    import torch

    from cassie_rl_ros.policy_runner import PolicyError, PolicyRunner, default_policy_path

    torch.set_num_threads(1)
    try:
        runner = PolicyRunner.load(args.policy or [default_policy_path()], speed=args.speed,
                                   step_frequency=args.step_frequency)
    except PolicyError as err:
        print(f"cassie-rl render: {err}", file=sys.stderr)
        return 2
    for fb in runner.initial_feedback:
        if fb.warning:
            print(f"cassie-rl render: {fb.warning}", file=sys.stderr)
    rollout = Rollout(runner, seed=args.seed)
    if not offscreen:
        run_window(rollout, args.seconds or 0.0)
        return 0
    width, height = even(args.width), even(args.height)
    seconds = 10.0 if args.seconds is None else args.seconds
    try:
        sink = FrameSink(args.video or args.frames, width, height, fps=1.0 / runner.dt)
    except RuntimeError as err:
        print(f"cassie-rl render: {err}", file=sys.stderr)
        return 2
    count = render_offscreen(rollout, sink, seconds, width, height, args.fast)
    print(f"wrote {count} frames ({seconds:g} s at {1.0 / runner.dt:.4g} fps) to "
          f"{args.video or args.frames}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
