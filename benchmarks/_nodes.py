"""Shared by the node benchmarks: DDS environment (loopback, a domain in 200..230) and node processes."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def dds_env() -> None:
    os.environ["CYCLONEDDS_URI"] = f"file://{REPO / 'config' / 'cyclonedds_loopback.xml'}"
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(200, 230)))
    os.environ.setdefault("GEMMA3NVLA_ROS_RUNTIME", "dds")


def start(module: str, *ros_args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module, "--ros-args", *ros_args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO,
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
