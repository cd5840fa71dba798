"""rclpy.qos: QoSProfile, policy enums (ROS' values) and presets, plus the rmw_cyclonedds mapping."""
from __future__ import annotations

from enum import IntEnum
from typing import Optional, Union

from gemma3nvla_ros.runtime.dds import EndpointQos
from gemma3nvla_ros.runtime.time import Duration


class HistoryPolicy(IntEnum):
    SYSTEM_DEFAULT = 0
    KEEP_LAST = 1
    KEEP_ALL = 2
    UNKNOWN = 3


class ReliabilityPolicy(IntEnum):
    SYSTEM_DEFAULT = 0
    RELIABLE = 1
    BEST_EFFORT = 2
    UNKNOWN = 3
    BEST_AVAILABLE = 4


class DurabilityPolicy(IntEnum):
    SYSTEM_DEFAULT = 0
    TRANSIENT_LOCAL = 1
    VOLATILE = 2
    UNKNOWN = 3
    BEST_AVAILABLE = 4


class LivelinessPolicy(IntEnum):
    SYSTEM_DEFAULT = 0
    AUTOMATIC = 1
    MANUAL_BY_TOPIC = 3
    UNKNOWN = 4
    BEST_AVAILABLE = 5


# rclpy's old names
QoSHistoryPolicy = HistoryPolicy
QoSReliabilityPolicy = ReliabilityPolicy
QoSDurabilityPolicy = DurabilityPolicy
QoSLivelinessPolicy = LivelinessPolicy


def _as_duration(value) -> Duration:
    if value is None:
        return Duration()
    if isinstance(value, Duration):
        return value
    if isinstance(value, (int, float)):
        return Duration(seconds=value)
    if hasattr(value, "sec") and hasattr(value, "nanosec"):
        return Duration(seconds=value.sec, nanoseconds=value.nanosec)
    raise TypeError(f"expected a Duration, got {type(value).__name__}")


class QoSProfile:
    """rclpy.qos.QoSProfile; history/depth are required as in rclpy (depth alone implies KEEP_LAST)."""

    __slots__ = ("history", "depth", "reliability", "durability", "deadline", "lifespan", "liveliness",
                 "liveliness_lease_duration", "avoid_ros_namespace_conventions")

    def __init__(self, **kwargs):
        unknown = set(kwargs) - set(self.__slots__)
        if unknown:
            raise TypeError(f"QoSProfile got unexpected keyword(s) {sorted(unknown)}")
        history = kwargs.get("history")
        depth = kwargs.get("depth")
        if history is None:
            if depth is None:
                raise ValueError("A QoSProfile must be given at least a history policy or a depth")
            history = HistoryPolicy.KEEP_LAST
        self.history = HistoryPolicy(history)
        if self.history == HistoryPolicy.KEEP_LAST and depth is None:
            raise ValueError("A QoSProfile with KEEP_LAST history needs a depth")
        self.depth = int(depth) if depth is not None else 0
        if self.depth < 0:
            raise ValueError("depth must be >= 0")
        self.reliability = ReliabilityPolicy(kwargs.get("reliability", ReliabilityPolicy.RELIABLE))
        self.durability = DurabilityPolicy(kwargs.get("durability", DurabilityPolicy.VOLATILE))
        self.deadline = _as_duration(kwargs.get("deadline"))
        self.lifespan = _as_duration(kwargs.get("lifespan"))
        self.liveliness = LivelinessPolicy(kwargs.get("liveliness", LivelinessPolicy.SYSTEM_DEFAULT))
        self.liveliness_lease_duration = _as_duration(kwargs.get("liveliness_lease_duration"))
        self.avoid_ros_namespace_conventions = bool(kwargs.get("avoid_ros_namespace_conventions", False))

    def __eq__(self, other) -> bool:
        return isinstance(other, QoSProfile) and all(getattr(self, s) == getattr(other, s) for s in self.__slots__)

    def __repr__(self) -> str:
        return ("QoSProfile(" + ", ".join(f"{s}={getattr(self, s)!r}" for s in self.__slots__[:4]) + ")")


def qos_from(qos_or_depth: Union[QoSProfile, int]) -> QoSProfile:
    """rclpy accepts a profile or an int depth (KEEP_LAST depth, RELIABLE, VOLATILE)."""
    if isinstance(qos_or_depth, QoSProfile):
        return qos_or_depth
    if isinstance(qos_or_depth, bool) or not isinstance(qos_or_depth, int):
        raise TypeError("qos_profile must be a QoSProfile or an int depth")
    return QoSProfile(depth=qos_or_depth)


def _set_ns(d: Duration) -> Optional[int]:
    # rmw: 0 (and "infinite") mean "not set"
    ns = d.nanoseconds
    return ns if 0 < ns < (1 << 63) - 1 else None


def to_endpoint_qos(q: QoSProfile, ignore_local: bool = False, is_writer: bool = False) -> EndpointQos:
    """rmw_cyclonedds' create_readwrite_qos: SYSTEM_DEFAULT history (or depth 0) -> KEEP_LAST 1,
    SYSTEM_DEFAULT reliability -> RELIABLE (blocking indefinitely), SYSTEM_DEFAULT durability ->
    VOLATILE; deadline/lifespan only when set; liveliness AUTOMATIC unless MANUAL_BY_TOPIC.
    BEST_AVAILABLE (which rmw resolves against the endpoints already on the graph) is taken as the
    choice that matches every peer: RELIABLE/TRANSIENT_LOCAL writers, BEST_EFFORT/VOLATILE readers."""
    if q.history == HistoryPolicy.KEEP_ALL:
        keep_all, depth = True, None
    else:
        keep_all, depth = False, max(1, q.depth)
    if q.reliability == ReliabilityPolicy.BEST_EFFORT:
        rel = False
    elif q.reliability == ReliabilityPolicy.BEST_AVAILABLE:
        rel = is_writer
    else:
        rel = True
    if q.durability == DurabilityPolicy.TRANSIENT_LOCAL:
        dur = True
    elif q.durability == DurabilityPolicy.BEST_AVAILABLE:
        dur = is_writer
    else:
        dur = False
    return EndpointQos(
        reliable=rel, transient_local=dur, keep_all=keep_all, depth=depth,
        deadline_ns=_set_ns(q.deadline), lifespan_ns=_set_ns(q.lifespan),
        liveliness_manual=q.liveliness == LivelinessPolicy.MANUAL_BY_TOPIC,
        liveliness_lease_ns=_set_ns(q.liveliness_lease_duration), ignore_local=ignore_local)


qos_profile_sensor_data = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                                     reliability=ReliabilityPolicy.BEST_EFFORT,
                                     durability=DurabilityPolicy.VOLATILE)
qos_profile_system_default = QoSProfile(history=HistoryPolicy.SYSTEM_DEFAULT,
                                        reliability=ReliabilityPolicy.SYSTEM_DEFAULT,
                                        durability=DurabilityPolicy.SYSTEM_DEFAULT)
qos_profile_services_default = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                                          reliability=ReliabilityPolicy.RELIABLE,
                                          durability=DurabilityPolicy.VOLATILE)
qos_profile_parameters = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000,
                                    reliability=ReliabilityPolicy.RELIABLE,
                                    durability=DurabilityPolicy.VOLATILE)
qos_profile_parameter_events = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000,
                                          reliability=ReliabilityPolicy.RELIABLE,
                                          durability=DurabilityPolicy.VOLATILE)
qos_profile_clock = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                               reliability=ReliabilityPolicy.BEST_EFFORT,
                               durability=DurabilityPolicy.VOLATILE)
