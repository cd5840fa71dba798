"""Real-time chunking bookkeeping (control.rtc) and how the action queue executes real-time chunks: the latency
window forgets warm-up, leftover and delay arithmetic, and no step that was not executed is ever skipped."""
from __future__ import annotations

import numpy as np
import pytest

from gemma3nvla_ros.control.action_queue import ActionQueue, ChunkRejected, MergeReport
from gemma3nvla_ros.control.rtc import (
    LatencyEstimate,
    RealTimeChunking,
    TimedChunk,
    inference_delay,
    leftover,
)

MS = 1_000_000
P = 10 * MS
S = 1_700_000_000_123_456_789  # epoch-like: the arithmetic must hold in int64 nanoseconds


def ramp(n: int, width: int = 2, start: float = 0.0) -> np.ndarray:
    return np.repeat((start + np.arange(n, dtype=float))[:, None], width, axis=1)


# ---------------------------------------------------------------------------------------------- latency window


def test_latency_estimate_forgets_a_slow_warm_up():
    est = LatencyEstimate(window=10)
    assert est.estimate() == 0.0
    est.add(2.5)  # first chunk: allocations, autotuning
    for i in range(9):
        est.add(0.1)
        assert est.estimate() == 2.5, i  # conservative while the slow one is among the last 10
    est.add(0.12)
    assert est.estimate() == pytest.approx(0.12)  # ten chunks later it is forgotten
    est.add(0.4)  # a slowdown counts at once
    assert est.estimate() == pytest.approx(0.4)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_latency_estimate_refuses_nonsense(bad):
    with pytest.raises(ValueError):
        LatencyEstimate().add(bad)
    with pytest.raises(ValueError):
        LatencyEstimate(window=0)


# ---------------------------------------------------------------------------------------------- arithmetic


def test_inference_delay_counts_the_steps_that_pass_before_the_chunk_lands():
    # Observation 30 ms old when inference starts, 200 ms of inference: 230 ms = 23 periods of 10 ms.
    assert inference_delay(S, S + 30 * MS, 0.2, P) == 23
    assert inference_delay(S, S + 30 * MS, 0.2001, P) == 24  # a part of a step is a whole step
    assert inference_delay(S, S, 0.0, P) == 0
    assert inference_delay(S, S - 5 * MS, 0.0, P) == 0  # a stamp from the future never gives a negative delay
    assert inference_delay(S, S + 2 * P + 1, 0.0, P) == 3


def test_leftover_on_the_grid_is_the_rest_of_the_previous_chunk():
    prev = TimedChunk(S, P, ramp(10))
    assert np.array_equal(leftover(prev, S + 4 * P, P), ramp(6, start=4))
    assert np.array_equal(leftover(prev, S, P), ramp(10))
    assert np.array_equal(leftover(prev, S + 9 * P, P), ramp(1, start=9))


def test_leftover_off_the_grid_is_interpolated_within_the_previous_chunk():
    prev = TimedChunk(S, P, ramp(10))
    out = leftover(prev, S + 4 * P + 3 * MS, P)  # 0.3 of a step later than the grid
    np.testing.assert_allclose(out[:, 0], 4.3 + np.arange(5))  # 4.3 .. 8.3: 9.3 is past the chunk's end


def test_no_leftover_before_or_after_the_previous_chunk():
    prev = TimedChunk(S, P, ramp(10))
    assert leftover(None, S, P) is None
    assert leftover(prev, S + 9 * P + 1, P) is None  # it ended: the queue ran dry
    assert leftover(prev, S - 1, P) is None  # an observation older than the chunk (a clock that went back)


def test_prepare_freezes_at_most_the_leftover_and_guides_at_least_the_frozen_steps():
    rtc = RealTimeChunking(P, latency_window=3)
    first = rtc.prepare(S, S + 5 * MS, execution_horizon=10)
    assert first.leftover is None  # the first chunk: nothing to continue, no guidance
    rtc.record(S, ramp(50), latency_s=0.2, landed_ns=S)
    # 20 steps later, 5 ms old at start, latency 200 ms: 21 steps pass before it lands.
    inputs = rtc.prepare(S + 20 * P, S + 20 * P + 5 * MS, execution_horizon=10)
    assert np.array_equal(inputs.leftover, ramp(30, start=20))
    assert inputs.inference_delay == 21
    assert inputs.execution_horizon == 21  # the frozen steps are always inside the guided region
    # Near the end of the previous chunk: the delay cannot exceed what is left to freeze to.
    near_end = rtc.prepare(S + 45 * P, S + 45 * P, execution_horizon=10)
    assert len(near_end.leftover) == 5 and near_end.inference_delay == 5 and near_end.execution_horizon == 5
    rtc.forget()
    assert rtc.prepare(S + 20 * P, S + 20 * P, execution_horizon=10).leftover is None


def test_prepare_uses_the_windowed_latency():
    rtc = RealTimeChunking(P, latency_window=2)
    rtc.record(S, ramp(50), latency_s=0.3, landed_ns=S)  # a slow first chunk
    rtc.record(S, ramp(50), latency_s=0.05, landed_ns=S)
    assert rtc.prepare(S, S, 10).inference_delay == 30
    rtc.record(S, ramp(50), latency_s=0.05, landed_ns=S)
    assert rtc.prepare(S, S, 10).inference_delay == 5


