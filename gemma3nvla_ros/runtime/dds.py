"""Raw-CDR DDS plumbing over Cyclone DDS' C API (ctypes), the way rmw_cyclonedds uses it.

Why not cyclonedds-python's Topic/DataWriter/DataReader: its sertype needs XTypes type information
(it builds its sample validator from it) and so advertises TypeInformation in discovery, which
rmw_cyclonedds never does; and its own serializer is far too slow for images. Instead we create topics
from a minimal *opaque* topic descriptor (a final struct without members): Cyclone's default sertype
then keeps the serialized bytes untouched, registers no type information (matching with ROS peers is by
type name + XCDR1, as between rmw_cyclonedds nodes), and hands us exactly the bytes that were on the
wire. Validation happens in our CDR layer (``cdr.deserialize`` raising ``CdrError``).

Writes go ``bytes -> ddsi_serdata_from_ser_iov -> dds_writecdr`` (one copy); takes go
``dds_takecdr -> ddsi_serdata_to_ser`` into a Python ``bytearray`` (one copy).
Only the wheel's libddsc is used (loaded through cyclonedds-python's loader).
"""
from __future__ import annotations

import ctypes as ct
import threading
from dataclasses import dataclass
from typing import Optional

from cyclonedds.internal import load_cyclonedds

_lib = load_cyclonedds()

DDS_INFINITY = (1 << 63) - 1
DDS_DOMAIN_DEFAULT = 0xFFFFFFFF

# enum values from dds/ddsc/dds_public_qosdefs.h
RELIABILITY_BEST_EFFORT = 0
RELIABILITY_RELIABLE = 1
DURABILITY_VOLATILE = 0
DURABILITY_TRANSIENT_LOCAL = 1
HISTORY_KEEP_LAST = 0
HISTORY_KEEP_ALL = 1
LIVELINESS_AUTOMATIC = 0
LIVELINESS_MANUAL_BY_TOPIC = 2
IGNORELOCAL_NONE = 0
IGNORELOCAL_PARTICIPANT = 1
DATA_REPRESENTATION_XCDR1 = 0
LENGTH_UNLIMITED = -1

# read masks / states
ANY_STATE = 1 | 2 | 4 | 8 | 16 | 32 | 64
NOT_READ_SAMPLE_STATE = 2
ANY_VIEW_INSTANCE = 4 | 8 | 16 | 32 | 64
ALIVE_INSTANCE_STATE = 16

SDK_DATA = 2  # enum ddsi_serdata_kind { SDK_EMPTY, SDK_KEY, SDK_DATA }

_entity = ct.c_int32
_ret = ct.c_int32
_qos_p = ct.c_void_p


class DdsError(RuntimeError):
    """A Cyclone DDS call failed; ``code`` is the (negative) DDS return code."""

    def __init__(self, code: int, what: str):
        super().__init__(f"{what} failed: {_strretcode(code)} ({code})")
        self.code = code


class SampleInfo(ct.Structure):
    _fields_ = [
        ("sample_state", ct.c_uint),
        ("view_state", ct.c_uint),
        ("instance_state", ct.c_uint),
        ("valid_data", ct.c_bool),
        ("source_timestamp", ct.c_int64),
        ("instance_handle", ct.c_uint64),
        ("publication_handle", ct.c_uint64),
        ("disposed_generation_count", ct.c_uint32),
        ("no_writers_generation_count", ct.c_uint32),
        ("sample_rank", ct.c_uint32),
        ("generation_rank", ct.c_uint32),
        ("absolute_generation_rank", ct.c_uint32),
    ]


class _Guid(ct.Structure):
    _fields_ = [("v", ct.c_uint8 * 16)]


class _TypeMetaSer(ct.Structure):
    _fields_ = [("data", ct.c_void_p), ("sz", ct.c_uint32)]


