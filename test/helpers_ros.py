"""Helpers shared by the ROS tests, imported absolutely (``from helpers_ros import spin_until``):
setup.cfg puts test/ on pytest's path. Not relative imports from a conftest: ROS' launch_testing
pytest plugin imports test modules without their package, where those fail."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def spin_until(rclpy, node, condition: Callable[[], bool], timeout: float) -> bool:
    """Spin ``node`` until ``condition()`` or the timeout (a generous sanity bound, not a timing test)."""
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
