"""Cyclone configuration from the ROS environment, as rmw_cyclonedds builds it (pure; no participant)."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from gemma3nvla_ros.runtime.dds_config import build_settings

URI = "file:///cfg/user.xml"


def _fragment(config: str) -> ET.Element:
    first = config.split(",file://")[0]
    return ET.fromstring(first)


def test_subnet_default():
    s = build_settings({"ROS_DOMAIN_ID": "7", "CYCLONEDDS_URI": URI})
    assert (s.domain_id, s.distro, s.discovery_range) == (7, "jazzy", "SUBNET")
    assert s.config.endswith("," + URI)
    root = _fragment(s.config)
    assert root.find("Domain/General") is None  # multicast stays as Cyclone has it
    assert root.findtext("Domain/Discovery/ParticipantIndex") == "auto"
    assert root.findtext("Domain/Discovery/MaxAutoParticipantIndex") == "32"
    assert root.find("Domain/Discovery/Peers") is None
    assert build_settings({}).domain_id == 0 and "URI" not in build_settings({}).config


def test_localhost_range():
    s = build_settings({"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "CYCLONEDDS_URI": URI})
    assert s.config.endswith("," + URI)  # the user's file comes last and wins
    root = _fragment(s.config)
    assert root.findtext("Domain/General/AllowMulticast") == "false"
    assert root.findtext("Domain/Discovery/ParticipantIndex") == "auto"
    assert root.findtext("Domain/Discovery/MaxAutoParticipantIndex") == "32"
    assert [p.get("address") for p in root.findall("Domain/Discovery/Peers/Peer")] == ["localhost"]
    assert root.find("Domain/General/Interfaces") is None  # no interface restriction


def test_localhost_with_static_peers():
    s = build_settings({"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_STATIC_PEERS": "192.168.1.5;robot.local"})
    peers = [p.get("address") for p in _fragment(s.config).findall("Domain/Discovery/Peers/Peer")]
    assert peers == ["localhost", "192.168.1.5", "robot.local"]


def test_off_range_isolates_the_process():
    s = build_settings({"ROS_AUTOMATIC_DISCOVERY_RANGE": "OFF", "ROS_STATIC_PEERS": "10.0.0.9"}, pid=4242)
    root = _fragment(s.config)
    assert root.findtext("Domain/General/AllowMulticast") == "false"
    assert root.findtext("Domain/Discovery/ParticipantIndex") == "none"
    assert root.findtext("Domain/Discovery/Tag") == "ros_discovery_off_4242"
    assert root.find("Domain/Discovery/Peers") is None  # static peers are ignored when OFF


def test_subnet_with_static_peers_and_system_default():
    s = build_settings({"ROS_STATIC_PEERS": "10.0.0.2;robot.local"})
    root = _fragment(s.config)
    assert root.find("Domain/General/AllowMulticast") is None  # multicast stays on
    assert [p.get("address") for p in root.findall("Domain/Discovery/Peers/Peer")] == ["10.0.0.2", "robot.local"]
    assert build_settings({"ROS_AUTOMATIC_DISCOVERY_RANGE": "SYSTEM_DEFAULT", "ROS_STATIC_PEERS": "x",
                           "CYCLONEDDS_URI": URI}).config == URI
    assert build_settings({"ROS_AUTOMATIC_DISCOVERY_RANGE": "bogus"}).discovery_range == "SUBNET"


def test_humble_uses_ros_localhost_only():
    s = build_settings({"ROS_DISTRO": "humble", "ROS_LOCALHOST_ONLY": "1", "CYCLONEDDS_URI": URI,
                        "ROS_AUTOMATIC_DISCOVERY_RANGE": "OFF"})
    root = _fragment(s.config)
    assert root.find("Domain/General/Interfaces/NetworkInterface").get("address") == "127.0.0.1"
    assert s.config.endswith("," + URI)
    assert build_settings({"ROS_DISTRO": "humble"}).config == ""
    assert build_settings({"ROS_DISTRO": "humble", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}).config == ""


def test_jazzy_honours_deprecated_localhost_only_and_rejects_bad_domain():
    s = build_settings({"ROS_LOCALHOST_ONLY": "1", "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET", "ROS_STATIC_PEERS": "x"})
    assert s.discovery_range == "LOCALHOST" and s.static_peers == ()
    with pytest.raises(ValueError):
        build_settings({"ROS_DOMAIN_ID": "abc"})
    with pytest.raises(ValueError):
        build_settings({"ROS_DOMAIN_ID": "300"})
