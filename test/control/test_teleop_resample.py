"""Leader -> follower mapping, the simulated leader's motion, and the resampling rules of bag-to-dataset."""
from __future__ import annotations

import numpy as np
import pytest

from gemma3nvla_ros.control import resample, units
from gemma3nvla_ros.control.teleop import LeaderMapping, ScriptedMotion
from gemma3nvla_ros.hardware.calibration import EXAMPLE_CALIBRATION

NAMES = list(EXAMPLE_CALIBRATION)
FOLLOWER = units.JointRanges.from_calibration(EXAMPLE_CALIBRATION, NAMES)
# A leader calibrated differently (its trigger-gripper has another range), as real leader arms are.
LEADER_CAL = {n: dict(c) for n, c in EXAMPLE_CALIBRATION.items()}
LEADER_CAL["gripper"].update(range_min=1900, range_max=2500)
LEADER_CAL["elbow_flex"].update(range_min=1000, range_max=3000)
LEADER = units.JointRanges.from_calibration(LEADER_CAL, NAMES)


def test_without_follower_calibration_the_leader_angles_are_published():
    mapping = LeaderMapping(LEADER)
    ticks = LEADER.mid + np.array([100, -200, 300, 0, 50, 150])
    np.testing.assert_allclose(mapping.to_follower_radians(ticks), units.ticks_to_radians(ticks, LEADER))
    np.testing.assert_allclose(mapping.to_follower_radians(LEADER.mid), 0.0, atol=1e-12)


def test_with_follower_calibration_the_mapping_is_lerobots():
    """LeRobot teleop sends the leader's normalized values to the follower unchanged: degrees for the
    arm (same angle from mid-range), 0..100 for the gripper (range to range)."""
    mapping = LeaderMapping(LEADER, FOLLOWER, "degrees")
    g = NAMES.index("gripper")
    ticks = LEADER.mid.copy()
    ticks[g] = LEADER.range_max[g]  # trigger fully pressed
    ticks[NAMES.index("elbow_flex")] += 455  # 40 degrees
    out = mapping.to_follower_radians(ticks)
    follower_ticks = units.radians_to_ticks(out, FOLLOWER)
    assert follower_ticks[g] == pytest.approx(FOLLOWER.range_max[g])  # jaw fully at its own limit
    assert np.degrees(out[NAMES.index("elbow_flex")]) == pytest.approx(455 * 360 / 4095)
    leader_deg = units.DatasetUnits(LEADER, "degrees").ticks_to_dataset(ticks)
    follower_deg = units.DatasetUnits(FOLLOWER, "degrees").ros_to_dataset(out)
    np.testing.assert_allclose(follower_deg, leader_deg, atol=1e-9)

    ranged = LeaderMapping(LEADER, FOLLOWER, "range_m100_100").to_follower_radians(ticks)
    leader_pct = units.DatasetUnits(LEADER, "range_m100_100").ticks_to_dataset(ticks)
    np.testing.assert_allclose(units.DatasetUnits(FOLLOWER, "range_m100_100").ros_to_dataset(ranged), leader_pct, atol=1e-9)


def test_mapping_refuses_different_joints():
    other = units.JointRanges.from_calibration(EXAMPLE_CALIBRATION, NAMES[::-1])
    with pytest.raises(ValueError, match="differ"):
        LeaderMapping(LEADER, other)


def test_scripted_motion_starts_at_rest_stays_in_range_and_is_slow():
    motion = ScriptedMotion()
    np.testing.assert_allclose(motion.ticks(0.0, FOLLOWER), FOLLOWER.mid)
    t = np.arange(0, 30, 1 / 30)
    poses = np.array([motion.ticks(x, FOLLOWER) for x in t])
    assert (poses >= FOLLOWER.range_min).all() and (poses <= FOLLOWER.range_max).all()
    step_rad = np.abs(np.diff(poses, axis=0)).max() * units.RAD_PER_TICK
    assert step_rad < 0.05  # per 1/30 s: far below the bridge's max_relative_target
    assert (poses.max(axis=0) - poses.min(axis=0) > 100).all()  # every joint moves visibly


# --- resampling ---------------------------------------------------------------------------------------------

def test_live_segments_and_intersection():
    s = np.array([0, 10, 20, 100, 110, 300])
    assert resample.live_segments(s, 15) == [(0, 20), (100, 110), (300, 300)]
    assert resample.live_segments(np.array([], dtype=np.int64), 15) == []
    assert resample.intersect([(0, 20), (100, 110)], [(5, 105)]) == [(5, 20), (100, 105)]


def test_episode_windows_split_filter_and_cut():
    ms = 1_000_000
    a = np.arange(0, 5000 * ms, 10 * ms)
    b = np.concatenate([np.arange(5 * ms, 2000 * ms, 33 * ms), np.arange(3000 * ms, 5000 * ms, 33 * ms)])
    windows = resample.episode_windows({"a": a, "b": b}, 100 * ms)
    assert windows == [(5 * ms, 1985 * ms), (3000 * ms, 4980 * ms)]
    assert resample.episode_windows({"a": a, "b": b[:-20]}, 100 * ms, min_len_ns=1500 * ms) == [(5 * ms, 1985 * ms)]
    cut = resample.episode_windows({"a": a}, 100 * ms, max_len_ns=2000 * ms, min_len_ns=500 * ms)
    assert cut == [(0, 2000 * ms), (2000 * ms + 1, 4000 * ms + 1), (4000 * ms + 2, 4990 * ms)]


def test_frame_times_and_previous_index():
    times = resample.frame_times((1000, 1000 + 10**9), 30.0)
    assert len(times) == 31 and times[0] == 1000 and times[-1] == 1000 + 10**9
    assert np.all(np.diff(times) >= 33_333_333)
    stamps = np.array([0, 10, 20])
    assert resample.previous_index(stamps, np.array([-1, 0, 9, 10, 25])).tolist() == [-1, 0, 0, 1, 2]


def test_zero_order_hold_per_joint_with_state_fallback():
    joints = ["a", "b", "c"]
    values = resample.joint_matrix([["a", "b"], ["b"], ["a"]], [[1.0, 2.0], [3.0], [4.0]], joints)
    assert np.isnan(values[1, 0]) and np.isnan(values[0, 2])
    stamps = np.array([10, 20, 30])
    fallback = np.full((4, 3), -1.0)
    out = resample.sample_held(stamps, values, np.array([5, 10, 25, 35]), fallback=fallback)
    np.testing.assert_array_equal(out, [[-1, -1, -1], [1, 2, -1], [1, 3, -1], [4, 3, -1]])
