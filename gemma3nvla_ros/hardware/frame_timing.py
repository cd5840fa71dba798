"""When a camera's frames were published, on a monotonic clock (no ROS): time since the last frame, the
recent rate and the longest gap. ROS time may be simulated or paused; a stalled camera is a wall-time fact.
The levels these feed are in :mod:`gemma3nvla_ros.hardware.diagnostics` (``camera_status``)."""
from __future__ import annotations

import threading
from collections import deque

RATE_WINDOW_PERIODS, RATE_WINDOW_MIN_S = 10.0, 2.0


def rate_window_s(fps: float) -> float:
    """The measured rate averages over this long: a couple of seconds, and at least 10 frames' worth."""
    return max(RATE_WINDOW_PERIODS / fps, RATE_WINDOW_MIN_S)


class FrameTiming:
    """Times (monotonic seconds) of the frames published.

    The capture thread records; the diagnostics timer reads: a lock keeps the two consistent.
    """

    def __init__(self, started: float, keep: int = 512) -> None:
        self._lock = threading.Lock()
        self._started = started
        self._times: deque[float] = deque(maxlen=keep)
        self._longest_gap = 0.0

    def record(self, t: float) -> None:
        with self._lock:
            previous = self._times[-1] if self._times else self._started
            self._longest_gap = max(self._longest_gap, t - previous)
            self._times.append(t)

    def seconds_since_last(self, now: float) -> float:
        """Since the last frame, or since the start while there has been none (a camera that never
        delivers is as stale as one that stopped)."""
        with self._lock:
            return max(0.0, now - (self._times[-1] if self._times else self._started))

    def fps(self, now: float, window_s: float) -> float:
        """Frames per second over the window ending *now*, not at the last frame: a stall pulls it down
        (to 0 once the window holds no frame) instead of repeating the rate from before the stall."""
        with self._lock:
            recent = [t for t in self._times if now - t <= window_s]
        if len(recent) < 2 or now <= recent[0]:
            return 0.0
        return (len(recent) - 1) / (now - recent[0])

    def take_longest_gap(self) -> float:
        """The longest time between two frames since the previous call (then forgotten): a stall shorter
        than the diagnostics period shows here although no diagnostics sample caught it."""
        with self._lock:
            gap, self._longest_gap = self._longest_gap, 0.0
        return gap
