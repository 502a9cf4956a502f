"""Bring-up without ``ros2 launch``: the nodes of ``launch/render.launch.py`` as subprocesses.

``launch`` and ``launch_ros`` are not installable from PyPI, so the tests, ``cassie-rl render
--ros`` and the benchmarks start the same nodes with the same parameters from here. Pure Python:
no rclpy, no launch.

    from cassie_rl_ros.bringup import render_nodes, start
    with start(render_nodes(policy=["runs/walk"], speed=0.5)) as nodes:
        nodes.wait()

The launch file and :func:`render_nodes` must stay in step: the same nodes (simulator in
real-time mode, policy node on sim time, viewer, optional recorder) with the same parameters.
``test/ros/test_policy_node.py`` checks the launch file's argument and parameter names against
:data:`RENDER_ARGUMENTS` and :data:`RECORDED_TOPICS`.

:func:`lockstep_sim_parameters` gives the simulator parameters that reproduce a policy's training
simulation exactly (timestep, actuators, gains, one policy period per target): what a test
comparing the node with the env, or a benchmark, runs.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SIM_NODE = "cassie_sim_ros.nodes.sim_node"
POLICY_NODE = "cassie_rl_ros.nodes.policy_node"
VIEWER_NODE = "cassie_rl_ros.nodes.viewer_node"
RECORDER = "cassie_rl_ros.tools.record"

RENDER_ARGUMENTS = {
    "variant": ("regular", "spring variant of the simulated robot: regular | stiff | soft"),
    "policy": ("", "saved policy (run folder, checkpoint or policy.safetensors); '' = the "
               "shipped default policy"),
    "speed": ("0.0", "initial forward speed command (m/s)"),
    "video": ("", "headless: render offscreen to this MP4 (or PNG frames into this folder) "
              "instead of opening a window; '' = window"),
    "seconds": ("0.0", "headless: stop recording the video after this much sim time (0: until "
                "shutdown)"),
    "record": ("false", "also record the topics to a rosbag2 bag"),
    "bag": ("cassie_bag", "bag folder to create when record is true (must not exist)"),
}
"""Arguments of render.launch.py: name -> (default, description)."""

RECORDED_TOPICS = ("/clock", "/cassie/joint_states", "/cassie/imu", "/cassie/ground_truth",
                   "/cassie/pd_targets", "/cassie/policy_action", "/cassie/cmd_vel",
                   "/cassie/step_frequency", "/cassie/foot_forces/left",
                   "/cassie/foot_forces/right", "/cassie/foot_positions/left",
                   "/cassie/foot_positions/right", "/cassie/state_estimate")


@dataclass(frozen=True)
class NodeSpec:
    """One process to start: a name for logs and its full command line."""

    name: str
    argv: tuple[str, ...]


def param_value(value) -> str:
    """A parameter value as ``-p name:=VALUE`` text (YAML, as rcl parses it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(param_value(v) if not isinstance(v, str) else _quote(v)
                               for v in value) + "]"
    return str(value)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def node_command(module: str, parameters: Mapping[str, object] = (), args: Sequence[str] = ()
                 ) -> tuple[str, ...]:
    """``python -m module [args] --ros-args -p name:=value ...`` with this interpreter."""
    argv = [sys.executable, "-m", module, *args]
    if parameters:
        argv.append("--ros-args")
        for name, value in parameters.items():
            argv += ["-p", f"{name}:={param_value(value)}"]
    return tuple(argv)


def publish_rate_for(timestep: float, policy_period: float, highest: float = 400.0) -> float:
    """The highest state rate (Hz) at most ``highest`` whose period is a whole number of physics
    steps and divides the policy period (so a state arrives at every policy step)."""
    steps = int(round(policy_period / timestep))
    for k in range(1, steps + 1):
        if steps % k == 0 and 1.0 / (k * timestep) <= highest + 1e-9:
            return 1.0 / (k * timestep)
    return 1.0 / (steps * timestep)


def _physics_parameters(env_config) -> dict[str, object]:
    """The env's physics timestep, actuator model, gains and policy period, and a state rate
    that fits."""
    sim = env_config.sim
    return {"timestep": sim.timestep, "actuator": sim.actuator,
            "policy_period": env_config.policy_dt,
            "kp": [float(x) for x in sim.kp], "kd": [float(x) for x in sim.kd],
            "publish_rate": publish_rate_for(sim.timestep, env_config.policy_dt)}


def lockstep_sim_parameters(env_config, **overrides) -> dict[str, object]:
    """Simulator node parameters reproducing the env's simulation, one policy period per target.

    The simulator node has no parameters for the faithful pipeline's parts, so an env that
    switched some off (``sim.pipeline``) cannot be reproduced exactly: ValueError.
    """
    from cassie_sim_ros.actuator import PipelineConfig

    sim = env_config.sim
    if sim.actuator == "faithful" and sim.pipeline != PipelineConfig():
        raise ValueError("the env's sim.pipeline differs from the default; sim_node always runs "
                         "the full faithful pipeline")
    params = {
        "mode": "lockstep", "variant": sim.variant, **_physics_parameters(env_config),
        "sensor_noise": sim.sensor_noise,
        # Longer than one policy period, or every lockstep target would end in damping.
        "watchdog_timeout": max(0.1, 2 * env_config.policy_dt),
    }
    params.update(overrides)
    return params


def render_sim_parameters(policy: Sequence[str] | str = ()) -> dict[str, object]:
    """Real-time simulator parameters that match the policy's training simulation: its physics
    timestep, actuator model, PD gains and policy period, and a state rate whose period divides
    the policy's.

    A policy trained at 2 ms physics runs 4x cheaper (and as trained) than at the node's 0.5 ms
    default. ``policy`` as for the policy node ('' or empty: the shipped default). A policy that
    cannot be loaded gives {} (the simulator's defaults): the policy node reports why.
    """
    from cassie_rl_ros.policy_runner import PolicyError, default_policy_path, load_policy_files

    paths = [policy] if isinstance(policy, str) else list(policy)
    paths = [str(p) for p in paths if p]
    try:
        _, env_config = load_policy_files(paths or [default_policy_path()])
    except PolicyError:
        return {}
    return _physics_parameters(env_config)


def render_nodes(policy: Sequence[str] | str = (), variant: str = "regular", speed: float = 0.0,
                 video: str = "", seconds: float = 0.0, record: bool = False,
                 bag: str = "cassie_bag", viewer: bool = True,
                 sim_parameters: Mapping[str, object] | None = None,
                 policy_parameters: Mapping[str, object] | None = None,
                 viewer_parameters: Mapping[str, object] | None = None) -> list[NodeSpec]:
    """The nodes of ``render.launch.py`` with its arguments (plus extra parameters)."""
    paths = [policy] if isinstance(policy, str) else list(policy)
    paths = [str(p) for p in paths if p]
    sim = {"variant": variant, "mode": "realtime", **render_sim_parameters(paths),
           **(sim_parameters or {})}
    pol: dict[str, object] = {"speed": float(speed), "use_sim_time": True,
                              "reset_sim_on_start": True}
    if paths:
        pol["policy"] = paths[0] if len(paths) == 1 else paths
    pol.update(policy_parameters or {})
    nodes = [NodeSpec("sim_node", node_command(SIM_NODE, sim)),
             NodeSpec("policy_node", node_command(POLICY_NODE, pol))]
    if viewer:
        view: dict[str, object] = {"use_sim_time": True, "speed": float(speed)}
        if video:  # '' is the viewer's default; rcl reads an empty `-p video:=` as no value
            view.update(video=str(video), seconds=float(seconds))
        view.update(viewer_parameters or {})
        nodes.append(NodeSpec("viewer_node", node_command(VIEWER_NODE, view)))
    if record:
        nodes.append(NodeSpec("recorder", (sys.executable, "-m", RECORDER, str(bag),
                                           *RECORDED_TOPICS)))
    return nodes


@dataclass
class RunningNodes:
    """Started processes; ``stop()`` sends SIGINT (as Ctrl-C), then SIGKILL after a grace."""

    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def poll(self) -> dict[str, int | None]:
        return {name: p.poll() for name, p in self.procs.items()}

    def wait(self, timeout: float | None = None) -> None:
        """Until any process exits (or ``timeout`` s)."""
        end = None if timeout is None else time.monotonic() + timeout
        while all(p.poll() is None for p in self.procs.values()):
            if end is not None and time.monotonic() > end:
                return
            time.sleep(0.1)

    def stop(self, grace: float = 10.0) -> dict[str, int]:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
        end = time.monotonic() + grace
        codes = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                codes[name] = proc.wait()
        return codes

    def __enter__(self) -> RunningNodes:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start(nodes: Sequence[NodeSpec], env: Mapping[str, str] | None = None,
          log_dir: str | Path | None = None) -> RunningNodes:
    """Start each node in its own process group (output to ``log_dir/<name>.log``, else
    inherited)."""
    running = RunningNodes()
    try:
        for spec in nodes:
            kwargs = {}
            if log_dir is not None:
                path = Path(log_dir) / f"{spec.name}.log"
                path.parent.mkdir(parents=True, exist_ok=True)
                running.logs[spec.name] = path
                kwargs["stdout"] = open(path, "wb")  # noqa: SIM115 (closed below)
                kwargs["stderr"] = subprocess.STDOUT
            try:
                running.procs[spec.name] = subprocess.Popen(
                    list(spec.argv), env=None if env is None else dict(env),
                    start_new_session=True, **kwargs)
            finally:
                if "stdout" in kwargs:
                    kwargs["stdout"].close()
    except BaseException:
        running.stop(grace=2.0)
        raise
    return running


__all__ = ["NodeSpec", "RECORDED_TOPICS", "RENDER_ARGUMENTS", "RunningNodes",
           "lockstep_sim_parameters", "node_command", "publish_rate_for", "render_nodes",
           "render_sim_parameters", "start"]
