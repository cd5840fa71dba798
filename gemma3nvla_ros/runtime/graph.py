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


# --- reading other participants' announcements (``ros2 node list``) -----------------------------------

NodeInfo = tuple[str, str, list[bytes], list[bytes]]  # namespace, name, reader gids, writer gids


class _CdrReader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 4  # after the encapsulation header

    def align(self, n: int) -> None:
        self.pos += (-(self.pos - 4)) % n

    def raw(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("truncated ParticipantEntitiesInfo")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        self.align(4)
        return struct.unpack("<I", self.raw(4))[0]

    def string(self) -> str:
        n = self.u32()
        if n == 0 or self.pos + n > len(self.data):
            raise ValueError("bad string in ParticipantEntitiesInfo")
        return self.raw(n)[:-1].decode("utf-8", "replace")

    def count(self, elem_size: int) -> int:
        n = self.u32()
        if n * elem_size > len(self.data) - self.pos:  # a corrupt length must not allocate gigabytes
            raise ValueError("bad sequence length in ParticipantEntitiesInfo")
        return n


def _parse_with_gid(data: bytes, n: int) -> tuple[bytes, list[NodeInfo]]:
    r = _CdrReader(data)
    participant = r.raw(n)
    nodes: list[NodeInfo] = []
    for _ in range(r.count(8 + 4 + 4)):
        ns = r.string()
        name = r.string()
        readers = [r.raw(n) for _ in range(r.count(n))]
        writers = [r.raw(n) for _ in range(r.count(n))]
        nodes.append((ns, name, readers, writers))
    if len(data) - r.pos > 3:  # only CDR padding may follow; more means the Gid size was wrong
        raise ValueError("trailing bytes in ParticipantEntitiesInfo")
    return participant, nodes


def parse_participant_entities_info(data: bytes, distro: str) -> tuple[bytes, list[NodeInfo]]:
    """(participant gid, nodes) of a serialized ParticipantEntitiesInfo. The distro's Gid size is
    tried first and the other one after, so Humble (24-byte) and Jazzy (16-byte) peers on one graph
    both parse. Gids are returned as sent (zero padding included). Raises ValueError if neither fits."""
    if data[:2] != b"\x00\x01":
        raise ValueError("not little-endian XCDR1 data")
    first = gid_size(distro)
    try:
        return _parse_with_gid(bytes(data), first)
    except (ValueError, struct.error):
        return _parse_with_gid(bytes(data), 40 - first)


class NodeGraphMonitor:
    """Reads every participant's ``ros_discovery_info`` (rmw_cyclonedds' graph cache, reduced to what
    ``get_node_names_and_namespaces`` needs). A thread takes the samples as they come, so the reader
    history (KEEP_ALL, as the topic has no key) never grows; a participant's entry counts only while
    DDS discovery still knows an endpoint of it, which is how departed processes drop out."""

    def __init__(self, participant: Participant, distro: str):
        from gemma3nvla_ros.runtime import dds
        from gemma3nvla_ros.runtime.discovery import monitor_for
        monitor_for(participant)  # liveness comes from DDS discovery: start collecting it now
        self._participant = participant
        self._distro = distro
        self._lock = threading.Lock()
        self._by_participant: dict[bytes, list[NodeInfo]] = {}
        self.malformed_count = 0
        qos = dds.EndpointQos(reliable=True, transient_local=True, keep_all=True, depth=None)
        self._reader = dds.RawReader(participant, TOPIC, TYPE_NAME, qos, endpoint_user_data(_typehash(distro)))
        self._ws = dds.WaitSet(participant.handle)
        self._guard = dds.GuardCondition(participant.handle)
        self._ws.set_entities({self._reader.read_condition: self._reader.read_condition,
                               self._guard.handle: self._guard.handle})
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="ros-discovery-info", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                self._ws.wait(None)
                if self._stop:
                    return
                self._take_all()
            except Exception:  # participant deleted under us at shutdown
                return

    def _take_all(self) -> None:
        while True:
            got = self._reader.take(16)
            for data, _info in got:
                try:
                    gid, nodes = parse_participant_entities_info(bytes(data), self._distro)
                except ValueError:
                    self.malformed_count += 1
                    continue
                with self._lock:
                    self._by_participant[gid[:16]] = nodes
            if len(got) < 16:
                return

    def nodes(self) -> list[NodeInfo]:
        """Nodes of all live participants (this process' included)."""
        from gemma3nvla_ros.runtime.discovery import monitor_for
        mon = monitor_for(self._participant)
        with self._lock:
            entries = list(self._by_participant.items())
        if mon is None:  # no liveness information: better stale entries than none
            return [n for _gid, nodes in entries for n in nodes]
        alive = mon.participant_guids() | {self._participant.guid}
        return [n for gid, nodes in entries if gid in alive for n in nodes]

    def close(self) -> None:
        self._stop = True
        try:
            self._guard.trigger()
        except Exception:
            pass
        self._thread.join(2.0)
        self._reader.close()


_node_graphs: dict[int, NodeGraphMonitor] = {}
_node_graphs_lock = threading.Lock()


def node_graph_for(participant: Participant, distro: str) -> NodeGraphMonitor:
    """The participant's ros_discovery_info reader, created on first use (processes that never ask
    for node names never read everybody's graph updates)."""
    with _node_graphs_lock:
        g = _node_graphs.get(participant.handle)
        if g is None:
            g = _node_graphs[participant.handle] = NodeGraphMonitor(participant, distro)
        return g


def close_node_graph(participant: Participant) -> None:
    with _node_graphs_lock:
        g = _node_graphs.pop(participant.handle, None)
    if g is not None:
        g.close()
