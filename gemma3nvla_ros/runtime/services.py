"""Services and clients with rmw_cyclonedds' wire conventions.

Topics ``rq/<name>Request`` / ``rr/<name>Reply``. A request sample is the encapsulation header, then
``uint64 guid`` (the instance handle of the client's request writer), ``int64 seq``, then the request
body; the reply copies those 16 bytes. Endpoints carry ``serviceid=``/``clientid=`` in USER_DATA so a
server can wait for the requesting client's reply reader before answering (as rmw_send_response does)
and a client knows a service is ready only when both of one server's endpoints have matched.
"""
from __future__ import annotations

import struct
import threading
import time
from typing import TYPE_CHECKING, Callable, Optional

from gemma3nvla_ros.runtime import cdr
from gemma3nvla_ros.runtime.dds import RawReader, RawWriter, WaitSet
from gemma3nvla_ros.runtime.futures import Future
from gemma3nvla_ros.runtime.graph import endpoint_user_data
from gemma3nvla_ros.runtime.pubsub import TakenSamples, dds_type_name, type_hash
from gemma3nvla_ros.runtime.qos import QoSProfile, to_endpoint_qos
from gemma3nvla_ros.runtime.names import service_to_dds

if TYPE_CHECKING:  # pragma: no cover
    from gemma3nvla_ros.runtime.node import Node

_HDR = struct.Struct("<Qq")
RESPONSE_READER_WAIT_S = 0.1  # rmw_send_response waits this long for the client's reply reader


def csid_to_string(cs_id: bytes) -> str:
    """rmw_cyclonedds' formatting: hex bytes joined by '.', the first one in a width-2 field."""
    return "%2x" % cs_id[0] + "".join(".%x" % b for b in cs_id[1:])


def check_srv_type(srv_type) -> None:
    if not hasattr(srv_type, "Request") or not hasattr(srv_type, "Response"):
        raise TypeError(f"{srv_type!r} is not a ROS service type")


def _user_data(kind: str, cs_id: bytes, msg_type) -> bytes:
    """rmw_cyclonedds (rmw_init_cs): ``serviceid=``/``clientid=`` then, per endpoint, the type hash of
    the message that endpoint carries (Request on rq/, Response on rr/)."""
    return endpoint_user_data(type_hash(msg_type), f"{kind}={csid_to_string(cs_id)};")


def frame(header16: bytes, msg) -> bytes:
    body = cdr.serialize(msg)
    return body[:4] + header16 + body[4:]


def unframe(data) -> tuple[int, int, bytes]:
    """-> (guid, seq, CDR of the body with its encapsulation header)."""
    if len(data) < 20:
        raise cdr.CdrError("service sample shorter than its 16-byte request header")
    guid, seq = _HDR.unpack_from(data, 4)
    return guid, seq, bytes(data[:4]) + bytes(data[20:])


class _ServiceEndpoints:
    """The request/reply reader-writer pair of a service or a client, tagged as rmw_cyclonedds tags them
    (``serviceid=``/``clientid=`` in USER_DATA, so servers can tell which reply reader is whose)."""

    _reader: RawReader
    _writer: RawWriter

    def _open(self, node: "Node", srv_type, name: str, qos_profile: QoSProfile, callback_group,
              kind: str) -> bytes:
        check_srv_type(srv_type)
        self.srv_type = srv_type
        self.srv_name = name
        self.callback_group = callback_group
        self.qos_profile = qos_profile
        self._node = node
        self.malformed_count = 0
        part = node.context.participant()
        req_topic, rep_topic = service_to_dds(name)
        cs_id = node.context.next_cs_id()
        q = to_endpoint_qos(qos_profile)
        request = (part, req_topic, dds_type_name(srv_type.Request), q, _user_data(kind, cs_id, srv_type.Request))
        reply = (part, rep_topic, dds_type_name(srv_type.Response), q, _user_data(kind, cs_id, srv_type.Response))
        if kind == "serviceid":
            self._reader = RawReader(*request)
            self._writer = RawWriter(*reply)
        else:
            self._writer = RawWriter(*request)
            self._reader = RawReader(*reply)
        return cs_id

    @property
    def service_name(self) -> str:
        return self.srv_name

    @property
    def reader(self) -> RawReader:
        return self._reader

    @property
    def endpoint_guids(self) -> tuple[bytes, bytes]:
        return self._reader.guid, self._writer.guid


