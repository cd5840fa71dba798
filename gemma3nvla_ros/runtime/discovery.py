"""What DDS discovery knows about everybody's readers and writers (DCPSPublication/DCPSSubscription).

Like rmw_cyclonedds' discovery thread, one background thread per participant takes the built-in
topics — it only updates a table and never runs user callbacks. The table answers
``count_publishers``/``count_subscribers``/``get_topic_names_and_types``, and it lets us warn when an
endpoint on one of our topics has another type name: DDS then silently never matches them.
"""
from __future__ import annotations

import ctypes as ct
import threading
from dataclasses import dataclass
from typing import Callable, Optional

from gemma3nvla_ros.runtime import dds

_DDS_MIN_PSEUDO_HANDLE = 0x7FFF0000
DCPSPUBLICATION = _DDS_MIN_PSEUDO_HANDLE + 3
DCPSSUBSCRIPTION = _DDS_MIN_PSEUDO_HANDLE + 4

_take = dds._fn("dds_take", ct.c_int32, ct.c_int32, ct.POINTER(ct.c_void_p), ct.POINTER(dds.SampleInfo),
                ct.c_size_t, ct.c_uint32)
_return_loan = dds._fn("dds_return_loan", ct.c_int32, ct.c_int32, ct.POINTER(ct.c_void_p), ct.c_int32)
_qget_reliability = dds._fn("dds_qget_reliability", ct.c_bool, ct.c_void_p, ct.POINTER(ct.c_int),
                            ct.POINTER(ct.c_int64))
_qget_durability = dds._fn("dds_qget_durability", ct.c_bool, ct.c_void_p, ct.POINTER(ct.c_int))


@dataclass(frozen=True)
class Endpoint:
    guid: bytes
    participant_guid: bytes
    topic_name: str  # DDS name (rt/..., rq/..., rr/...)
    type_name: str
    is_reader: bool
    # the endpoint's QoS as discovered (None: not advertised); tools match a reader to the writers
    reliable: Optional[bool] = None
    transient_local: Optional[bool] = None


def _qos_of(qos_ptr: Optional[int]) -> tuple[Optional[bool], Optional[bool]]:
    """(reliable, transient_local) of a discovered endpoint's QoS object."""
    if not qos_ptr:
        return None, None
    kind, blocking = ct.c_int(), ct.c_int64()
    reliable = (kind.value == dds.RELIABILITY_RELIABLE
                if _qget_reliability(qos_ptr, ct.byref(kind), ct.byref(blocking)) else None)
    durability = ct.c_int()
    transient = (durability.value >= dds.DURABILITY_TRANSIENT_LOCAL
                 if _qget_durability(qos_ptr, ct.byref(durability)) else None)
    return reliable, transient


