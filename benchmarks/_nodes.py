"""Shared by the node benchmarks: the loopback ROS 2 / Fast DDS environment, and node processes."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FASTDDS_PROFILE = REPO / "config" / "fastdds_loopback.xml"
# glibc keeps 2.7 MB image buffers in the heap instead of mmap/munmap-ing them for every message: rclpy
# allocates fresh message buffers on each take, and page-faulting them in costs the subscriber up to
# 3x the CPU and doubles image latency on a loaded machine (docs/NETWORKING.md).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "16777216", "MALLOC_TRIM_THRESHOLD_": "67108864"}


def ros_env(env: dict[str, str] | None = None, profile: str | os.PathLike | None = FASTDDS_PROFILE,
            malloc: bool = True) -> dict[str, str]:
    """Set (in ``env``, default ``os.environ``) what every process of a benchmark needs, and return it.

    Loopback only: LOCALHOST discovery keeps participants from looking beyond this host, and the
    profile pins Fast DDS to shared memory and 127.0.0.1 (docs/NETWORKING.md). A random domain in
    150..199 unless ROS_DOMAIN_ID is already set, so that concurrent runs on a shared machine never
    hear each other. ``profile=None`` / ``malloc=False`` leave Fast DDS / glibc on their defaults
    (what a ROS user gets), for comparisons. Only processes started after this call see it.
    """
    env = os.environ if env is None else env
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(150, 199)))
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    if profile is None:
        env.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    else:
        env["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(profile)
    for k, v in MALLOC_ENV.items():
        if malloc:
            env.setdefault(k, v)
        else:
            env.pop(k, None)
    # Leftovers of the built-in Cyclone runtime: a stale one would force the old runtime in our nodes.
    env.pop("CYCLONEDDS_URI", None)
    env.pop("GEMMA3NVLA_ROS_RUNTIME", None)
    return env


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