class Service(_ServiceEndpoints, TakenSamples):
    def __init__(self, node: "Node", srv_type, name: str, callback: Callable, qos_profile: QoSProfile,
                 callback_group):
        self.callback = callback
        self.service_id = self._open(node, srv_type, name, qos_profile, callback_group, "serviceid")
        self._init_queue()


    def deliver(self, item) -> None:
        data, info = item
        try:
            guid, seq, body = unframe(data)
            request = cdr.deserialize(body, self.srv_type.Request)
        except Exception as exc:  # malformed request bytes: drop, count, keep serving
            self.malformed_count += 1
            self._node.get_logger().warn(f"dropped malformed request on {self.srv_name}: {exc}",
                                         throttle_duration_sec=5.0)
            return
        response = self.callback(request, self.srv_type.Response())
        if not isinstance(response, self.srv_type.Response):
            self._node.get_logger().error(
                f"service {self.srv_name} callback returned {type(response).__name__}, expected "
                f"{self.srv_type.Response.__name__}; no reply sent")
            return
        self.send_response(response, _HDR.pack(guid, seq), info.publication_handle)

    def send_response(self, response, header16: bytes, request_writer_handle: int) -> None:
        if self._client_reader_present(request_writer_handle) is False:
            return  # the client is gone: nobody to answer (rmw: GONE)
        self._writer.write(frame(header16, response))

    def _client_reader_present(self, request_writer_handle: int) -> Optional[bool]:
        """True when the client's reply reader has matched our reply writer; False when the client is
        gone; None when still unknown after waiting RESPONSE_READER_WAIT_S (we answer anyway)."""
        ud = self._reader.matched_publication_user_data(request_writer_handle)
        if ud is None:
            return False
        client_id = ud.get("clientid")
        if client_id is None:
            return None  # not an rmw_cyclonedds-style client: cannot check
        deadline = time.monotonic() + RESPONSE_READER_WAIT_S
        while True:
            for h in self._writer.matched_subscriptions():
                sud = self._writer.matched_subscription_user_data(h)
                if sud and sud.get("clientid") == client_id:
                    return True
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.005)  # bounded (<=100 ms) wait for discovery, as rmw_send_response

    def destroy(self) -> None:
        self._reader.close()
        self._writer.close()


class Client(_ServiceEndpoints):
    def __init__(self, node: "Node", srv_type, name: str, qos_profile: QoSProfile, callback_group):
        self.context = node.context
        self.client_id = self._open(node, srv_type, name, qos_profile, callback_group, "clientid")
        self._guid = self._writer.instance_handle
        self._seq = 0
        self._lock = threading.Lock()
        self._pending: dict[int, Future] = {}
        self._waitset: Optional[WaitSet] = None

    # --- requests ------------------------------------------------------------------------------------
    def call_async(self, request) -> Future:
        if not isinstance(request, self.srv_type.Request):
            raise TypeError(f"Expected {self.srv_type.Request.__name__}, got {type(request).__name__}")
        with self._lock:
            self._seq += 1
            seq = self._seq
            future = Future(executor=self._node.executor)
            self._pending[seq] = future
        try:
            self._writer.write(frame(_HDR.pack(self._guid, seq), request))
        except Exception:
            with self._lock:
                self._pending.pop(seq, None)
            raise
        return future

    def call(self, request, timeout_sec: Optional[float] = None):
        """Blocking call. Works whether or not an executor spins this node in another thread: the
        calling thread also takes replies itself (rclpy would deadlock without a spinning executor)."""
        future = self.call_async(request)
        deadline = None if timeout_sec is None else time.monotonic() + timeout_sec
        while not future.done() and self.context.ok():
            remaining = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if remaining <= 0:
                break
            self._wait_for_reply(remaining)
        if not future.done():
            self.remove_pending_request(future)
            return None
        if future.exception() is not None:
            raise future.exception()
        return future.result()

    def _wait_for_reply(self, timeout_s: float) -> None:
        if self._waitset is None:
            self._waitset = WaitSet(self.context.participant().handle)
            self._waitset.set_entities({self._reader.read_condition: self._reader.read_condition})
        self._waitset.wait(int(timeout_s * 1e9))
        self.drain()

    def remove_pending_request(self, future: Future) -> None:
        with self._lock:
            for seq, f in list(self._pending.items()):
                if f is future:
                    del self._pending[seq]

    def drain(self) -> None:
        """Take replies; complete the matching futures (replies for other clients are ignored)."""
        while True:
            got = self._reader.take(16)
            for data, _info in got:
                try:
                    guid, seq, body = unframe(data)
                except cdr.CdrError:
                    self.malformed_count += 1
                    continue
                if guid != self._guid:
                    continue
                with self._lock:
                    future = self._pending.pop(seq, None)
                if future is None:
                    continue
                try:
                    response = cdr.deserialize(body, self.srv_type.Response)
                except Exception as exc:  # malformed reply: the call fails, the node lives on
                    self.malformed_count += 1
                    future.set_exception(exc)
                    continue
                future.set_result(response)
            if len(got) < 16:
                return

    def has_pending(self) -> bool:
        return False  # replies are handled in drain(); nothing queued for a callback

    # --- availability --------------------------------------------------------------------------------
    def service_is_ready(self) -> bool:
        req_ids = set()
        for h in self._writer.matched_subscriptions():
            ud = self._writer.matched_subscription_user_data(h) or {}
            req_ids.add(ud.get("serviceid"))
        if not req_ids:
            return False
        for h in self._reader.matched_publications():
            ud = self._reader.matched_publication_user_data(h) or {}
            if ud.get("serviceid") in req_ids:
                return True
        return False

    def wait_for_service(self, timeout_sec: Optional[float] = None) -> bool:
        # rclpy polls, too (0.25 s steps); discovery has no event we could cheaply wait on here
        deadline = None if timeout_sec is None else time.monotonic() + timeout_sec
        while self.context.ok():
            if self.service_is_ready():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return False

    def destroy(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for f in pending.values():
            f.cancel()
        if self._waitset is not None:
            self._waitset.close()
        self._reader.close()
        self._writer.close()
