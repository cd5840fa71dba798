"""Cyclone DDS configuration from the ROS environment, built the way rmw_cyclonedds does it.

rmw_cyclonedds hands Cyclone a comma-separated list of configuration fragments: first the one it
derives from the ROS discovery settings, then the user's ``CYCLONEDDS_URI`` (so the user's file has the
last word). Jazzy (and later) derive the fragment from ``ROS_AUTOMATIC_DISCOVERY_RANGE`` and
``ROS_STATIC_PEERS``; Humble from ``ROS_LOCALHOST_ONLY``. The distro comes from ``ROS_DISTRO``
(default jazzy). Pure functions: ``build_config(env)`` is tested directly.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional

RANGES = ("SUBNET", "LOCALHOST", "OFF", "SYSTEM_DEFAULT")


@dataclass(frozen=True)
class DdsSettings:
    domain_id: int
    config: str  # what dds_create_domain gets
    distro: str
    discovery_range: str
    static_peers: tuple[str, ...]


def ros_distro(env: Mapping[str, str]) -> str:
    return (env.get("ROS_DISTRO") or "jazzy").strip().lower() or "jazzy"


def domain_id(env: Mapping[str, str]) -> int:
    raw = (env.get("ROS_DOMAIN_ID") or "").strip()
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"ROS_DOMAIN_ID must be an integer, not {raw!r}") from exc
    if not 0 <= value <= 232:
        raise ValueError(f"ROS_DOMAIN_ID {value} out of range 0..232")
    return value


def discovery_range(env: Mapping[str, str], distro: str) -> str:
    """The effective automatic discovery range, by rcl's rules: unset or unknown -> SUBNET; on Jazzy a
    (deprecated) ROS_LOCALHOST_ONLY=1 still wins and means LOCALHOST without static peers."""
    localhost_only = (env.get("ROS_LOCALHOST_ONLY") or "").strip() == "1"
    if localhost_only:
        return "LOCALHOST"
    if distro == "humble":
        return "SUBNET"
    raw = (env.get("ROS_AUTOMATIC_DISCOVERY_RANGE") or "").strip().upper()
    return raw if raw in RANGES else "SUBNET"


def static_peers(env: Mapping[str, str], distro: str) -> tuple[str, ...]:
    if distro == "humble" or (env.get("ROS_LOCALHOST_ONLY") or "").strip() == "1":
        return ()
    raw = env.get("ROS_STATIC_PEERS") or ""
    return tuple(p.strip() for p in raw.split(";") if p.strip())


def _xml_attr(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def discovery_fragment(distro: str, rng: str, peers: tuple[str, ...], pid: Optional[int] = None) -> str:
    """The XML fragment rmw_cyclonedds puts in front of CYCLONEDDS_URI ('' when it adds nothing).

    Jazzy (check_create_domain): SUBNET -> participant index auto (max 32) + static peers, multicast
    as Cyclone's default; LOCALHOST -> multicast off, index auto (max 32), peers localhost + static
    peers; OFF -> multicast off, index none and a per-process discovery tag (static peers ignored);
    SYSTEM_DEFAULT -> nothing. Humble: ROS_LOCALHOST_ONLY=1 -> interface 127.0.0.1, else nothing."""
    if distro == "humble":
        if rng == "LOCALHOST":
            return ("<CycloneDDS><Domain><General><Interfaces><NetworkInterface address=\"127.0.0.1\"/>"
                    "</Interfaces></General></Domain></CycloneDDS>")
        return ""
    if rng == "SYSTEM_DEFAULT":
        return ""
    add_localhost = rng == "LOCALHOST"
    add_static = rng in ("SUBNET", "LOCALHOST")
    disable_multicast = rng in ("LOCALHOST", "OFF")
    out = "<CycloneDDS><Domain>"
    if disable_multicast:
        out += "<General><AllowMulticast>false</AllowMulticast></General>"
    if disable_multicast and not add_localhost and not add_static:
        out += "<Discovery><ParticipantIndex>none</ParticipantIndex>"
        out += f"<Tag>ros_discovery_off_{os.getpid() if pid is None else pid}</Tag>"
    else:
        out += "<Discovery><ParticipantIndex>auto</ParticipantIndex><MaxAutoParticipantIndex>32</MaxAutoParticipantIndex>"
    if (add_static and peers) or add_localhost:
        out += "<Peers>"
        if add_localhost:
            out += '<Peer address="localhost"/>'
        for p in peers if add_static else ():
            out += f'<Peer address="{_xml_attr(p)}"/>'
        out += "</Peers>"
    return out + "</Discovery></Domain></CycloneDDS>"


def build_settings(env: Optional[Mapping[str, str]] = None, pid: Optional[int] = None) -> DdsSettings:
    env = os.environ if env is None else env
    distro = ros_distro(env)
    rng = discovery_range(env, distro)
    peers = static_peers(env, distro)
    parts = [discovery_fragment(distro, rng, peers, pid)]
    uri = env.get("CYCLONEDDS_URI") or ""
    if uri:
        parts.append(uri)
    # empty fragments are ignored by Cyclone; rmw_cyclonedds joins with ',' the same way
    config = ",".join(p for p in parts if p)
    return DdsSettings(domain_id(env), config, distro, rng, peers)