class DiscoveryMonitor:
    def __init__(self, participant: dds.Participant):
        self._participant = participant
        self._lock = threading.Lock()
        self._endpoints: dict[bytes, Endpoint] = {}
        self._local: dict[str, list[tuple[str, Callable[[str], None]]]] = {}  # topic -> [(type, warn)]
        self._warned: set[tuple[str, str]] = set()
        self._readers = []
        self._stop = False
        for topic in (DCPSPUBLICATION, DCPSSUBSCRIPTION):
            self._readers.append(dds._check(dds._create_reader(participant.handle, topic, None, None),
                                            "builtin topic reader"))
        self._ws = dds.WaitSet(participant.handle)
        self._guard = dds.GuardCondition(participant.handle)
        self._conds = [dds._check(dds._create_readcondition(r, dds.ANY_STATE), "readcondition") for r in self._readers]
        ents = {c: c for c in self._conds}
        ents[self._guard.handle] = self._guard.handle
        self._ws.set_entities(ents)
        self._thread = threading.Thread(target=self._run, name="dds-discovery", daemon=True)
        self._thread.start()

    # --- queries -------------------------------------------------------------------------------------
    def endpoints(self) -> list[Endpoint]:
        with self._lock:
            return list(self._endpoints.values())

    def participant_guids(self) -> set[bytes]:
        """Participants that still have at least one endpoint (every ROS participant has its
        ros_discovery_info writer, so a live ROS participant is never missing here)."""
        return {e.participant_guid for e in self.endpoints()}

    def count(self, dds_topic: str, readers: bool) -> int:
        return sum(1 for e in self.endpoints() if e.topic_name == dds_topic and e.is_reader == readers)

    def topic_names_and_types(self) -> list[tuple[str, list[str]]]:
        out: dict[str, set[str]] = {}
        for e in self.endpoints():
            if e.topic_name.startswith("rt/"):
                out.setdefault(e.topic_name[2:], set()).add(_ros_type(e.type_name))
        return sorted((k, sorted(v)) for k, v in out.items())

    # --- type mismatch warnings ----------------------------------------------------------------------
    def register_local(self, dds_topic: str, type_name: str, warn: Callable[[str], None]) -> None:
        with self._lock:
            self._local.setdefault(dds_topic, []).append((type_name, warn))
            others = [e for e in self._endpoints.values() if e.topic_name == dds_topic]
        for e in others:
            self._check(e)

    def unregister_local(self, dds_topic: str, warn: Callable[[str], None]) -> None:
        """Forget a destroyed endpoint (its ``warn`` holds the node: keeping it would leak the node)."""
        with self._lock:
            entries = [x for x in self._local.get(dds_topic, ()) if x[1] is not warn]
            if entries:
                self._local[dds_topic] = entries
            else:
                self._local.pop(dds_topic, None)

    def _check(self, e: Endpoint) -> None:
        with self._lock:
            locals_ = list(self._local.get(e.topic_name, ()))
        for type_name, warn in locals_:
            if type_name != e.type_name and (e.topic_name, e.type_name + "|" + type_name) not in self._warned:
                self._warned.add((e.topic_name, e.type_name + "|" + type_name))
                kind = "subscription" if e.is_reader else "publisher"
                warn(f"a {kind} on {e.topic_name} has type {_ros_type(e.type_name)}, this endpoint "
                     f"{_ros_type(type_name)}: they will not communicate")

    # --- thread --------------------------------------------------------------------------------------
    def _run(self) -> None:
        bufs = (ct.c_void_p * 32)()
        infos = (dds.SampleInfo * 32)()
        while not self._stop:
            try:
                self._ws.wait(None)
            except Exception:
                return
            if self._stop:
                return
            for is_reader, rd in ((False, self._readers[0]), (True, self._readers[1])):
                while True:
                    for i in range(32):
                        bufs[i] = None
                    n = _take(rd, bufs, infos, 32, 32)
                    if n <= 0:
                        break
                    fresh = []
                    try:
                        for i in range(n):
                            ep = ct.cast(bufs[i], ct.POINTER(dds._BuiltinEndpoint)).contents
                            guid = bytes(ep.key.v)
                            if infos[i].instance_state != dds.ALIVE_INSTANCE_STATE:
                                with self._lock:
                                    self._endpoints.pop(guid, None)
                            elif infos[i].valid_data and ep.topic_name and ep.type_name:
                                e = Endpoint(guid, bytes(ep.participant_key.v), ep.topic_name.decode(),
                                             ep.type_name.decode(), is_reader, *_qos_of(ep.qos))
                                with self._lock:
                                    self._endpoints[guid] = e
                                fresh.append(e)
                    finally:
                        _return_loan(rd, bufs, n)
                    for e in fresh:
                        self._check(e)
                    if n < 32:
                        break

    def close(self) -> None:
        self._stop = True
        try:
            self._guard.trigger()
        except Exception:
            pass
        self._thread.join(2.0)


def _ros_type(dds_type: str) -> str:
    """``pkg::msg::dds_::Name_`` -> ``pkg/msg/Name`` (other names unchanged)."""
    parts = dds_type.split("::")
    if len(parts) == 4 and parts[2] == "dds_" and parts[3].endswith("_"):
        return f"{parts[0]}/{parts[1]}/{parts[3][:-1]}"
    return dds_type


_monitors: dict[int, DiscoveryMonitor] = {}
_monitors_lock = threading.Lock()


def monitor_for(participant: dds.Participant) -> Optional[DiscoveryMonitor]:
    """The participant's monitor (created on first use); None if Cyclone refuses the builtin readers."""
    with _monitors_lock:
        m = _monitors.get(participant.handle)
        if m is None:
            try:
                m = DiscoveryMonitor(participant)
            except Exception:
                return None
            _monitors[participant.handle] = m
        return m


def close_monitor(participant: dds.Participant) -> None:
    with _monitors_lock:
        m = _monitors.pop(participant.handle, None)
    if m is not None:
        m.close()
