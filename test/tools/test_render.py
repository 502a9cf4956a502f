"""cassie-rl render and viewer_node: offscreen frames show the robot, MP4 output, the keys, and
the ROS viewer's reconstruction of the simulator node's robot.

Offscreen rendering runs in subprocesses with MUJOCO_GL=egl: MuJoCo picks its GL backend when it
is first imported, which in this pytest process has already happened.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from cassie_rl_ros.policy_runner import PolicyRunner
from cassie_rl_ros.tools.render import (KEY_BACKSPACE, KEY_LEFT, KEY_PAGE_UP, KEY_UP, KEYS,
                                        PUSH_FORCE, Rollout, StateMirror)
from cassie_sim_ros import constants as C
from cassie_sim_ros.sim import CassieSim, SimConfig
from tiny_policy import train_tiny_policy

SIZE = (160, 120)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    return train_tiny_policy(tmp_path_factory.mktemp("policy"))


def gl_env() -> dict[str, str]:
    env = dict(os.environ, MUJOCO_GL="egl")
    env.pop("DISPLAY", None)
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    return env


def run_python(code: str, timeout: float = 240.0) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=gl_env(),
                            capture_output=True, text=True, timeout=timeout)
    if "EGL" in result.stderr and result.returncode != 0 and "render" not in result.stdout:
        pytest.skip(f"no offscreen GL here: {result.stderr[-500:]}")
    assert result.returncode == 0, result.stderr
    return result.stdout


def robot_pixels(frame: np.ndarray, empty: np.ndarray) -> float:
    """Share of pixels (below the text overlay) that differ from the robot-less scene."""
    rows = slice(frame.shape[0] // 4, None)
    diff = np.abs(frame[rows].astype(int) - empty[rows].astype(int)).max(axis=2)
    return float((diff > 30).mean())


def test_offscreen_frames_show_the_robot(policy_dir, tmp_path):
    frames = tmp_path / "frames"
    out = run_python(f"""
        import json, numpy as np, mujoco
        from cassie_rl_ros.tools import render
        rc = render.main(["--policy", {str(policy_dir)!r}, "--frames", {str(frames)!r},
                          "--seconds", "0.12", "--width", "{SIZE[0]}", "--height", "{SIZE[1]}",
                          "--fast", "--speed", "0.4"])
        assert rc == 0, rc
        # The same scene and camera without the robot: every geom but the floor invisible.
        from cassie_sim_ros.sim import CassieSim
        sim = CassieSim()
        model = sim.mj_model(0)
        floor = model.geom("floor").id
        for g in range(model.ngeom):
            if g != floor:
                model.geom_rgba[g, 3] = 0.0
        data = mujoco.MjData(model)
        sim.mj_data(0, data)
        view = render.Offscreen(model, {SIZE[0]}, {SIZE[1]}, fast=True)
        np.save({str(tmp_path / "empty.npy")!r}, view.render(data))
        print(json.dumps({{"ok": True}}))
    """)
    assert json.loads(out.strip().splitlines()[-1])["ok"]
    from PIL import Image

    files = sorted(frames.glob("frame_*.png"))
    assert len(files) == 5  # t = 0 and 4 policy periods of 0.03 s
    first = np.asarray(Image.open(files[0]).convert("RGB"))
    empty = np.load(tmp_path / "empty.npy")
    assert first.shape == empty.shape == (SIZE[1], SIZE[0], 3)
    assert first.std() > 10.0  # not blank
    assert robot_pixels(first, empty) > 0.02, robot_pixels(first, empty)
    # The overlay names the commanded speed.
    assert np.abs(first[:12].astype(int) - empty[:12].astype(int)).max() > 100


def test_headless_video_is_an_mp4(policy_dir, tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    video = tmp_path / "walk.mp4"
    result = subprocess.run(
        [sys.executable, "-m", "cassie_rl_ros.tools.cli", "render", "--policy", str(policy_dir),
         "--video", str(video), "--seconds", "0.12", "--width", str(SIZE[0]), "--height",
         str(SIZE[1]), "--fast"], env=gl_env(), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    assert "wrote 5 frames" in result.stdout
    head = video.read_bytes()[:12]
    assert head[4:8] == b"ftyp" and video.stat().st_size > 1000


def test_no_display_and_no_output_is_a_clear_error(policy_dir):
    result = subprocess.run(
        [sys.executable, "-m", "cassie_rl_ros.tools.cli", "render", "--policy", str(policy_dir),
         "--headless"], env=gl_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--video" in result.stderr


def test_keys_change_commands_push_and_reset(policy_dir):
    rollout = Rollout(PolicyRunner.load(policy_dir, speed=0.5))
    for _ in range(3):
        rollout.step()
    assert rollout.apply(*KEYS[KEY_UP]) is None
    assert rollout.runner.command[0] == pytest.approx(0.6)
    warning = rollout.apply(*KEYS[KEY_PAGE_UP])  # trained at stepping frequency 1 only
    assert warning and "clamped" in warning and rollout.runner.step_frequency == 1.0
    rollout.apply(*KEYS[KEY_LEFT])
    state = rollout.sim.get_state()
    assert state["push_steps"][0] > 0
    pelvis = rollout.sim.mj_model(0).body("pelvis").id
    force = rollout.sim.mj_data(0).xfrc_applied[pelvis, :3]
    assert np.linalg.norm(force) == pytest.approx(PUSH_FORCE)
    yaw = rollout.yaw()
    assert force @ np.array([-np.sin(yaw), np.cos(yaw), 0.0]) > 0  # to the robot's left
    for _ in range(3):
        rollout.step()
    rollout.runner.task.target_heading[0] = 2.0
    rollout.apply(*KEYS[KEY_BACKSPACE])
    assert np.allclose(rollout.sim.qpos[0, :3], CassieSim().qpos[0, :3])
    assert rollout.runner.task.target_heading[0] == 0.0  # taken again from the IMU


def test_state_mirror_rebuilds_the_pose_from_the_published_joints():
    sim = CassieSim(SimConfig(timestep=0.002))
    sim.set_pd(C.NEUTRAL_MOTOR_OFFSET + np.random.default_rng(1).normal(0.0, 0.3, 10))
    import mujoco

    model = sim.mj_model(0)
    truth = mujoco.MjData(model)
    mirror = StateMirror(sim.mj_model(0))
    names = list(C.MOTOR_NAMES + C.PASSIVE_JOINT_NAMES)
    for _ in range(10):  # the viewer follows a moving robot frame by frame
        sim.step(15)
        truth.qpos[:] = sim.qpos[0]
        mujoco.mj_forward(model, truth)
        pose = mirror.update(truth.qpos[:3], truth.qpos[3:7], names,
                             [truth.qpos[mirror.qadr[n]] for n in names])
    assert mirror.residual() < 2e-3
    assert np.abs(pose.geom_xpos - truth.geom_xpos).max() < 0.01


def test_viewer_node_renders_the_simulator_nodes_robot(policy_dir, tmp_path, ros_env):
    pytest.importorskip("rclpy")
    from cassie_rl_ros.bringup import render_nodes, start

    frames = tmp_path / "frames"
    nodes = render_nodes([str(policy_dir)], speed=0.3, video=str(frames), seconds=1.0,
                         sim_parameters={"actuator": "fast"},
                         viewer_parameters={"width": SIZE[0], "height": SIZE[1], "fast": True})
    env = dict(ros_env, MUJOCO_GL="egl")
    env.pop("DISPLAY", None)
    running = start(nodes, env=env, log_dir=tmp_path / "logs")
    try:
        policy_log = running.logs["policy_node"]
        end = time.monotonic() + 180.0
        while time.monotonic() < end and not (
                running.procs["viewer_node"].poll() is not None
                and "inputs fresh: publishing" in policy_log.read_text(errors="replace")):
            time.sleep(0.2)
        logs = {n: p.read_text(errors="replace") for n, p in running.logs.items()}
        assert running.procs["viewer_node"].poll() == 0, logs
        assert "inputs fresh: publishing" in logs["policy_node"], logs
    finally:
        codes = running.stop()
    assert codes["sim_node"] == 0 and codes["policy_node"] == 0, (
        codes, {n: p.read_text(errors="replace")[-2000:] for n, p in running.logs.items()})
    files = sorted(frames.glob("frame_*.png"))
    # 1 s of sim time at 30 fps; a real-time simulation does not wait for a slow renderer, so
    # frames it could not keep up with are dropped.
    assert 3 <= len(files) <= 31, len(files)
    from PIL import Image

    frame = np.asarray(Image.open(files[-1]).convert("RGB"))
    assert frame.std() > 10.0
    assert "Traceback" not in "".join(p.read_text() for p in (tmp_path / "logs").iterdir())
    assert Path(files[0]).stat().st_size > 0
