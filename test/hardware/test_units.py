"""control.units against LeRobot 0.4.4's own normalization (SerialMotorsBus._normalize/_unnormalize)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from gemma3nvla_ros.control import units
from gemma3nvla_ros.control.units import DatasetUnits, JointRanges, UnitMode
from gemma3nvla_ros.hardware.calibration import EXAMPLE_CALIBRATION, SO101_MOTORS

NAMES = list(SO101_MOTORS)


def _calibration(drive_modes=(0, 0, 0, 0, 0, 0)):
    cal = {k: dict(v) for k, v in EXAMPLE_CALIBRATION.items()}
    for name, dm in zip(NAMES, drive_modes):
        cal[name]["drive_mode"] = dm
    return cal


def _lerobot_bus(cal, use_degrees: bool):
    from lerobot.motors import Motor, MotorCalibration, MotorNormMode
    from lerobot.motors.feetech import FeetechMotorsBus

    body = MotorNormMode.DEGREES if use_degrees else MotorNormMode.RANGE_M100_100
    motors = {n: Motor(i, "sts3215", MotorNormMode.RANGE_0_100 if n == "gripper" else body) for n, i in SO101_MOTORS.items()}
    return FeetechMotorsBus(
        port="/dev/null-not-opened", motors=motors,
        calibration={n: MotorCalibration(**c) for n, c in cal.items()},
    )


RNG = np.random.default_rng(0)
TICKS = np.concatenate([
    np.array([[0] * 6, [4095] * 6, [2047] * 6]),
    np.array([[c["range_min"] for c in EXAMPLE_CALIBRATION.values()], [c["range_max"] for c in EXAMPLE_CALIBRATION.values()]]),
    RNG.integers(0, 4096, size=(40, 6)),
])


@pytest.mark.parametrize("mode", ["degrees", "range_m100_100"])
@pytest.mark.parametrize("drive_modes", [(0,) * 6, (1, 0, 1, 0, 1, 1)])
def test_ticks_to_dataset_equals_lerobot_normalize(mode, drive_modes):
    cal = _calibration(drive_modes)
    bus = _lerobot_bus(cal, use_degrees=(mode == "degrees"))
    conv = DatasetUnits(JointRanges.from_calibration(cal, NAMES), mode)
    ours = conv.ticks_to_dataset(TICKS)  # vectorized over all rows at once
    for row, mine in zip(TICKS, ours):
        theirs = bus._normalize({SO101_MOTORS[n]: int(t) for n, t in zip(NAMES, row)})
        np.testing.assert_allclose(mine, [theirs[SO101_MOTORS[n]] for n in NAMES], rtol=0, atol=1e-9)


@pytest.mark.parametrize("mode", ["degrees", "range_m100_100"])
@pytest.mark.parametrize("drive_modes", [(0,) * 6, (1, 0, 1, 0, 1, 1)])
def test_dataset_to_ticks_equals_lerobot_unnormalize(mode, drive_modes):
    cal = _calibration(drive_modes)
    bus = _lerobot_bus(cal, use_degrees=(mode == "degrees"))
    conv = DatasetUnits(JointRanges.from_calibration(cal, NAMES), mode)
    values = np.column_stack([RNG.uniform(-120, 120, 60) for _ in range(5)] + [RNG.uniform(-10, 110, 60)])
    ours = conv.dataset_to_ticks(values)
    for row, mine in zip(values, ours):
        theirs = bus._unnormalize({SO101_MOTORS[n]: float(v) for n, v in zip(NAMES, row)})
        # LeRobot truncates with int(); our float ticks truncate to the same integer.
        assert [int(x) for x in mine] == [theirs[SO101_MOTORS[n]] for n in NAMES]
        # And our goal rounding is within half a tick of the exact value.
        assert np.all(np.abs(units.ticks_to_goal(mine) - mine) <= 0.5 + 1e-9)


def test_ros_radians_are_lerobot_degrees_in_radians():
    ranges = JointRanges.from_calibration(EXAMPLE_CALIBRATION, NAMES)
    bus = _lerobot_bus(_calibration(), use_degrees=True)
    row = TICKS[10]
    theirs = bus._normalize({SO101_MOTORS[n]: int(t) for n, t in zip(NAMES, row)})
    rad = units.ticks_to_radians(row, ranges)
    np.testing.assert_allclose(rad[:5], np.deg2rad([theirs[SO101_MOTORS[n]] for n in NAMES[:5]]), atol=1e-12)
    # Mid-range is 0 rad for every joint, gripper included.
    np.testing.assert_allclose(units.ticks_to_radians(ranges.mid, ranges), 0.0, atol=1e-12)
    # One full turn of ticks (4095) is 2*pi, as LeRobot's 360 degrees per 4095 ticks.
    assert math.isclose(units.RAD_PER_TICK * 4095, 2 * math.pi)


@pytest.mark.parametrize("mode", list(UnitMode))
def test_ros_dataset_round_trip(mode):
    conv = DatasetUnits(JointRanges.from_calibration(EXAMPLE_CALIBRATION, NAMES), mode)
    ranges = conv.ranges
    ticks = RNG.uniform(ranges.range_min, ranges.range_max, size=(20, 6))
    rad = units.ticks_to_radians(ticks, ranges)
    np.testing.assert_allclose(conv.dataset_to_ros(conv.ros_to_dataset(rad)), rad, atol=1e-9)
    ds = conv.ros_to_dataset(rad)
    assert np.all((ds[:, 5] >= 0) & (ds[:, 5] <= 100))  # gripper always 0..100
    if mode is UnitMode.DEGREES:
        np.testing.assert_allclose(ds[:, :5], np.rad2deg(rad[:, :5]), atol=1e-9)
    else:
        assert np.all(np.abs(ds[:, :5]) <= 100)


def test_range_modes_clamp_like_lerobot():
    ranges = JointRanges.from_calibration(EXAMPLE_CALIBRATION, NAMES)
    assert np.all(units.ticks_to_range_m100_100(np.zeros(6), ranges)[:4] == -100)
    assert np.all(units.range_m100_100_to_ticks(np.full(6, 500.0), ranges) == ranges.range_max)
    assert np.all(units.range_0_100_to_ticks(np.full(6, -3.0), ranges) == ranges.range_min)


def test_ticks_to_goal_rounds_and_bounds():
    assert units.ticks_to_goal([2046.9999999, 2047.5001, -3.0, 5000.0]).tolist() == [2047, 2048, 0, 4095]


def test_unit_mode_parse_and_bad_calibration():
    assert UnitMode.parse("DEGREES") is UnitMode.DEGREES
    with pytest.raises(ValueError, match="degrees' or 'range_m100_100"):
        UnitMode.parse("radians")
    with pytest.raises(ValueError, match="range_min must be < range_max"):
        JointRanges.from_calibration({"a": {"range_min": 5, "range_max": 5, "drive_mode": 0}})
    conv = DatasetUnits(JointRanges.from_calibration(EXAMPLE_CALIBRATION, NAMES), "degrees")
    assert conv.feature_names[0] == "shoulder_pan.pos"