class _TopicDescriptor(ct.Structure):
    # dds_topic_descriptor_t (dds_public_impl.h); m_mid_table_offs is zero (absent in older layouts,
    # harmless trailing zeros there).
    _fields_ = [
        ("m_size", ct.c_uint32),
        ("m_align", ct.c_uint32),
        ("m_flagset", ct.c_uint32),
        ("m_nkeys", ct.c_uint32),
        ("m_typename", ct.c_char_p),
        ("m_keys", ct.c_void_p),
        ("m_nops", ct.c_uint32),
        ("m_ops", ct.POINTER(ct.c_uint32)),
        ("m_meta", ct.c_char_p),
        ("type_information", _TypeMetaSer),
        ("type_mapping", _TypeMetaSer),
        ("restrict_data_representation", ct.c_uint32),
        ("m_mid_table_offs", ct.c_uint32),
    ]


class _IoVec(ct.Structure):
    _fields_ = [("iov_base", ct.c_void_p), ("iov_len", ct.c_size_t)]


class _BuiltinEndpoint(ct.Structure):
    _fields_ = [
        ("key", _Guid),
        ("participant_key", _Guid),
        ("participant_instance_handle", ct.c_uint64),
        ("topic_name", ct.c_char_p),
        ("type_name", ct.c_char_p),
        ("qos", ct.c_void_p),
    ]


