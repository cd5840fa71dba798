"""tools/eval_metrics on constructed cases whose answers are known by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from gemma3nvla_ros.tools import eval_metrics as em

S = 1_000_000_000


def test_reference_hold_takes_the_latest_command_within_the_gap():
    ref_t = np.array([10, 20, 30], dtype=np.int64) * S
    ref_v = np.array([[1.0], [2.0], [3.0]])
    times = np.array([5, 10, 15, 29, 30, 30 + 0.4, 31], dtype=np.float64) * S
    out = em.reference_at(times.astype(np.int64), ref_t, ref_v, "hold", max_gap_ns=int(0.5 * S))
    assert np.isnan(out[0, 0])  # before the first command
    assert out[1, 0] == 1.0  # at a command: that command
    assert np.isnan(out[2, 0])  # 5 s after the last command: too old
    assert np.isnan(out[3, 0])
    assert out[4, 0] == 3.0 and out[5, 0] == 3.0
    assert np.isnan(out[6, 0])


def test_reference_interp_is_linear_and_leads():
    ref_t = np.array([0, 10, 20, 100], dtype=np.int64)
    ref_v = np.array([[0.0, 0.0], [10.0, -1.0], [20.0, -2.0], [100.0, -10.0]])
    times = np.array([-5, 0, 3, 10, 15, 20, 25, 95, 100], dtype=np.int64)
    out = em.reference_at(times, ref_t, ref_v, "interp", max_gap_ns=15, lead_ns=2)
    # query = t + 2
    assert np.isnan(out[0]).all()  # -3: before the recording
    np.testing.assert_allclose(out[1], [2.0, -0.2])
    np.testing.assert_allclose(out[2], [5.0, -0.5])
    np.testing.assert_allclose(out[3], [12.0, -1.2])
    np.testing.assert_allclose(out[4], [17.0, -1.7])
    assert np.isnan(out[5]).all() and np.isnan(out[6]).all()  # inside the 80 ns hole
    assert np.isnan(out[7]).all()  # 97: still in the hole
    assert np.isnan(out[8]).all()  # 102: after the recording
    exact = em.reference_at(np.array([20], dtype=np.int64), ref_t, ref_v, "interp", max_gap_ns=15)
    np.testing.assert_allclose(exact[0], [20.0, -2.0])  # a sample itself, even next to a hole


def test_joint_errors_skip_unknown_reference_rows():
    pred = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 5.0]])
    ref = np.array([[0.0, 0.0], [0.0, 0.0], [np.nan, np.nan]])
    out = em.joint_errors(pred, ref, ["a", "b"])
    assert out["n"] == 2
    assert out["joints"]["a"] == {"mae": 1.5, "rmse": pytest.approx(math.sqrt(2.5)), "max_abs": 2.0}
    assert out["joints"]["b"]["mae"] == 0.0
    assert out["mean_mae"] == pytest.approx(0.75)
    empty = em.joint_errors(np.zeros((0, 2)), np.zeros((0, 2)), ["a", "b"])
    assert empty["n"] == 0 and empty["joints"]["a"]["mae"] is None and empty["mean_mae"] is None


def test_horizon_errors_accumulate_per_step():
    sums, counts = np.zeros((3, 1)), np.zeros(3, dtype=np.int64)
    times = np.array([0, 1, 2], dtype=np.int64)
    em.accumulate_horizon(times, np.array([[1.0], [2.0], [3.0]]), np.array([[0.0], [0.0], [np.nan]]), sums, counts)
    em.accumulate_horizon(times[:2], np.array([[3.0], [4.0]]), np.array([[0.0], [0.0]]), sums, counts)
    out = em.horizon_errors(sums, counts, ["a"])
    assert out["count"] == [2, 2, 0]
    assert out["mae"]["a"] == [2.0, 3.0, None]
    assert out["mean_mae"] == [2.0, 3.0, None]


def test_gripper_agreement():
    pred = np.array([80.0, 80.0, 10.0, 10.0, 60.0])
    ref = np.array([90.0, 10.0, 10.0, 90.0, np.nan])
    out = em.gripper_agreement(pred, ref, threshold=50.0)
    assert out["n"] == 4 and out["agreement"] == 0.5
    assert out["open_when_recorded_closed"] == 1 and out["closed_when_recorded_open"] == 1
    assert out["recorded_open_fraction"] == 0.5
    assert em.gripper_agreement(pred, np.full(5, np.nan), 50.0)["agreement"] is None


def test_latency_stats():
    out = em.latency_stats([0.1, 0.2, 0.3, 0.4])
    assert out["n"] == 4 and out["max_s"] == 0.4 and out["p50_s"] == pytest.approx(0.25)
    assert em.latency_stats([])["p50_s"] is None
