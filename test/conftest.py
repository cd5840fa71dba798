"""Test-wide settings and the helpers every ROS test uses.

Every ROS participant the tests start — this process and every node process it spawns (they inherit
the environment) — discovers on loopback only and on a domain of its own, so concurrent runs on one
machine never hear each other and nothing is sent beyond 127.0.0.0/8. These are ROS 2's own settings
(rcl reads them), forced rather than defaulted: a test must never fall back to discovery on another
interface.
"""
from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

import pytest

from gemma3nvla_ros.network import loopback_environment

REPO = Path(__file__).resolve().parents[1]
# Shared helpers (helpers_ros, helpers_bridge, helpers_policy) import absolutely from test/. Done here
# rather than with pytest's `pythonpath` option, which Humble's pytest 6 does not know.
if str(REPO / "test") not in sys.path:
    sys.path.insert(0, str(REPO / "test"))

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # Iron and later
if os.environ.get("ROS_DISTRO") == "humble":
    os.environ["ROS_LOCALHOST_ONLY"] = "1"  # Humble's only switch (later distros warn that it is deprecated)
os.environ.pop("ROS_STATIC_PEERS", None)
os.environ.pop("CYCLONEDDS_URI", None)
os.environ.pop("GEMMA3NVLA_ROS_RUNTIME", None)
os.environ.update(loopback_environment(os.environ))  # Fast DDS profile, malloc thresholds (child processes)
os.environ["ROS_DOMAIN_ID"] = os.environ.get("GEMMA3NVLA_TEST_DOMAIN_ID") or str(random.SystemRandom().randint(1, 100))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def ros():
    """rclpy, initialised for this test module's in-process listener nodes."""
    import rclpy

    rclpy.init(args=[])
    yield rclpy
    rclpy.try_shutdown()


@pytest.fixture
def listener(ros):
    """A node in the test process: subscribes to what the node processes publish, publishes commands."""
    from rclpy.node import Node

    node = Node(f"test_listener_{os.getpid()}_{time.monotonic_ns() % 100_000}")
    yield node
    node.destroy_node()
