"""The tests' own rclpy node, in its own context and spun by hand, and a node process's log."""

from __future__ import annotations

import os
import time
from pathlib import Path

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor


class ProbeNode:
    """A test's own rclpy node: subclasses add the subscriptions and publishers they need."""

    def __init__(self, name: str = "probe"):
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_until(self, done, timeout: float, every=None, period: float = 0.02) -> bool:
        """Spin until ``done()`` (False after ``timeout`` s); call ``every()`` each ``period``
        meanwhile (a policy publishing targets)."""
        end = next_call = time.monotonic()
        end += timeout
        while not done():
            now = time.monotonic()
            if now > end:
                return False
            if every is not None and now >= next_call:
                every()
                next_call = now + period
            self.executor.spin_once(timeout_sec=0.002)
        return True

    def spin_for(self, seconds: float, every=None, period: float = 0.01):
        """Spin for ``seconds``; call ``every()`` each ``period``."""
        end = next_call = time.monotonic()
        end += seconds
        while (now := time.monotonic()) < end:
            if every is not None and now >= next_call:
                every()
                next_call += period
            self.executor.spin_once(timeout_sec=0.002)

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def log_of(proc) -> str:
    """What a node process started by the ``start_node`` fixture has printed so far."""
    return Path(proc.log_path).read_text(errors="replace")


def sched_fifo_threads(pid: int) -> dict[int, int]:
    """The process's threads that run SCHED_FIFO, with their priorities (thread id: priority;
    the main thread's id is the process id)."""
    fifo = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        tid = int(task.name)
        try:
            if os.sched_getscheduler(tid) == os.SCHED_FIFO:
                fifo[tid] = os.sched_getparam(tid).sched_priority
        except (ProcessLookupError, PermissionError):
            pass  # a thread that ended meanwhile
    return fifo
