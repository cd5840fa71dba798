"""Fixtures for the CLI tests: real node processes of this package and `gemma3nvla-ros` runs over DDS.

Every process inherits test/conftest.py's loopback CYCLONEDDS_URI and the session's ROS_DOMAIN_ID.
The bridge and the camera are started once per module (each takes a second or two to come up).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[2]
CAMERA_WIDTH, CAMERA_HEIGHT = 64, 48


class NodeProc:
    """A node started as the brief's `python -c "...main()" --ros-args ...`, output to a log file."""

    def __init__(self, module: str, ros_args: list[str], log: Path):
        self.log = log
        self._out = open(log, "w")
        code = f"import sys; from {module} import main; sys.exit(main())"
        self.proc = subprocess.Popen([sys.executable, "-c", code, "--ros-args", *ros_args], stdout=self._out,
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
def start_node(tmp_path_factory) -> Callable[..., NodeProc]:
    procs: list[NodeProc] = []
    logs = tmp_path_factory.mktemp("nodes")

    def start(module: str, *ros_args: str) -> NodeProc:
        p = NodeProc(module, list(ros_args), logs / f"{module.rsplit('.', 1)[-1]}-{len(procs)}.log")
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()


@pytest.fixture(scope="module")
def robot(start_node) -> dict[str, NodeProc]:
    """so101_bridge (sim, 100 Hz) and a small synthetic camera `wrist_cam` (best-effort sensor QoS)."""
    bridge = start_node("gemma3nvla_ros.nodes.so101_bridge", "-p", "mode:=sim")
    camera = start_node("gemma3nvla_ros.nodes.camera_node", "-r", "__node:=wrist_cam", "-p", "source:=synthetic",
                        "-p", f"width:={CAMERA_WIDTH}", "-p", f"height:={CAMERA_HEIGHT}", "-p", "fps:=20.0")
    bridge.wait_for("torque on")
    camera.wait_for("synthetic ->")
    return {"bridge": bridge, "camera": camera}


def run_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """`gemma3nvla-ros <args>` as its own process (as a user runs it)."""
    return subprocess.run([sys.executable, "-m", "gemma3nvla_ros.cli", *args], capture_output=True, text=True,
                          cwd=REPO, env=dict(os.environ), timeout=timeout)


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess]:
    return run_cli
