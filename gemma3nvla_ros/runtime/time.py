"""rclpy.time / rclpy.duration / rclpy.clock: Time, Duration, Clock (with ROS sim time)."""
from __future__ import annotations

import threading
import time as _time
from enum import IntEnum
from typing import Optional

_NS = 1_000_000_000


class ClockType(IntEnum):
    UNINITIALIZED = 0
    ROS_TIME = 1
    SYSTEM_TIME = 2
    STEADY_TIME = 3


class Duration:
    __slots__ = ("_ns",)

    def __init__(self, *, seconds: float = 0, nanoseconds: int = 0):
        total = int(seconds * _NS) + int(nanoseconds)
        if not -(1 << 63) <= total < (1 << 63):
            raise OverflowError("Duration out of range")
        self._ns = total

    @property
    def nanoseconds(self) -> int:
        return self._ns

    def to_msg(self):
        from gemma3nvla_ros.runtime.interfaces import builtin_interfaces
        sec, ns = divmod(self._ns, _NS)
        return builtin_interfaces.msg.Duration(sec=sec, nanosec=ns)

    @classmethod
    def from_msg(cls, msg) -> "Duration":
        return cls(seconds=msg.sec, nanoseconds=msg.nanosec)

    def __eq__(self, o):
        return isinstance(o, Duration) and self._ns == o._ns

    def __lt__(self, o):
        return self._ns < _dur(o)._ns

    def __le__(self, o):
        return self._ns <= _dur(o)._ns

    def __gt__(self, o):
        return self._ns > _dur(o)._ns

    def __ge__(self, o):
        return self._ns >= _dur(o)._ns

    def __hash__(self):
        return hash(self._ns)

    def __repr__(self):
        return f"Duration(nanoseconds={self._ns})"


def _dur(o) -> Duration:
    if not isinstance(o, Duration):
        raise TypeError(f"cannot compare Duration with {type(o).__name__}")
    return o


class Time:
    __slots__ = ("_ns", "_clock_type")

    def __init__(self, *, seconds: float = 0, nanoseconds: int = 0, clock_type: ClockType = ClockType.SYSTEM_TIME):
        total = int(seconds * _NS) + int(nanoseconds)
        if total < 0:
            raise ValueError("Time must be non-negative")
        if total >= (1 << 63):
            raise OverflowError("Time out of range")
        self._ns = total
        self._clock_type = ClockType(clock_type)

    @property
    def nanoseconds(self) -> int:
        return self._ns

    @property
    def clock_type(self) -> ClockType:
        return self._clock_type

    def seconds_nanoseconds(self) -> tuple[int, int]:
        return divmod(self._ns, _NS)

    def to_msg(self):
        from gemma3nvla_ros.runtime.interfaces import builtin_interfaces
        sec, ns = divmod(self._ns, _NS)
        return builtin_interfaces.msg.Time(sec=sec, nanosec=ns)

    @classmethod
    def from_msg(cls, msg, clock_type: ClockType = ClockType.ROS_TIME) -> "Time":
        return cls(seconds=msg.sec, nanoseconds=msg.nanosec, clock_type=clock_type)

    def __add__(self, o):
        if isinstance(o, Duration):
            return Time(nanoseconds=self._ns + o.nanoseconds, clock_type=self._clock_type)
        return NotImplemented

    __radd__ = __add__

    def __sub__(self, o):
        if isinstance(o, Time):
            if o._clock_type != self._clock_type:
                raise TypeError("Can't subtract times with different clock types")
            return Duration(nanoseconds=self._ns - o._ns)
        if isinstance(o, Duration):
            return Time(nanoseconds=self._ns - o.nanoseconds, clock_type=self._clock_type)
        return NotImplemented

    def _cmp(self, o) -> int:
        if not isinstance(o, Time):
            raise TypeError(f"cannot compare Time with {type(o).__name__}")
        if o._clock_type != self._clock_type:
            raise TypeError("Can't compare times with different clock types")
        return (self._ns > o._ns) - (self._ns < o._ns)

    def __eq__(self, o):
        return isinstance(o, Time) and self._clock_type == o._clock_type and self._ns == o._ns

    def __lt__(self, o):
        return self._cmp(o) < 0

    def __le__(self, o):
        return self._cmp(o) <= 0

    def __gt__(self, o):
        return self._cmp(o) > 0

    def __ge__(self, o):
        return self._cmp(o) >= 0

    def __hash__(self):
        return hash((self._ns, self._clock_type))

    def __repr__(self):
        return f"Time(nanoseconds={self._ns}, clock_type={self._clock_type.name})"


class Clock:
    """A clock; a ROS_TIME clock follows /clock when sim time is active (see TimeSource in node.py)."""

    def __init__(self, *, clock_type: ClockType = ClockType.SYSTEM_TIME):
        self._type = ClockType(clock_type)
        self._ros_time_override: Optional[int] = None  # ns; set while sim time is active
        self._cond = threading.Condition()
        self._listeners: list = []  # called (no args) whenever sim time moves or (de)activates

    @property
    def clock_type(self) -> ClockType:
        return self._type

    def now(self) -> Time:
        if self._type == ClockType.STEADY_TIME:
            return Time(nanoseconds=_time.monotonic_ns(), clock_type=self._type)
        override = self._ros_time_override
        if self._type == ClockType.ROS_TIME and override is not None:
            return Time(nanoseconds=override, clock_type=self._type)
        return Time(nanoseconds=_time.time_ns(), clock_type=self._type)

    # --- sim time (ROS_TIME only) ---------------------------------------------------------------------
    @property
    def ros_time_is_active(self) -> bool:
        return self._ros_time_override is not None

    def _set_ros_time_active(self, active: bool) -> None:
        with self._cond:
            if active and self._ros_time_override is None:
                self._ros_time_override = 0
            elif not active:
                self._ros_time_override = None
            self._cond.notify_all()
        self._notify()

    def _set_ros_time(self, ns: int) -> None:
        with self._cond:
            if self._ros_time_override is None:
                return
            self._ros_time_override = int(ns)
            self._cond.notify_all()
        self._notify()

    def _add_listener(self, cb) -> None:
        self._listeners.append(cb)

    def _notify(self) -> None:
        for cb in list(self._listeners):
            cb()

    def sleep_until(self, until: Time, context=None) -> bool:
        """Block until this clock reaches ``until`` (sim time aware). False if shut down first."""
        from gemma3nvla_ros.runtime import context as _ctx
        ctx = context or _ctx.default_context()
        while ctx.ok():
            now = self.now()
            if now >= until:
                return True
            with self._cond:
                if self.ros_time_is_active:
                    self._cond.wait(0.1)
                else:
                    self._cond.wait(min(0.1, (until.nanoseconds - now.nanoseconds) / _NS))
        return False

    def sleep_for(self, rel: Duration, context=None) -> bool:
        return self.sleep_until(self.now() + rel, context)


class ROSClock(Clock):
    def __init__(self):
        super().__init__(clock_type=ClockType.ROS_TIME)
