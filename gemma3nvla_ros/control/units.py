"""The one place that converts joint units: raw servo ticks, LeRobot's normalized units, ROS radians.

Everything goes through raw ticks (floats; the offset frame the servo reports after Homing_Offset), with
the formulas of LeRobot 0.4.4 ``SerialMotorsBus._normalize`` / ``_unnormalize``:

* ``degrees``  (MotorNormMode.DEGREES, default for joints 1-5 since 0.4.4 ``use_degrees=True``):
  ``deg = (ticks - mid) * 360 / 4095`` with ``mid = (range_min + range_max) / 2``; not clamped and
  ``drive_mode`` not applied (LeRobot ignores it in this mode).
* ``range_m100_100`` (older datasets): ticks clamped to ``[range_min, range_max]`` then mapped to
  ``[-100, 100]``, negated when ``drive_mode`` = 1.
* ``range_0_100`` (the gripper, always): ``[range_min, range_max]`` → ``[0, 100]``, ``100 - x`` when
  ``drive_mode`` = 1.

ROS side (REP-103): ``rad = deg * pi / 180`` of the LeRobot degrees above, for all six joints. The
gripper too is published as an angle in radians computed from its LeRobot degrees (0 rad = middle of
its calibrated range); that makes the ROS value calibration-independent in meaning and matches the
mid-range zero of the SO-101 URDF (so101_new_calib.urdf). Because radians and degrees share the same
zero, ROS ↔ dataset conversion needs the calibration only for the ``range_*`` modes.

Ticks → integer goals round to nearest (LeRobot truncates with ``int()``, which biases goals by up to
one tick and would make a "hold where you are" command creep down by a tick per cycle).
All functions accept scalars or arrays shaped ``(..., n_joints)``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

MAX_TICK = 4095  # LeRobot's max_res: resolution 4096 - 1
DEG_PER_TICK = 360.0 / MAX_TICK
RAD_PER_TICK = 2.0 * math.pi / MAX_TICK

FloatArray = NDArray[np.float64]


class UnitMode(str, Enum):
    """Units of joints 1-5 in a LeRobot dataset (the gripper is always RANGE_0_100)."""

    DEGREES = "degrees"
    RANGE_M100_100 = "range_m100_100"

    @classmethod
    def parse(cls, value: "str | UnitMode") -> "UnitMode":
        try:
            return cls(str(value.value if isinstance(value, UnitMode) else value).strip().lower())
        except ValueError:
            raise ValueError(
                f"unit mode must be 'degrees' or 'range_m100_100', not {value!r}"
            ) from None


class _CalibrationLike(Protocol):
    range_min: int
    range_max: int
    drive_mode: int


@dataclass(frozen=True)
class JointRanges:
    """Calibrated ranges of an ordered set of joints (arrays aligned with ``names``)."""

    names: tuple[str, ...]
    range_min: FloatArray
    range_max: FloatArray
    drive_mode: NDArray[np.bool_]

    @classmethod
    def from_calibration(
        cls, calibration: Mapping[str, Any], names: Sequence[str] | None = None
    ) -> "JointRanges":
        """From ``{name: MotorCalibration}`` or LeRobot's JSON dicts ``{name: {range_min, ...}}``."""
        names = tuple(names if names is not None else calibration.keys())

        def get(entry: Any, key: str) -> int:
            return int(entry[key] if isinstance(entry, Mapping) else getattr(entry, key))

        lo = np.array([get(calibration[n], "range_min") for n in names], dtype=np.float64)
        hi = np.array([get(calibration[n], "range_max") for n in names], dtype=np.float64)
        if np.any(hi <= lo):
            bad = [n for n, a, b in zip(names, lo, hi) if b <= a]
            raise ValueError(f"range_min must be < range_max for {bad}")
        dm = np.array([get(calibration[n], "drive_mode") != 0 for n in names], dtype=bool)
        return cls(names, lo, hi, dm)

    @property
    def mid(self) -> FloatArray:
        return (self.range_min + self.range_max) / 2.0

    def index(self, name: str) -> int:
        return self.names.index(name)


def _f(x: ArrayLike) -> FloatArray:
    return np.asarray(x, dtype=np.float64)


# --- ticks <-> LeRobot degrees / ROS radians ------------------------------------------------------------
def ticks_to_degrees(ticks: ArrayLike, ranges: JointRanges) -> FloatArray:
    return (_f(ticks) - ranges.mid) * DEG_PER_TICK


