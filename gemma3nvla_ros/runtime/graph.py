"""The ROS graph announcement: ``ros_discovery_info`` (rmw_dds_common/msg/ParticipantEntitiesInfo).

ROS tools (``ros2 node list``, ``ros2 node info``) learn which nodes live in a participant, and which
readers/writers belong to which node, only from this topic. Like rmw_cyclonedds we keep one writer
per participant (RELIABLE, TRANSIENT_LOCAL, KEEP_LAST 1; no ``rt/`` prefix) and re-publish the whole
participant state whenever a node or endpoint comes or goes. Gids are the DDS GUIDs of the
participant/readers/writers, zero-padded to the distro's Gid size (24 bytes on Humble, 16 from Iron).

The sample is serialized here directly (a fixed, tiny layout) so that the graph does not depend on
message-class details; tests check it against rosbags' Humble/Jazzy typestores.
"""
from __future__ import annotations

import struct
import threading
from dataclasses import dataclass, field
from typing import Optional

from gemma3nvla_ros.runtime.dds import EndpointQos, Participant, RawWriter

TOPIC = "ros_discovery_info"
TYPE_NAME = "rmw_dds_common::msg::dds_::ParticipantEntitiesInfo_"
QOS = EndpointQos(reliable=True, transient_local=True, keep_all=False, depth=1)


def gid_size(distro: str) -> int:
    return 24 if distro.lower() == "humble" else 16


def _typehash(distro: str) -> Optional[str]:
    try:
        from gemma3nvla_ros.runtime import typesupport
        from gemma3nvla_ros.runtime.interfaces import rmw_dds_common
        return typesupport.rihs01(rmw_dds_common.participant_entities_info_type(distro))
    except Exception:  # message layer not available: rosbags computes the same hash
        try:
            from rosbags.typesys import Stores, get_typestore
            store = get_typestore(Stores.ROS2_HUMBLE if distro == "humble" else Stores.ROS2_JAZZY)
            return store.hash_rihs01("rmw_dds_common/msg/ParticipantEntitiesInfo")
        except Exception:
            return None


def endpoint_user_data(typehash: Optional[str], extra: str = "") -> bytes:
    """USER_DATA of a reader/writer as rmw_cyclonedds (Jazzy) sets it: ``[extra]typehash=RIHS01_...;``."""
    return (extra + (f"typehash={typehash};" if typehash else "")).encode()


class _Cdr:
    def __init__(self):
        self.buf = bytearray(b"\x00\x01\x00\x00")

    def align(self, n: int) -> None:
        pad = (-(len(self.buf) - 4)) % n
        self.buf += b"\0" * pad

    def u32(self, v: int) -> None:
        self.align(4)
        self.buf += struct.pack("<I", v)

    def string(self, s: str) -> None:
        b = s.encode() + b"\0"
        self.u32(len(b))
        self.buf += b

    def raw(self, b: bytes) -> None:
        self.buf += b


def serialize_participant_entities_info(participant_gid: bytes, nodes: list[tuple[str, str, list[bytes], list[bytes]]],
                                        distro: str) -> bytes:
    n = gid_size(distro)

    def gid(g: bytes) -> bytes:
        return (g + b"\0" * n)[:n]

    w = _Cdr()
    w.raw(gid(participant_gid))
    w.u32(len(nodes))
    for ns, name, readers, writers in nodes:
        w.string(ns)
        w.string(name)
        w.u32(len(readers))
        for g in readers:
            w.raw(gid(g))
        w.u32(len(writers))
        for g in writers:
            w.raw(gid(g))
    return bytes(w.buf)


@dataclass
class _NodeEntry:
    namespace: str
    name: str
    readers: list = field(default_factory=list)
    writers: list = field(default_factory=list)


class GraphInfo:
    """The participant's node/endpoint table and its ``ros_discovery_info`` writer."""

    def __init__(self, participant: Participant, distro: str):
        self._participant = participant
        self.distro = distro
        self._lock = threading.Lock()
        self._nodes: dict[int, _NodeEntry] = {}
        self.typehash = _typehash(distro) if distro != "humble" else None
        self._writer = RawWriter(participant, TOPIC, TYPE_NAME, QOS,
                                 endpoint_user_data(_typehash(distro)))

    def add_node(self, key: int, namespace: str, name: str) -> None:
        with self._lock:
            self._nodes[key] = _NodeEntry(namespace, name)
            self._publish_locked()

    def remove_node(self, key: int) -> None:
        with self._lock:
            if self._nodes.pop(key, None) is not None:
                self._publish_locked()

    def add_endpoint(self, key: int, guid: bytes, is_reader: bool) -> None:
        with self._lock:
            node = self._nodes.get(key)
            if node is None:
                return
            (node.readers if is_reader else node.writers).append(guid)
            self._publish_locked()

    def remove_endpoint(self, key: int, guid: bytes, is_reader: bool) -> None:
        with self._lock:
            node = self._nodes.get(key)
            if node is None:
                return
            lst = node.readers if is_reader else node.writers
            if guid in lst:
                lst.remove(guid)
                self._publish_locked()

    def snapshot(self) -> bytes:
        with self._lock:
            return self._serialize_locked()

    def _serialize_locked(self) -> bytes:
        nodes = [(n.namespace, n.name, list(n.readers), list(n.writers)) for n in self._nodes.values()]
        return serialize_participant_entities_info(self._participant.guid, nodes, self.distro)

    def _publish_locked(self) -> None:
        try:
            self._writer.write(self._serialize_locked())
        except Exception:  # participant already gone (shutdown): nothing left to announce
            pass

    def close(self) -> None:
        self._writer.close()
