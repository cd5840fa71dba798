"""Timing statistics for the control loops, no ROS: tick periods and latencies over a sliding window."""
from __future__ import annotations

from collections import deque

import numpy as np


class PeriodStats:
    """Periods between successive ``add(t_ns)`` calls, over the last ``window`` ticks (seconds)."""

    def __init__(self, window: int = 300) -> None:
        self._last: int | None = None
        self._periods: deque[float] = deque(maxlen=window)

    def add(self, t_ns: int) -> None:
        if self._last is not None:
            self._periods.append((t_ns - self._last) * 1e-9)
        self._last = t_ns

    def percentile(self, q: float) -> float:
        return float(np.percentile(self._periods, q)) if self._periods else 0.0


class LatencyWindow:
    """Recent latencies (seconds) for p50/p95 reporting."""

    def __init__(self, window: int = 100) -> None:
        self._values: deque[float] = deque(maxlen=window)

    def add(self, seconds: float) -> None:
        self._values.append(seconds)

    def __len__(self) -> int:
        return len(self._values)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self._values, q)) if self._values else 0.0


def stamp_ns(stamp) -> int:
    """A builtin_interfaces Time/Duration (duck-typed) as integer nanoseconds."""
    return stamp.sec * 1_000_000_000 + stamp.nanosec