def _fn(name: str, restype, *argtypes):
    f = getattr(_lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


_strretcode_c = _fn("dds_strretcode", ct.c_char_p, _ret)


def _strretcode(code: int) -> str:
    try:
        return (_strretcode_c(code) or b"?").decode()
    except Exception:  # pragma: no cover - diagnostics only
        return "?"


_create_domain = _fn("dds_create_domain", _entity, ct.c_uint32, ct.c_char_p)
_create_participant = _fn("dds_create_participant", _entity, ct.c_uint32, _qos_p, ct.c_void_p)
_create_topic = _fn("dds_create_topic", _entity, _entity, ct.POINTER(_TopicDescriptor), ct.c_char_p, _qos_p, ct.c_void_p)
_create_reader = _fn("dds_create_reader", _entity, _entity, _entity, _qos_p, ct.c_void_p)
_create_writer = _fn("dds_create_writer", _entity, _entity, _entity, _qos_p, ct.c_void_p)
_delete = _fn("dds_delete", _ret, _entity)
_get_guid = _fn("dds_get_guid", _ret, _entity, ct.POINTER(_Guid))
_get_instance_handle = _fn("dds_get_instance_handle", _ret, _entity, ct.POINTER(ct.c_uint64))
_get_entity_sertype = _fn("dds_get_entity_sertype", _ret, _entity, ct.POINTER(ct.c_void_p))
_serdata_from_ser_iov = _fn("ddsi_serdata_from_ser_iov", ct.c_void_p, ct.c_void_p, ct.c_int, ct.c_size_t, ct.POINTER(_IoVec), ct.c_size_t)
_serdata_size = _fn("ddsi_serdata_size", ct.c_uint32, ct.c_void_p)
_serdata_to_ser = _fn("ddsi_serdata_to_ser", None, ct.c_void_p, ct.c_size_t, ct.c_size_t, ct.c_void_p)
_serdata_unref = _fn("ddsi_serdata_unref", None, ct.c_void_p)
_writecdr = _fn("dds_writecdr", _ret, _entity, ct.c_void_p)
_takecdr = _fn("dds_takecdr", _ret, _entity, ct.POINTER(ct.c_void_p), ct.c_uint32, ct.POINTER(SampleInfo), ct.c_uint32)
_create_qos = _fn("dds_create_qos", _qos_p)
_delete_qos = _fn("dds_delete_qos", None, _qos_p)
_qset_reliability = _fn("dds_qset_reliability", None, _qos_p, ct.c_int, ct.c_int64)
_qset_durability = _fn("dds_qset_durability", None, _qos_p, ct.c_int)
_qset_history = _fn("dds_qset_history", None, _qos_p, ct.c_int, ct.c_int32)
_qset_deadline = _fn("dds_qset_deadline", None, _qos_p, ct.c_int64)
_qset_lifespan = _fn("dds_qset_lifespan", None, _qos_p, ct.c_int64)
_qset_liveliness = _fn("dds_qset_liveliness", None, _qos_p, ct.c_int, ct.c_int64)
_qset_userdata = _fn("dds_qset_userdata", None, _qos_p, ct.c_void_p, ct.c_size_t)
_qget_userdata = _fn("dds_qget_userdata", ct.c_bool, _qos_p, ct.POINTER(ct.c_void_p), ct.POINTER(ct.c_size_t))
_qset_writer_data_lifecycle = _fn("dds_qset_writer_data_lifecycle", None, _qos_p, ct.c_bool)
_qset_ignorelocal = _fn("dds_qset_ignorelocal", None, _qos_p, ct.c_int)
_qset_durability_service = _fn("dds_qset_durability_service", None, _qos_p, ct.c_int64, ct.c_int, ct.c_int32, ct.c_int32, ct.c_int32, ct.c_int32)
_qset_data_representation = _fn("dds_qset_data_representation", None, _qos_p, ct.c_uint32, ct.POINTER(ct.c_int16))
_free = _fn("dds_free", None, ct.c_void_p)
_create_waitset = _fn("dds_create_waitset", _entity, _entity)
_waitset_attach = _fn("dds_waitset_attach", _ret, _entity, _entity, ct.c_ssize_t)
_waitset_detach = _fn("dds_waitset_detach", _ret, _entity, _entity)
_waitset_wait = _fn("dds_waitset_wait", _ret, _entity, ct.POINTER(ct.c_ssize_t), ct.c_size_t, ct.c_int64)
_create_readcondition = _fn("dds_create_readcondition", _entity, _entity, ct.c_uint32)
_create_guardcondition = _fn("dds_create_guardcondition", _entity, _entity)
_set_guardcondition = _fn("dds_set_guardcondition", _ret, _entity, ct.c_bool)
_take_guardcondition = _fn("dds_take_guardcondition", _ret, _entity, ct.POINTER(ct.c_bool))
_get_matched_subscriptions = _fn("dds_get_matched_subscriptions", _ret, _entity, ct.POINTER(ct.c_uint64), ct.c_size_t)
_get_matched_publications = _fn("dds_get_matched_publications", _ret, _entity, ct.POINTER(ct.c_uint64), ct.c_size_t)
_get_matched_subscription_data = _fn("dds_get_matched_subscription_data", ct.POINTER(_BuiltinEndpoint), _entity, ct.c_uint64)
_get_matched_publication_data = _fn("dds_get_matched_publication_data", ct.POINTER(_BuiltinEndpoint), _entity, ct.c_uint64)
_builtintopic_free_endpoint = _fn("dds_builtintopic_free_endpoint", None, ct.POINTER(_BuiltinEndpoint))


def _check(code: int, what: str) -> int:
    if code < 0:
        raise DdsError(code, what)
    return code


# --- QoS -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EndpointQos:
    """DDS-level QoS of one reader/writer, already mapped from a ROS QoSProfile (see qos.py).

    ``None`` leaves Cyclone's default (qos.py never produces it; raw tools may)."""

    reliable: Optional[bool] = True
    transient_local: Optional[bool] = False
    keep_all: bool = False
    depth: Optional[int] = 10
    deadline_ns: Optional[int] = None
    lifespan_ns: Optional[int] = None
    liveliness_manual: bool = False
    liveliness_lease_ns: Optional[int] = None
    ignore_local: bool = False


def _build_qos(q: EndpointQos, user_data: Optional[bytes], is_writer: bool) -> int:
    qos = _create_qos()
    if q.keep_all:
        _qset_history(qos, HISTORY_KEEP_ALL, LENGTH_UNLIMITED)
    elif q.depth is not None:
        _qset_history(qos, HISTORY_KEEP_LAST, max(1, int(q.depth)))
    if q.reliable is not None:
        _qset_reliability(qos, RELIABILITY_RELIABLE if q.reliable else RELIABILITY_BEST_EFFORT, DDS_INFINITY)
    if q.transient_local is not None:
        _qset_durability(qos, DURABILITY_TRANSIENT_LOCAL if q.transient_local else DURABILITY_VOLATILE)
        if q.transient_local and is_writer:
            # as rmw_cyclonedds: the durability service keeps what the history keeps
            _qset_durability_service(
                qos, 0, HISTORY_KEEP_ALL if q.keep_all else HISTORY_KEEP_LAST,
                max(1, int(q.depth or 1)), LENGTH_UNLIMITED, LENGTH_UNLIMITED, LENGTH_UNLIMITED)
    if q.deadline_ns is not None:
        _qset_deadline(qos, int(q.deadline_ns))
    if q.lifespan_ns is not None and is_writer:
        _qset_lifespan(qos, int(q.lifespan_ns))
    if True:  # rmw_cyclonedds always sets liveliness (AUTOMATIC, infinite lease by default)
        _qset_liveliness(qos, LIVELINESS_MANUAL_BY_TOPIC if q.liveliness_manual else LIVELINESS_AUTOMATIC,
                         int(q.liveliness_lease_ns) if q.liveliness_lease_ns is not None else DDS_INFINITY)
    if is_writer:
        _qset_writer_data_lifecycle(qos, False)  # autodispose off, as rmw_cyclonedds
    if q.ignore_local:
        _qset_ignorelocal(qos, IGNORELOCAL_PARTICIPANT)
    rep = (ct.c_int16 * 1)(DATA_REPRESENTATION_XCDR1)
    _qset_data_representation(qos, 1, rep)
    if user_data is not None:
        buf = ct.create_string_buffer(user_data, len(user_data))
        _qset_userdata(qos, buf, len(user_data))
    return qos


def user_data_of(qos_ptr: int) -> dict[str, str]:
    """Parse ``key=value;`` USER_DATA of a QoS object (as rmw's parse_key_value)."""
    if not qos_ptr:
        return {}
    val = ct.c_void_p()
    sz = ct.c_size_t()
    if not _qget_userdata(qos_ptr, ct.byref(val), ct.byref(sz)) or not val.value:
        return {}
    try:
        raw = ct.string_at(val.value, sz.value)
    finally:
        _free(val)
    return parse_user_data(raw)


def parse_user_data(raw: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in raw.decode("utf-8", "replace").split(";"):
        if "=" in item:
            k, v = item.split("=", 1)
            out[k] = v
    return out


# --- Participant, topics, endpoints ---------------------------------------------------------------

_OPAQUE_OPS = (ct.c_uint32 * 3)(0x01010000, 0, 0)  # { uint8 first_byte; } then RTS; see module doc


class Participant:
    """One DDS participant per process (rmw_cyclonedds: one per context), shared by all nodes."""

    def __init__(self, domain_id: int, config: str, user_data: bytes):
        self.domain_id = domain_id
        _acquire_domain(domain_id, config)
        qos = _create_qos()
        buf = ct.create_string_buffer(user_data, len(user_data))
        _qset_userdata(qos, buf, len(user_data))
        try:
            self.handle = _check(_create_participant(domain_id, qos, None), "dds_create_participant")
        finally:
            _delete_qos(qos)
        self.guid = entity_guid(self.handle)
        self._topics: dict[tuple[str, str], tuple[int, int, _TopicDescriptor, bytes]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def topic(self, name: str, type_name: str) -> tuple[int, int]:
        """(topic entity, sertype pointer) for a raw topic; created once per (name, type)."""
        key = (name, type_name)
        with self._lock:
            hit = self._topics.get(key)
            if hit is not None:
                return hit[0], hit[1]
            tn = type_name.encode()
            desc = _TopicDescriptor(
                m_size=8, m_align=8, m_flagset=0, m_nkeys=0, m_typename=tn, m_keys=None, m_nops=2,
                m_ops=ct.cast(_OPAQUE_OPS, ct.POINTER(ct.c_uint32)), m_meta=b"",
                restrict_data_representation=0, m_mid_table_offs=0)
            topic = _check(_create_topic(self.handle, ct.byref(desc), name.encode(), None, None), f"create topic {name}")
            st = ct.c_void_p()
            _check(_get_entity_sertype(topic, ct.byref(st)), "dds_get_entity_sertype")
            self._topics[key] = (topic, st.value, desc, tn)
            return topic, st.value

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        _delete(self.handle)
        _release_domain(self.domain_id)


_domains: dict[int, list] = {}  # domain id -> [handle, config, refcount]
_domains_lock = threading.Lock()


def _acquire_domain(domain_id: int, config: str) -> None:
    """Cyclone allows one domain instance per id and process: share it between participants (rmw
    does the same) and refuse a second, different configuration for the same id."""
    with _domains_lock:
        d = _domains.get(domain_id)
        if d is None:
            h = _check(_create_domain(domain_id, config.encode()), "dds_create_domain")
            _domains[domain_id] = [h, config, 1]
        elif d[1] != config:
            raise DdsError(-4, f"domain {domain_id} already exists with another configuration")
        else:
            d[2] += 1


def _release_domain(domain_id: int) -> None:
    with _domains_lock:
        d = _domains.get(domain_id)
        if d is not None:
            d[2] -= 1
            if d[2] <= 0:
                del _domains[domain_id]
                _delete(d[0])


def entity_guid(entity: int) -> bytes:
    g = _Guid()
    _check(_get_guid(entity, ct.byref(g)), "dds_get_guid")
    return bytes(g.v)


def instance_handle(entity: int) -> int:
    ih = ct.c_uint64()
    _check(_get_instance_handle(entity, ct.byref(ih)), "dds_get_instance_handle")
    return ih.value


def _matched_user_data(get_data, entity: int, peer: int) -> Optional[dict[str, str]]:
    """USER_DATA of the matched endpoint ``peer`` (None once it is gone)."""
    ep = get_data(entity, peer)
    if not ep:
        return None
    try:
        return user_data_of(ep.contents.qos)
    finally:
        _builtintopic_free_endpoint(ep)


class RawWriter:
    """A DDS writer that writes already-serialized CDR (encapsulation header included)."""

    def __init__(self, participant: Participant, topic_name: str, type_name: str, qos: EndpointQos,
                 user_data: Optional[bytes]):
        topic, self._sertype = participant.topic(topic_name, type_name)
        q = _build_qos(qos, user_data, is_writer=True)
        try:
            self.handle = _check(_create_writer(participant.handle, topic, q, None), f"create writer {topic_name}")
        finally:
            _delete_qos(q)
        self.topic_name = topic_name
        self.guid = entity_guid(self.handle)
        self.instance_handle = instance_handle(self.handle)
        self._closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise RuntimeError("writer destroyed")
        if isinstance(data, memoryview):
            data = data.tobytes()  # ctypes needs a writable buffer or bytes
        n = len(data)
        if n % 4:
            # rmw_cyclonedds and Cyclone pad serialized payloads to a multiple of 4
            data = bytes(data) + b"\0" * (4 - n % 4)
            n = len(data)
        if isinstance(data, bytes):
            ptr = ct.cast(ct.c_char_p(data), ct.c_void_p)
        else:
            ptr = ct.addressof((ct.c_char * n).from_buffer(data))
        iov = _IoVec(ptr, n)
        sd = _serdata_from_ser_iov(self._sertype, SDK_DATA, 1, ct.byref(iov), n)
        if not sd:
            raise DdsError(-1, f"serdata for {self.topic_name} (invalid CDR header?)")
        _check(_writecdr(self.handle, sd), f"write {self.topic_name}")

    def matched_subscriptions(self) -> list[int]:
        return _matched(_get_matched_subscriptions, self.handle)

    def matched_subscription_user_data(self, handle: int) -> Optional[dict[str, str]]:
        return _matched_user_data(_get_matched_subscription_data, self.handle, handle)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _delete(self.handle)


class RawReader:
    """A DDS reader that takes raw CDR samples (bytes incl. encapsulation header) + SampleInfo."""

    def __init__(self, participant: Participant, topic_name: str, type_name: str, qos: EndpointQos,
                 user_data: Optional[bytes]):
        topic, _ = participant.topic(topic_name, type_name)
        q = _build_qos(qos, user_data, is_writer=False)
        try:
            self.handle = _check(_create_reader(participant.handle, topic, q, None), f"create reader {topic_name}")
        finally:
            _delete_qos(q)
        self.topic_name = topic_name
        self.guid = entity_guid(self.handle)
        self.instance_handle = instance_handle(self.handle)
        # level-triggered "has unread data": what executors attach to their waitsets
        self.read_condition = _check(_create_readcondition(self.handle, NOT_READ_SAMPLE_STATE | ANY_VIEW_INSTANCE),
                                     "dds_create_readcondition")
        self._bufs = (ct.c_void_p * 16)()
        self._infos = (SampleInfo * 16)()
        self._lock = threading.Lock()
        self._closed = False

    def take(self, max_samples: int = 16) -> list[tuple[bytearray, SampleInfo]]:
        """Take up to ``max_samples`` valid samples (invalid/dispose notifications are dropped)."""
        out: list[tuple[bytearray, SampleInfo]] = []
        with self._lock:
            if self._closed:
                return out
            n = min(max_samples, 16)
            for i in range(n):
                self._bufs[i] = None
            got = _takecdr(self.handle, self._bufs, n, self._infos, ANY_STATE)
            if got < 0:
                raise DdsError(got, f"take {self.topic_name}")
            for i in range(got):
                sd = self._bufs[i]
                info = self._infos[i]
                try:
                    if info.valid_data:
                        size = _serdata_size(sd)
                        buf = bytearray(size)
                        _serdata_to_ser(sd, 0, size, (ct.c_char * size).from_buffer(buf))
                        copy = SampleInfo()
                        ct.pointer(copy)[0] = info
                        out.append((buf, copy))
                finally:
                    _serdata_unref(sd)
        return out

    def matched_publications(self) -> list[int]:
        return _matched(_get_matched_publications, self.handle)

    def matched_publication_user_data(self, handle: int) -> Optional[dict[str, str]]:
        return _matched_user_data(_get_matched_publication_data, self.handle, handle)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                _delete(self.read_condition)
                _delete(self.handle)


def _matched(fn, handle: int) -> list[int]:
    n = 16
    while True:
        arr = (ct.c_uint64 * n)()
        got = fn(handle, arr, n)
        if got < 0:
            return []
        if got <= n:
            return list(arr[:got])
        n = got


# --- waiting ----------------------------------------------------------------------------------------

class GuardCondition:
    def __init__(self, owner: int):
        self.handle = _check(_create_guardcondition(owner), "dds_create_guardcondition")

    def trigger(self) -> None:
        _set_guardcondition(self.handle, True)

    def take(self) -> bool:
        v = ct.c_bool(False)
        _take_guardcondition(self.handle, ct.byref(v))
        return bool(v.value)

    def close(self) -> None:
        _delete(self.handle)


class WaitSet:
    """A Cyclone waitset; ``wait`` releases the GIL (ctypes) while blocked."""

    def __init__(self, owner: int):
        self.handle = _check(_create_waitset(owner), "dds_create_waitset")
        self._attached: set[int] = set()
        self._xs = (ct.c_ssize_t * 64)()

    def set_entities(self, entities: dict[int, int]) -> None:
        """Attach exactly ``{entity: attach_arg}`` (attach arg = entity here)."""
        want = set(entities)
        for e in self._attached - want:
            _waitset_detach(self.handle, e)
        for e in want - self._attached:
            _waitset_attach(self.handle, e, entities[e])
        self._attached = want

    def wait(self, timeout_ns: Optional[int]) -> list[int]:
        t = DDS_INFINITY if timeout_ns is None else max(0, int(timeout_ns))
        n = _waitset_wait(self.handle, self._xs, len(self._xs), t)
        if n < 0:
            return []
        return [self._xs[i] for i in range(min(n, len(self._xs)))]

    def close(self) -> None:
        _delete(self.handle)