def degrees_to_ticks(degrees: ArrayLike, ranges: JointRanges) -> FloatArray:
    return _f(degrees) / DEG_PER_TICK + ranges.mid


def ticks_to_radians(ticks: ArrayLike, ranges: JointRanges) -> FloatArray:
    return (_f(ticks) - ranges.mid) * RAD_PER_TICK


def radians_to_ticks(radians: ArrayLike, ranges: JointRanges) -> FloatArray:
    return _f(radians) / RAD_PER_TICK + ranges.mid


def degrees_to_radians(degrees: ArrayLike) -> FloatArray:
    return np.deg2rad(_f(degrees))


def radians_to_degrees(radians: ArrayLike) -> FloatArray:
    return np.rad2deg(_f(radians))


# --- ticks <-> LeRobot range modes ---------------------------------------------------------------------
def ticks_to_range_m100_100(ticks: ArrayLike, ranges: JointRanges) -> FloatArray:
    t = np.clip(_f(ticks), ranges.range_min, ranges.range_max)
    norm = (t - ranges.range_min) / (ranges.range_max - ranges.range_min) * 200.0 - 100.0
    return np.where(ranges.drive_mode, -norm, norm)


def range_m100_100_to_ticks(values: ArrayLike, ranges: JointRanges) -> FloatArray:
    v = _f(values)
    v = np.clip(np.where(ranges.drive_mode, -v, v), -100.0, 100.0)
    return (v + 100.0) / 200.0 * (ranges.range_max - ranges.range_min) + ranges.range_min


def ticks_to_range_0_100(ticks: ArrayLike, ranges: JointRanges) -> FloatArray:
    t = np.clip(_f(ticks), ranges.range_min, ranges.range_max)
    norm = (t - ranges.range_min) / (ranges.range_max - ranges.range_min) * 100.0
    return np.where(ranges.drive_mode, 100.0 - norm, norm)


def range_0_100_to_ticks(values: ArrayLike, ranges: JointRanges) -> FloatArray:
    v = _f(values)
    v = np.clip(np.where(ranges.drive_mode, 100.0 - v, v), 0.0, 100.0)
    return v / 100.0 * (ranges.range_max - ranges.range_min) + ranges.range_min


def ticks_to_goal(ticks: ArrayLike) -> NDArray[np.int64]:
    """Float ticks → integer Goal_Position values (nearest tick, within the encoder's 0..4095)."""
    return np.clip(np.rint(_f(ticks)), 0, MAX_TICK).astype(np.int64)


# --- dataset units (what a LeRobot policy consumes and emits) -------------------------------------------
class DatasetUnits:
    """Converts a full joint vector between ticks / ROS radians and a dataset's units.

    ``mode`` applies to every joint except ``gripper`` (LeRobot: RANGE_0_100 always).
    """

    def __init__(self, ranges: JointRanges, mode: "UnitMode | str", gripper: str | None = "gripper") -> None:
        self.ranges = ranges
        self.mode = UnitMode.parse(mode)
        self._gripper = np.array([n == gripper for n in ranges.names], dtype=bool)

    @property
    def feature_names(self) -> list[str]:
        """LeRobot feature keys in joint order, e.g. ``shoulder_pan.pos``."""
        return [f"{n}.pos" for n in self.ranges.names]

    def ticks_to_dataset(self, ticks: ArrayLike) -> FloatArray:
        body = (
            ticks_to_degrees(ticks, self.ranges)
            if self.mode is UnitMode.DEGREES
            else ticks_to_range_m100_100(ticks, self.ranges)
        )
        return np.where(self._gripper, ticks_to_range_0_100(ticks, self.ranges), body)

    def dataset_to_ticks(self, values: ArrayLike) -> FloatArray:
        body = (
            degrees_to_ticks(values, self.ranges)
            if self.mode is UnitMode.DEGREES
            else range_m100_100_to_ticks(values, self.ranges)
        )
        return np.where(self._gripper, range_0_100_to_ticks(values, self.ranges), body)

    def ros_to_dataset(self, radians: ArrayLike) -> FloatArray:
        return self.ticks_to_dataset(radians_to_ticks(radians, self.ranges))

    def dataset_to_ros(self, values: ArrayLike) -> FloatArray:
        return ticks_to_radians(self.dataset_to_ticks(values), self.ranges)
