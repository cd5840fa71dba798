"""The one-host settings both launchers and the tests apply, and what a user's own environment keeps."""
from __future__ import annotations

from pathlib import Path

from gemma3nvla_ros.network import PROFILE_VARIABLE, loopback_environment


def test_an_empty_environment_stays_on_this_host_with_the_large_data_profile() -> None:
    env = loopback_environment({})
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert env["RMW_IMPLEMENTATION"] == "rmw_fastrtps_cpp"
    profile = Path(env[PROFILE_VARIABLE])
    assert profile.is_absolute() and profile.is_file() and "<segment_size>" in profile.read_text()
    assert env["MALLOC_MMAP_THRESHOLD_"] == "16777216"


def test_a_user_who_opens_discovery_is_not_kept_on_loopback_by_the_profile() -> None:
    env = loopback_environment({"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"})
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET" and PROFILE_VARIABLE not in env


def test_another_middleware_or_profile_is_kept() -> None:
    env = loopback_environment({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"})
    assert env["RMW_IMPLEMENTATION"] == "rmw_cyclonedds_cpp" and PROFILE_VARIABLE not in env
    assert loopback_environment({PROFILE_VARIABLE: "/mine.xml"})[PROFILE_VARIABLE] == "/mine.xml"
