"""Helpers for node tests: node processes over DDS (real processes, the environment from
test/conftest.py: loopback Cyclone DDS, a random domain) and an in-process listener node."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


class NodeProcess:
    def __init__(self, module: str, ros_args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--ros-args", *ros_args],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO, env=dict(os.environ),
        )

    @property
    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def wait_exit(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def stop(self, timeout: float = 15.0, sig: int = signal.SIGINT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def start_node(tmp_path):
    procs: list[NodeProcess] = []

    def start(module: str, *ros_args: str, name: str = "node") -> NodeProcess:
        proc = NodeProcess(module, list(ros_args), tmp_path / f"{name}-{len(procs)}.log")
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()


@pytest.fixture(scope="module")
def ros():
    from gemma3nvla_ros.ros import rclpy

    rclpy.init(args=[])
    yield rclpy
    rclpy.try_shutdown()


@pytest.fixture
def listener(ros):
    from gemma3nvla_ros.ros import Node

    node = Node(f"test_listener_{os.getpid()}_{int(time.monotonic() * 1000) % 100000}")
    yield node
    node.destroy_node()


def spin_until(rclpy, node, condition: Callable[[], bool], timeout: float) -> bool:
    """Spin the listener until ``condition()`` or the timeout (a generous sanity bound, not a timing test)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
        if condition():
            return True
    return condition()


def spin_for(rclpy, node, seconds: float, each: Callable[[], None] | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.02)
        if each:
            each()
