"""Frame timing on a monotonic clock: age of the last frame, a rate that a stall pulls down, gaps."""
from __future__ import annotations

import pytest

from gemma3nvla_ros.hardware.frame_timing import FrameTiming, rate_window_s


def _steady(timing: FrameTiming, start: float, fps: float, n: int) -> float:
    t = start
    for i in range(n):
        t = start + i / fps
        timing.record(t)
    return t


def test_age_counts_from_the_start_until_the_first_frame():
    timing = FrameTiming(started=10.0)
    assert timing.seconds_since_last(10.5) == pytest.approx(0.5)
    timing.record(10.6)
    assert timing.seconds_since_last(10.7) == pytest.approx(0.1)


def test_rate_reflects_a_stall_instead_of_the_rate_before_it():
    timing = FrameTiming(started=0.0)
    last = _steady(timing, 0.0, 30.0, 90)  # 3 s at 30 fps
    window = rate_window_s(30.0)
    assert window == 2.0
    assert timing.fps(last + 0.01, window) == pytest.approx(30.0, rel=0.05)
    assert timing.fps(last + 1.0, window) == pytest.approx(15.0, rel=0.1)  # half the window without a frame
    assert timing.fps(last + 2.5, window) == 0.0  # none left in the window


def test_rate_window_holds_ten_frames_of_a_slow_camera():
    assert rate_window_s(2.0) == 5.0
    timing = FrameTiming(started=0.0)
    last = _steady(timing, 0.0, 2.0, 20)
    assert timing.fps(last + 0.1, rate_window_s(2.0)) == pytest.approx(2.0, rel=0.1)


def test_longest_gap_is_taken_once():
    timing = FrameTiming(started=0.0)
    for t in (0.1, 0.2, 1.7, 1.8):
        timing.record(t)
    assert timing.take_longest_gap() == pytest.approx(1.5)
    assert timing.take_longest_gap() == 0.0
    timing.record(1.9)
    assert timing.take_longest_gap() == pytest.approx(0.1)
