"""Publisher and Subscription (rclpy.publisher / rclpy.subscription) over raw-CDR DDS endpoints."""
from __future__ import annotations

import collections
import threading
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Optional

from gemma3nvla_ros.runtime import cdr
from gemma3nvla_ros.runtime.dds import RawReader, RawWriter, SampleInfo
from gemma3nvla_ros.runtime.graph import endpoint_user_data
from gemma3nvla_ros.runtime.qos import HistoryPolicy, QoSProfile, to_endpoint_qos

if TYPE_CHECKING:  # pragma: no cover
    from gemma3nvla_ros.runtime.node import Node


@lru_cache(maxsize=None)
def dds_type_name(cls: type) -> str:
    from gemma3nvla_ros.runtime import typesupport
    return typesupport.dds_type_name(cls)


@lru_cache(maxsize=None)
def type_hash(cls: type) -> Optional[str]:
    try:
        from gemma3nvla_ros.runtime import typesupport
        return typesupport.rihs01(cls)
    except Exception:
        return None


def check_msg_type(msg_type: Any) -> None:
    if not isinstance(msg_type, type) or not hasattr(msg_type, "_ros_type"):
        raise TypeError(f"{msg_type!r} is not a ROS message class")


def _watch_type(node: "Node", dds_topic: str, msg_type: type) -> Callable[[], None]:
    """Warn (once) when another endpoint on this topic uses a different type: DDS never matches them.
    Returns what the endpoint's destroy() calls to stop watching."""
    from gemma3nvla_ros.runtime.discovery import monitor_for
    mon = monitor_for(node.context.participant())
    if mon is None:
        return lambda: None
    logger = node.get_logger()

    def warn(text: str) -> None:
        logger.warn(text)

    mon.register_local(dds_topic, dds_type_name(msg_type), warn)
    return lambda: mon.unregister_local(dds_topic, warn)


class Publisher:
    def __init__(self, node: "Node", msg_type: type, topic: str, qos_profile: QoSProfile, callback_group=None):
        check_msg_type(msg_type)
        self.msg_type = msg_type
        self.topic = topic  # fully qualified ROS name
        self.qos_profile = qos_profile
        self._node = node
        self.callback_group = callback_group
        self._writer = RawWriter(node.context.participant(), "rt" + topic, dds_type_name(msg_type),
                                 to_endpoint_qos(qos_profile, is_writer=True), endpoint_user_data(type_hash(msg_type)))
        self.guid = self._writer.guid
        self._unwatch = _watch_type(node, "rt" + topic, msg_type)

    @property
    def topic_name(self) -> str:
        return self.topic

    @property
    def handle(self):
        return self._writer

    def publish(self, msg) -> None:
        """Publish a message (or already-serialized CDR bytes, like rclpy)."""
        if isinstance(msg, (bytes, bytearray, memoryview)):
            data = msg
        else:
            if not isinstance(msg, self.msg_type):
                raise TypeError(f"Expected {self.msg_type.__name__}, got {type(msg).__name__}")
            data = cdr.serialize(msg)
        self._writer.write(data)

    def get_subscription_count(self) -> int:
        return len(self._writer.matched_subscriptions())

    def wait_for_all_acked(self, timeout=None) -> bool:  # pragma: no cover - best effort parity
        return True

    def destroy(self) -> None:
        self._unwatch()
        self._writer.close()


class TakenSamples:
    """Samples the executor's waiting thread took from ``_reader``, held until a callback runs.

    Bounded like the reader's KEEP_LAST history, so a slow callback sees the newest samples, as DDS
    itself would keep them. Subscriptions and services share it; clients filter replies themselves.
    """

    _reader: RawReader

    def _init_queue(self, maxlen: Optional[int] = None) -> None:
        self._queue: collections.deque = collections.deque(maxlen=maxlen)
        self._qlock = threading.Lock()

    def drain(self) -> None:
        while True:
            got = self._reader.take(16)
            if not got:
                return
            with self._qlock:
                self._queue.extend(got)
            if len(got) < 16:
                return

    def has_pending(self) -> bool:
        return bool(self._queue)

    def pop(self) -> Optional[tuple[bytearray, SampleInfo]]:
        with self._qlock:
            return self._queue.popleft() if self._queue else None


class Subscription(TakenSamples):
    """Samples are taken from DDS by the executor's waiting thread into a bounded queue (KEEP_LAST
    depth, as DDS would keep) and deserialized only when the callback is about to run."""

    def __init__(self, node: "Node", msg_type: type, topic: str, callback: Callable, qos_profile: QoSProfile,
                 callback_group, raw: bool = False):
        check_msg_type(msg_type)
        self.msg_type = msg_type
        self.topic = topic
        self.callback = callback
        self.qos_profile = qos_profile
        self.callback_group = callback_group
        self.raw = raw
        self._node = node
        self._reader = RawReader(node.context.participant(), "rt" + topic, dds_type_name(msg_type),
                                 to_endpoint_qos(qos_profile), endpoint_user_data(type_hash(msg_type)))
        self.guid = self._reader.guid
        self._unwatch = _watch_type(node, "rt" + topic, msg_type)
        maxlen = None if qos_profile.history == HistoryPolicy.KEEP_ALL else max(1, qos_profile.depth or 1)
        self._init_queue(maxlen)
        self.malformed_count = 0

    @property
    def topic_name(self) -> str:
        return self.topic

    @property
    def reader(self) -> RawReader:
        return self._reader


    def deliver(self, item: tuple[bytearray, SampleInfo]) -> None:
        data, _info = item
        if self.raw:
            self.callback(bytes(data))
            return
        try:
            msg = cdr.deserialize(data, self.msg_type)
        except Exception as exc:  # CdrError by contract; anything else from bad bytes is dropped too
            self.malformed_count += 1
            self._node.get_logger().warn(
                f"dropped malformed {self.msg_type._ros_type} sample on {self.topic} "
                f"({self.malformed_count} so far): {exc}", throttle_duration_sec=5.0)
            return
        self.callback(msg)

    def destroy(self) -> None:
        self._unwatch()
        self._reader.close()
