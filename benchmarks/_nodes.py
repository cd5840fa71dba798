"""Shared by the node benchmarks: the loopback ROS 2 / Fast DDS environment, and node processes."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from gemma3nvla_ros.network import read_env_file

REPO = Path(__file__).resolve().parents[1]
FASTDDS_PROFILE = REPO / "config" / "fastdds_loopback.xml"
LOOPBACK_ENV = REPO / "config" / "loopback.env"
MALLOC_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def ros_env(env: dict[str, str] | None = None, profile: str | os.PathLike | None = FASTDDS_PROFILE,
            malloc: bool = True) -> dict[str, str]:
    """Set (in ``env``, default ``os.environ``) what every process of a benchmark needs, and return it.

    config/loopback.env (LOCALHOST discovery, Fast DDS, glibc malloc thresholds), the Fast DDS profile
    by absolute path, and a random domain in 150..199 unless ROS_DOMAIN_ID is already set, so that
    concurrent runs on a shared machine never hear each other (docs/NETWORKING.md). ``profile=None`` /
    ``malloc=False`` leave Fast DDS / glibc on their defaults (what a ROS user has), for comparisons.
    Only processes started after this call see it.
    """
    env = os.environ if env is None else env
    for key, value in read_env_file(LOOPBACK_ENV).items():
        if key in MALLOC_VARS:
            if malloc:
                env.setdefault(key, value)
            else:
                env.pop(key, None)
        else:
            env[key] = value
    env.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(150, 199)))
    if profile is None:
        env.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    else:
        env["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(Path(profile).resolve())
    # Leftovers of the built-in Cyclone runtime: GEMMA3NVLA_ROS_RUNTIME=dds would still pick it.
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