def test_recorded_timeline_follows_the_aggregators_re_timing():
    """The aggregator runs a chunk that finds its queue empty from its first step not executed, at once: the
    next leftover must be taken on that timeline, not on the observation's."""
    rtc = RealTimeChunking(P)
    # The first chunk: observation at S, published 200 ms later. The arm was holding: it runs from step 0 then.
    assert rtc.record(S, ramp(50), latency_s=0.2, landed_ns=S + 200 * MS) == S + 200 * MS
    inputs = rtc.prepare(S + 220 * MS, S + 220 * MS, execution_horizon=10)
    assert inputs.leftover[0, 0] == 2.0  # 20 ms after it started running: step 2, not step 22
    # A chunk landing while the previous one still runs keeps its stamp.
    assert rtc.record(S + 220 * MS, ramp(50, start=100), latency_s=0.1, landed_ns=S + 320 * MS) == S + 220 * MS
    # One landing after the previous one ran out (at S + 220 ms + 49 P = S + 710 ms): its steps up to then
    # executed (from the previous chunk, which it was frozen to), the next one runs at landing.
    stamp = rtc.record(S + 600 * MS, ramp(50, start=200), latency_s=0.2, landed_ns=S + 800 * MS)
    assert stamp == S + 800 * MS - 12 * P  # steps at S+600..S+710 ms (12 of them) ran before it landed


# ---------------------------------------------------------------------------------------------- execution


def test_first_rtc_chunk_starts_at_its_first_step_instead_of_jumping():
    """200 ms of inference before the first chunk: by time, its first 20 steps are dead on arrival, but the arm
    was holding, so none of them ran. The RTC chunk is re-timed; a blending strategy drops them (LeRobot's
    semantics for those, kept)."""
    now = S + 200 * MS
    plain = ActionQueue(P)
    assert plain.merge(S + P * np.arange(50), ramp(50, 1), now_ns=now).dropped_past == 20
    queue = ActionQueue(P, "weighted_average")
    report = queue.merge(S + P * np.arange(50), ramp(50, 1), now_ns=now, rtc=True)
    assert report == MergeReport(dropped_past=0, merged=0, added=50, shifted_ns=200 * MS)
    sent = [queue.next_setpoint(now + k * P + MS)[0] for k in range(50)]
    assert sent == list(range(50))  # every step, in order, one per tick
    assert queue.next_setpoint(now + 60 * P) is None


def test_rtc_chunk_after_the_queue_ran_dry_skips_only_what_was_executed():
    queue = ActionQueue(P)
    queue.merge(S + P * np.arange(10), ramp(10, 1), now_ns=S, rtc=True)
    for k in range(10):  # all of A executes: slots 0..9, the last at S + 9P
        assert queue.next_setpoint(S + k * P)[0] == k
    assert queue.next_setpoint(S + 15 * P) is None  # dry: the arm holds at A's last step
    # B was computed from an observation at S + 5P (A still running); it lands at S + 20P + 3 ms. Its steps at
    # S+5P..S+9P were executed (A's, which B's prefix was frozen to); the next one, B[5], must go next.
    b = ramp(50, 1, start=100)
    report = queue.merge(S + 5 * P + P * np.arange(50), b, now_ns=S + 20 * P + 3 * MS, rtc=True)
    assert report.dropped_past == 5 and report.shifted_ns == 10 * P  # B[5] was stamped for S + 10P
    assert queue.next_setpoint(S + 20 * P + 5 * MS)[0] == 105
    assert queue.next_setpoint(S + 21 * P + 5 * MS)[0] == 106


def test_rtc_chunk_observed_while_holding_runs_from_its_start():
    queue = ActionQueue(P)
    queue.merge(S + P * np.arange(10), ramp(10, 1), now_ns=S, rtc=True)
    queue.next_setpoint(S + 9 * P)
    report = queue.merge(S + 30 * P + P * np.arange(50), ramp(50, 1, start=100), now_ns=S + 50 * P, rtc=True)
    assert report.dropped_past == 0
    assert queue.next_setpoint(S + 50 * P + MS)[0] == 100


def test_rtc_chunk_while_executing_replaces_the_plan_from_the_due_slot_without_blending():
    queue = ActionQueue(P, "weighted_average")
    queue.merge(S + P * np.arange(50), np.zeros((50, 1)), now_ns=S, rtc=True)
    for k in range(10):
        queue.next_setpoint(S + k * P)
    # B from an observation at S + 5P, landing at S + 10P + 2 ms: steps up to slot 9 ran from A; slot 10 is due.
    report = queue.merge(S + 5 * P + P * np.arange(50), ramp(50, 1, start=100), now_ns=S + 10 * P + 2 * MS, rtc=True)
    assert report.dropped_past == 5 and report.shifted_ns == 0
    times, values = queue.plan()
    assert times[0] == S + 10 * P and values[0, 0] == 105.0  # B's value, not 0.3 * 0 + 0.7 * 105
    assert np.array_equal(values[:, 0], 105.0 + np.arange(45))  # A's later slots are gone


def test_rtc_chunk_that_was_entirely_executed_is_rejected_and_changes_nothing():
    queue = ActionQueue(P)
    queue.merge(S + P * np.arange(10), ramp(10, 1), now_ns=S, rtc=True)
    for k in range(10):
        queue.next_setpoint(S + k * P)
    with pytest.raises(ChunkRejected, match="entirely in the past"):
        queue.merge(S + P * np.arange(5), ramp(5, 1), now_ns=S + 20 * P, rtc=True)
    assert len(queue) == 0 and queue.anchor_ns == S
