"""Real-time chunking (RTC, arXiv 2506.07339) bookkeeping for the policy node: no ROS, no torch; times are
integer nanoseconds of the caller's clock (the ROS clock, so ``use_sim_time`` replay works).

While chunk A executes, chunk B is computed from a newer observation. B's step i is meant for time
``stamp_B + i * period`` (stamp = the observation's capture time, as published). For B the policy needs

* the leftover: A's actions at B's step times, from ``stamp_B`` on, as far as A reaches (A's values interpolated
  linearly where the two grids are offset), in the policy's normalized space, where flow matching works;
* the inference delay d: how many of B's steps will have passed when B reaches the aggregator, which executes
  A's instead. B's first d steps are frozen to the leftover, so B continues what A executed.

d = ceil((start - stamp_B + latency) / period): the observation's age when inference starts plus the latency
estimate, at most the leftover's length (B cannot be frozen to actions A does not have).

The latency estimate is the largest of the last ``window`` chunks' latencies (``LatencyEstimate``). Not a running
max over the whole run (LeRobot 0.4.4's RTC), which never forgets the slow first chunks (allocations, cuDNN
autotuning, a new task) and keeps d, and so the frozen prefix, too long for good; not a mean or median either:
underestimating d leaves steps that will be executed from A unfrozen in B, so B's continuation starts from where
the arm is not, while overestimating it only freezes a step more. A max over a short window is conservative
and still forgets a warm-up spike after ``window`` chunks (10 by default: a few seconds); a high percentile
needs far more samples than that to mean anything.

Never skipping steps that were not executed (the first chunk, or one arriving after the queue ran dry) is the
aggregator's part: ``control.action_queue`` re-times an RTC chunk that finds the queue empty so that its first
step not yet executed is sent next. Here: no leftover (so no guidance) when nothing of A is left at B's stamp,
and ``forget()`` whenever A is known not to be executing (stopped, the aggregator's queue empty, RTC switched).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray


RTC_FRAME_ID = "rtc"  # header.frame_id of a real-time chunk: the aggregator executes it instead of blending it
RTC_SCHEDULES = ("LINEAR", "EXP", "ONES", "ZEROS")  # LeRobot's RTCAttentionSchedule (prefix guidance weights)


class LatencyEstimate:
    """The largest of the last ``window`` latencies (seconds); 0 before the first."""

    def __init__(self, window: int = 10) -> None:
        if int(window) < 1:
            raise ValueError(f"the latency window must hold at least 1 chunk, got {window}")
        self._values: deque[float] = deque(maxlen=int(window))

    def add(self, seconds: float) -> None:
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"a latency must be a finite number of seconds >= 0, got {seconds}")
        self._values.append(float(seconds))

    def __len__(self) -> int:
        return len(self._values)

    def estimate(self) -> float:
        return max(self._values, default=0.0)


@dataclass(frozen=True)
class TimedChunk:
    """A chunk as the policy returned it (normalized, ``(steps, action_dim)``), step i at ``stamp_ns + i * period_ns``."""

    stamp_ns: int
    period_ns: int
    values: NDArray[np.float64]

    @property
    def end_ns(self) -> int:
        return self.stamp_ns + (len(self.values) - 1) * self.period_ns


def leftover(prev: TimedChunk | None, stamp_ns: int, period_ns: int) -> NDArray[np.float64] | None:
    """``prev``'s actions at ``stamp_ns + i * period_ns`` for every i that lies within ``prev``'s span (linear
    interpolation between its steps; exact at them); None when ``prev`` is None, ends before ``stamp_ns`` or starts
    after it (an observation older than the previous chunk's: a clock that went back)."""
    if prev is None or not prev.stamp_ns <= stamp_ns <= prev.end_ns:
        return None
    offset = stamp_ns - prev.stamp_ns
    count = (prev.end_ns - stamp_ns) // period_ns + 1
    # Relative to prev's stamp and in units of its period: epoch nanoseconds do not fit a float64 mantissa exactly.
    at = (offset + np.arange(count, dtype=np.int64) * period_ns) / prev.period_ns
    grid = np.arange(len(prev.values), dtype=np.float64)
    out = np.empty((count, prev.values.shape[1]), dtype=np.float64)
    for j in range(prev.values.shape[1]):
        out[:, j] = np.interp(at, grid, prev.values[:, j])
    return out


def inference_delay(stamp_ns: int, start_ns: int, latency_s: float, period_ns: int) -> int:
    """Steps of a chunk for the observation at ``stamp_ns`` whose time passes before it lands, if inference
    starts at ``start_ns`` and takes ``latency_s``: ceil((start - stamp + latency) / period), at least 0."""
    ahead_ns = (start_ns - stamp_ns) + latency_s * 1e9
    return max(0, math.ceil(ahead_ns / period_ns - 1e-9))  # 1e-9: an exact multiple stays exact despite float


@dataclass(frozen=True)
class RTCInputs:
    """What ``predict_action_chunk`` takes: no leftover means no guidance (``inference_delay`` is then unused)."""

    leftover: NDArray[np.float64] | None
    inference_delay: int
    execution_horizon: int


class RealTimeChunking:
    """The previous chunk and the latency window of one policy node."""

    def __init__(self, period_ns: int, latency_window: int = 10) -> None:
        if int(period_ns) <= 0:
            raise ValueError(f"period_ns must be positive, got {period_ns}")
        self.period_ns = int(period_ns)
        self.latency = LatencyEstimate(latency_window)
        self._prev: TimedChunk | None = None

    def forget(self) -> None:
        """Nothing of the previous chunk is executing (stopped, the queue ran dry, a restarted aggregator)."""
        self._prev = None

    def prepare(self, stamp_ns: int, start_ns: int, execution_horizon: int) -> RTCInputs:
        """The RTC inputs for a chunk from the observation stamped ``stamp_ns``, inference starting at ``start_ns``.

        The guided region (``execution_horizon``) always covers the frozen steps: a prefix that will be
        executed from the previous chunk must be matched whatever horizon is configured."""
        if int(execution_horizon) < 1:
            raise ValueError(f"execution_horizon must be >= 1, got {execution_horizon}")
        delay = inference_delay(stamp_ns, start_ns, self.latency.estimate(), self.period_ns)
        rest = leftover(self._prev, stamp_ns, self.period_ns)
        if rest is None:
            return RTCInputs(None, delay, int(execution_horizon))
        delay = min(delay, len(rest))
        return RTCInputs(rest, delay, min(max(int(execution_horizon), delay), len(rest)))

    def record(self, stamp_ns: int, values: ArrayLike, latency_s: float, landed_ns: int) -> int:
        """A chunk for the observation at ``stamp_ns`` was published at ``landed_ns``, ``latency_s`` after its
        inference started: it is what executes next. Returns the stamp its steps will actually run on.

        While the previous chunk still runs when this one lands, the aggregator runs it as stamped. Otherwise
        (no previous chunk, or it ran out first) the aggregator finds its queue empty and re-times the chunk: the
        steps up to the previous chunk's end count as executed and the next one runs at once (``action_queue``).
        The chunk is kept on that timeline, or the next leftover would be shifted by this chunk's latency.
        (The aggregator starts it on its own grid, up to one period before ``landed_ns``.)"""
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim != 2 or len(arr) == 0:
            raise ValueError(f"a chunk is (steps, action_dim), got shape {arr.shape}")
        self.latency.add(latency_s)
        prev, stamp = self._prev, int(stamp_ns)
        if prev is None or prev.end_ns < landed_ns:
            executed = 0 if prev is None else max(0, (prev.end_ns - stamp) // self.period_ns + 1)
            stamp = max(stamp, int(landed_ns) - executed * self.period_ns)
        self._prev = TimedChunk(stamp, self.period_ns, arr)
        return stamp
