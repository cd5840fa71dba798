"""rclpy.timer.Timer: a periodic callback on a Clock (so on sim time when the node uses it)."""
from __future__ import annotations

import threading
from typing import Callable, Optional

from gemma3nvla_ros.runtime.time import Clock


class Timer:
    def __init__(self, callback: Optional[Callable], callback_group, timer_period_ns: int, clock: Clock,
                 *, context=None, autostart: bool = True):
        self.callback = callback
        self.callback_group = callback_group
        self._clock = clock
        self._period = int(timer_period_ns)
        if self._period < 0:
            raise ValueError("timer period must be non-negative")
        self._lock = threading.Lock()
        self._canceled = not autostart
        self._next = clock.now().nanoseconds + self._period
        self._destroyed = False

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def timer_period_ns(self) -> int:
        return self._period

    @timer_period_ns.setter
    def timer_period_ns(self, value: int) -> None:
        with self._lock:
            self._period = int(value)
            self._next = self._clock.now().nanoseconds + self._period

    def is_ready(self) -> bool:
        if self._canceled or self._destroyed:
            return False
        now = self._clock.now().nanoseconds
        if now < self._next - self._period:
            with self._lock:  # the clock jumped backwards: restart the period from now
                self._next = now + self._period
            return False
        return now >= self._next

    def is_canceled(self) -> bool:
        return self._canceled

    def cancel(self) -> None:
        self._canceled = True

    def reset(self) -> None:
        with self._lock:
            self._canceled = False
            self._next = self._clock.now().nanoseconds + self._period

    def time_since_last_call(self) -> int:
        return self._clock.now().nanoseconds - (self._next - self._period)

    def time_until_next_call(self) -> Optional[int]:
        if self._canceled or self._destroyed:
            return None
        return self._next - self._clock.now().nanoseconds

    def _take(self) -> bool:
        """Claim this period (rcl_timer_call): advance the schedule, skipping missed periods; a clock
        that jumped backwards (sim time starting, a replayed bag restarting) restarts the period."""
        with self._lock:
            if self._canceled or self._destroyed:
                return False
            now = self._clock.now().nanoseconds
            if now < self._next - self._period:
                self._next = now + self._period
                return False
            if now < self._next:
                return False
            if self._period <= 0:
                self._next = now
            else:
                missed = (now - self._next) // self._period
                self._next += (missed + 1) * self._period
            return True

    def destroy(self) -> None:
        self._destroyed = True
