"""Shared fixtures: an isolated ROS 2 domain per test and node processes that are always stopped."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import signal
import subprocess
import tempfile
import zlib

import pytest

from cassie_rl_ros.ros_env import ros_subprocess_env

# Domain ids 1..101: 0 is everyone's default, and on Linux ids above 101 can clash with
# ephemeral ports. Worker k of n takes ids k, k+n, k+2n, ... (mod 101), so xdist workers never
# share an id until one has used 101/n of them; the offset from the run id makes two pytest runs
# on the same machine unlikely to start on the same ids.
_WORKER = int(os.environ.get('PYTEST_XDIST_WORKER', 'gw0')[2:] or 0)
_WORKERS = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
_OFFSET = zlib.crc32(os.environ.get('PYTEST_XDIST_TESTRUNUID', str(os.getpid())).encode())
_COUNTER = itertools.count()


@pytest.fixture
def ros_domain_id():
    """A ROS_DOMAIN_ID in 1..101 that no other test on this machine uses at the same time.

    Within a run the worker stride keeps ids apart; across runs (two checkouts tested at once)
    an exclusive lock file per id does: with a shared id one run's policy node acted on the
    other run's simulator states (seen in the bridge-vs-simulator-node comparison).
    """
    for _ in range(101):
        domain_id = 1 + (_OFFSET + _WORKER + _WORKERS * next(_COUNTER)) % 101
        lock = open(os.path.join(tempfile.gettempdir(),
                                 f'cassie_rl_ros_test_domain_{domain_id}.lock'), 'w')
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        with lock:  # closing the file releases the lock
            yield domain_id
        return
    pytest.fail('ROS domain ids 1..101 are all taken by other test runs on this machine')


@pytest.fixture
def ros_env(ros_domain_id, tmp_path, monkeypatch) -> dict[str, str]:
    """Environment for node processes; also applied to this process for in-test rclpy use."""
    env = ros_subprocess_env(ros_domain_id, str(tmp_path / 'ros_log'))
    for key in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE', 'ROS_LOG_DIR',
                'RMW_IMPLEMENTATION', 'AMENT_PREFIX_PATH'):
        monkeypatch.setenv(key, env[key])
    return env


@pytest.fixture
def start_node(ros_env, tmp_path):
    """Start ``cmd`` (a list) in its own process group; stopped with SIGINT, then SIGKILL.

    Output goes to ``proc.log_path`` (a file, so a chatty node never blocks on a full pipe).
    """
    procs: list[subprocess.Popen] = []

    def start(cmd: list[str], **kwargs) -> subprocess.Popen:
        log_path = tmp_path / f'node{len(procs)}.log'
        with open(log_path, 'wb') as log:
            proc = subprocess.Popen(cmd, env=kwargs.pop('env', ros_env), stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True, **kwargs)
        proc.log_path = log_path
        procs.append(proc)
        return proc

    yield start

    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        # Also ends anything the node left behind in its group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def pytest_terminal_summary(terminalreporter):
    """An expected failure still says why, briefly: CI's log is all a later look has."""
    for report in terminalreporter.stats.get("xfailed", []):
        lines = str(report.longrepr).strip().splitlines()
        errors = [line for line in lines if line.startswith("E ")]
        terminalreporter.write_line(f"xfailed {report.nodeid} ({lines[-1][:200]}):")
        for line in errors[:30]:
            terminalreporter.write_line(f"    {line[:300]}")
