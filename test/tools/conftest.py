"""Fixtures for the CLI tests: real rclpy node processes and `gemma3nvla-ros` runs, each its own process.

Every process inherits the session's ROS_DOMAIN_ID and stays on loopback. The bridge and the camera
are started once per module (each takes a second or two to come up).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[2]
# Nothing may leave 127.0.0.0/8 (test/conftest.py says so too; this directory never runs without it).
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"


class Proc:
    """A process started with `python -c <code> <args>`, output to a log file."""

    def __init__(self, code: str, args: list[str], log: Path):
        self.log = log
        self._out = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=self._out,
                                     stderr=subprocess.STDOUT, cwd=REPO, env=dict(os.environ))

    @property
    def output(self) -> str:
        self._out.flush()
        return self.log.read_text()

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not seen:\n{self.output}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()


@pytest.fixture(scope="module")
def start_process(tmp_path_factory) -> Callable[..., Proc]:
    """start_process(code, *args, name=...): a Python process, stopped (SIGINT) after the module."""
    procs: list[Proc] = []
    logs = tmp_path_factory.mktemp("procs")

    def start(code: str, *args: str, name: str = "proc") -> Proc:
        p = Proc(code, list(args), logs / f"{name}-{len(procs)}.log")
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()


@pytest.fixture(scope="module")
def start_node(start_process) -> Callable[..., Proc]:
    """start_node(module, *ros_args): one of this package's nodes, as `ros2 run` would start it."""
    def start(module: str, *ros_args: str) -> Proc:
        code = f"import sys; from {module} import main; sys.exit(main())"
        return start_process(code, "--ros-args", *ros_args, name=module.rsplit(".", 1)[-1])
    return start


@dataclass
class Robot:
    bridge: Proc
    camera: Proc
    camera_width: int
    camera_height: int


@pytest.fixture(scope="module")
def robot(start_node) -> Robot:
    """so101_bridge (sim, 100 Hz) and a small synthetic camera `wrist_cam` (best-effort sensor QoS)."""
    width, height = 64, 48
    bridge = start_node("gemma3nvla_ros.nodes.so101_bridge", "-p", "mode:=sim")
    camera = start_node("gemma3nvla_ros.nodes.camera_node", "-r", "__node:=wrist_cam", "-p", "source:=synthetic",
                        "-p", f"width:={width}", "-p", f"height:={height}", "-p", "fps:=20.0")
    bridge.wait_for("torque on")
    camera.wait_for("synthetic ->")
    return Robot(bridge, camera, width, height)


def _cli_command(args: tuple[str, ...]) -> list[str]:
    return [sys.executable, "-m", "gemma3nvla_ros.cli", *args]


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess]:
    """cli(*args, timeout=30): `gemma3nvla-ros <args>` run to completion as its own process."""
    def run(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        return subprocess.run(_cli_command(args), capture_output=True, text=True, cwd=REPO, env=dict(os.environ),
                              timeout=timeout)
    return run


@pytest.fixture
def cli_popen():
    """cli_popen(*args): `gemma3nvla-ros <args>` left running (stdout/stderr pipes), killed at teardown."""
    procs: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        p = subprocess.Popen(_cli_command(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=REPO, env=dict(os.environ))
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(5)
        for stream in (p.stdout, p.stderr):
            if stream and not stream.closed:
                stream.close()
