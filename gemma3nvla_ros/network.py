"""The one-host network settings every launcher, the tests and the benchmarks apply (docs/NETWORKING.md).

``config/loopback.env`` holds ROS' and glibc's variables (LOCALHOST discovery, Fast DDS, malloc thresholds
that keep 720p image buffers off mmap); ``config/fastdds_loopback.xml`` is the Fast DDS profile with
32 MiB shared-memory segments (two 1280x720 streams without loss) and UDP on 127.0.0.1. Whatever the
caller's environment already sets wins; the profile is added only when discovery stays on this host and
Fast DDS is the middleware, so a user who opens discovery (``ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET``) is not
silently kept on loopback by it.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from gemma3nvla_ros.paths import config_dir

PROFILE_VARIABLE = "FASTRTPS_DEFAULT_PROFILES_FILE"


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines; ``#`` comments and blank lines skipped."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def loopback_environment(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` completed with the one-host settings (existing values are kept)."""
    out = dict(env)
    for key, value in read_env_file(config_dir() / "loopback.env").items():
        out.setdefault(key, value)
    if out.get("ROS_AUTOMATIC_DISCOVERY_RANGE") == "LOCALHOST" and out.get("RMW_IMPLEMENTATION") == "rmw_fastrtps_cpp":
        out.setdefault(PROFILE_VARIABLE, str(config_dir() / "fastdds_loopback.xml"))
    return out
