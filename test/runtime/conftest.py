"""Fixtures for the runtime tests: an initialised default context, and helper processes.

Every process inherits test/conftest.py's loopback CYCLONEDDS_URI and the session's ROS_DOMAIN_ID.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def rclpy():
    from gemma3nvla_ros.runtime import rclpy_api
    rclpy_api.init(args=[])
    yield rclpy_api
    rclpy_api.try_shutdown()


def _wait_until(pred: Callable[[], bool], timeout: float = 15.0, step: Optional[Callable[[], None]] = None) -> bool:
    """Poll ``pred`` until true; ``step`` (e.g. a spin_once) runs between polls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        if step is not None:
            step()
        else:
            time.sleep(0.02)
    return pred()


class Proc:
    """A helper Python process running a small node script; its stdout is collected line by line."""

    def __init__(self, code: str, *args: str, env: Optional[dict] = None):
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env["PYTHONUNBUFFERED"] = "1"
        if env:
            full_env.update(env)
        self.p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, env=full_env, cwd=str(REPO))
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        for line in self.p.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.p.poll() is not None and not self._t.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"{text!r} not seen; output:\n" + "\n".join(self.lines))

    def stop(self, sig=None) -> int:
        import signal
        if self.p.poll() is None:
            self.p.send_signal(sig or signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self._t.join(5)
        return self.p.returncode


@pytest.fixture
def proc():
    started: list[Proc] = []

    def start(code: str, *args: str, env: Optional[dict] = None) -> Proc:
        p = Proc(code, *args, env=env)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


@pytest.fixture(name="wait_until")
def wait_until_fixture():
    return _wait_until
