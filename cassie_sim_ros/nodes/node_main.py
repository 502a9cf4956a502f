"""What every node's ``main()`` shares: its command line, signals, rclpy's context and a clean exit.

    def main(args=None) -> int:
        argv = command_line(args)
        code = reject_plain_arguments("sim_node", argv, SimNodeConfig)
        if code is not None:
            return code
        with ros_session("sim_node", argv):
            node = SimNode()
            with spinning(node):
                node.run()
        return 0

Ctrl-C and SIGTERM raise KeyboardInterrupt in the main thread, which then closes the node while
its context is still valid: rclpy's own handlers would shut the context down first, from the
signal, racing the node's threads and publishers. ``ros_session`` swallows that
KeyboardInterrupt (and an external shutdown), so a stopped node exits 0.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import fields

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions


def command_line(args: Sequence[str] | None) -> list[str]:
    """The node's arguments without the program name (``args``, else ``sys.argv``)."""
    return list(sys.argv[1:] if args is None else args)


def reject_plain_arguments(name: str, argv: Sequence[str], config_type: type) -> int | None:
    """``--help`` prints the parameters of ``config_type`` (a dataclass) and their defaults (0);
    any other argument outside ``--ros-args`` is an error naming the parameters (2). None: go on.
    """
    extra = rclpy.utilities.remove_ros_args([name, *argv])[1:]
    names = [f.name for f in fields(config_type)]
    if extra in (["-h"], ["--help"]):
        print(f"usage: {name} [--ros-args [--params-file FILE] [-p name:=value ...]]\n"
              "parameters (default):")
        for field_name in names:
            print(f"  {field_name} ({getattr(config_type, field_name)!r})")
        return 0
    if extra:
        print(f"{name}: unexpected arguments {extra}; set parameters with --ros-args "
              f"-p name:=value (names: {', '.join(names)})", file=sys.stderr)
        return 2
    return None


@contextlib.contextmanager
def ros_session(name: str, ros_args: Sequence[str]) -> Iterator[None]:
    """rclpy initialised for one node, with Ctrl-C and SIGTERM as KeyboardInterrupt in the main
    thread; leaving on either (or on an external shutdown) is a normal exit."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with (contextlib.suppress(KeyboardInterrupt, ExternalShutdownException),
          rclpy.init(args=[name, *ros_args], signal_handler_options=SignalHandlerOptions.NO)):
        yield


def spin_until_shutdown(executor: SingleThreadedExecutor,
                        finished: threading.Event | None = None,
                        stopping: threading.Event | None = None) -> None:
    """``executor.spin()`` that ends quietly when the executor or the context is shut down;
    ``finished`` is set once the spin and the exception that ended it are gone. Once
    ``stopping`` is set, any error ends the spin quietly: rclpy's executor can fail inside
    ``spin_once`` while another thread shuts it down (seen: its guard condition already None)."""
    try:
        executor.spin()
    except (ExternalShutdownException, KeyboardInterrupt):
        pass
    except Exception:
        if stopping is None or not stopping.is_set():
            raise
    finally:
        if finished is not None:
            finished.set()


def realtime_thread(priority: int) -> str | None:
    """Prepare the calling thread for a loop on a wall-clock schedule: sleeps end within ~1 µs
    of their deadline instead of after Linux's default 50 µs timer slack and, for a
    ``priority`` in 1..98, SCHED_FIFO, so no ordinary thread delays its wake-ups. Returns why
    the priority was refused (it needs root, CAP_SYS_NICE or an rtprio limit), else None."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK, 1 ns
    except (OSError, AttributeError):
        pass  # best effort: not Linux
    if priority:
        try:  # this thread only (Linux: pid 0 is the calling thread)
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        except (PermissionError, AttributeError, OSError) as err:
            return f"rt_priority {priority} refused ({err}); normal scheduling"
    return None


@contextlib.contextmanager
def spinning(node: Node, timeout: float = 2.0,
             rt_priority: int = 0) -> Iterator[threading.Thread]:
    """The node's callbacks served on a background thread while the main thread runs the loop;
    with ``rt_priority`` (1..98) that thread runs SCHED_FIFO (:func:`realtime_thread`).

    On exit the thread is out of rclpy before the node is destroyed: a thread still waiting in
    rclpy's C++ when the context goes aborts the process ("terminate called ..."). So does one
    still freeing the spin's last frames (torch tensors release the GIL while they go) when the
    interpreter finalises, and ``Thread.join`` was measured returning before that (1 exit in 3
    aborted): the ``finished`` event, set after them, is what the exit waits for. A callback
    that outlasts ``timeout`` keeps its node: the process is ending and reclaims both.
    """
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    finished, stopping = threading.Event(), threading.Event()
    def spin():
        refused = realtime_thread(rt_priority) if rt_priority else None
        if refused:
            node.get_logger().warning(f"{refused} for the callbacks")
        spin_until_shutdown(executor, finished, stopping)

    spinner = threading.Thread(target=spin, name=f"{node.get_name()}-spin", daemon=True)
    spinner.start()
    try:
        yield spinner
    finally:
        stopping.set()
        executor.shutdown(timeout_sec=timeout)
        if finished.wait(timeout=timeout):
            spinner.join(timeout=timeout)
            node.destroy_node()


__all__ = ["command_line", "reject_plain_arguments", "ros_session", "spin_until_shutdown",
           "realtime_thread", "spinning"]
