"""Node processes for node tests: real processes on real rclpy, with the environment from
test/conftest.py (loopback discovery, a domain of the test session's own)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
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


@pytest.fixture
def arm(listener):
    from helpers_bridge import Arm

    return Arm(listener)


@pytest.fixture
def standalone_sim(tmp_path):
    """sim_servo_bus as its own process, so the servos outlive the bridge and can be inspected."""
    procs = []

    def start(*extra: str, calibration: str | None = None, link: str | None = None):
        link = link or tmp_path / f"arm{len(procs)}"
        cmd = [sys.executable, "-m", "gemma3nvla_ros.hardware.sim_bus", "--link", str(link), "--exit-on-stdin-eof"]
        if calibration:
            cmd += ["--calibration", calibration]
        proc = subprocess.Popen([*cmd, *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == str(link)
        return str(link)

    start.procs = procs
    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.stdin.close()
            proc.wait(timeout=10)
