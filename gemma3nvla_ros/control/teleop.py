"""Leader arm -> follower joint commands, and the scripted motion of a simulated leader. Pure, no ROS.

Mapping (what LeRobot's ``lerobot-teleoperate`` does, expressed in the follower's ROS radians):

* Without the follower's calibration: the leader's own joint angles in radians (``units.ticks_to_radians``
  with the leader's calibration: 0 at the middle of each calibrated range, the SO-101 URDF zero). For
  joints 1-5 that is exactly LeRobot's ``use_degrees=True`` mapping (degrees are mid-relative on both arms).
  The gripper, though, is passed as an angle too: the leader's trigger and the follower's jaw have
  different ranges, so a fully pressed trigger may ask for more than the follower's range (the bridge then
  clamps it, and says so on its log).
* With the follower's calibration: leader ticks -> LeRobot units with the leader's calibration
  (degrees or -100..100 for joints 1-5, 0..100 for the gripper) -> the same number on the follower ->
  follower radians. This is LeRobot's mapping exactly: the gripper goes range-to-range (trigger fully
  pressed = jaw fully closed), and ``range_m100_100`` maps every joint range-to-range.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from gemma3nvla_ros.control import units


class LeaderMapping:
    """Leader Present_Position ticks (bus order) -> follower joint positions in radians."""

    def __init__(
        self,
        leader: units.JointRanges,
        follower: units.JointRanges | None = None,
        mode: units.UnitMode | str = units.UnitMode.DEGREES,
        gripper: str | None = "gripper",
    ) -> None:
        self.leader = leader
        self.follower = follower
        self.mode = units.UnitMode.parse(mode)
        if follower is not None:
            if tuple(follower.names) != tuple(leader.names):
                raise ValueError(f"leader joints {list(leader.names)} and follower joints {list(follower.names)} differ")
            self._leader_units = units.DatasetUnits(leader, self.mode, gripper=gripper)
            self._follower_units = units.DatasetUnits(follower, self.mode, gripper=gripper)

    @property
    def description(self) -> str:
        if self.follower is None:
            return "leader angles in radians (no follower calibration: the gripper maps by angle)"
        return f"LeRobot {self.mode.value} (gripper 0..100) from the leader's calibration onto the follower's"

    def to_follower_radians(self, leader_ticks: ArrayLike) -> NDArray[np.float64]:
        if self.follower is None:
            return units.ticks_to_radians(leader_ticks, self.leader)
        return self._follower_units.dataset_to_ros(self._leader_units.ticks_to_dataset(leader_ticks))


@dataclass(frozen=True)
class ScriptedMotion:
    """A slow, smooth motion for a simulated leader ("a hand moving it"), in the leader's tick frame.

    Every joint starts at the middle of its calibrated range (where the simulated servos rest, so the
    follower does not jump when teleoperation starts) and swings sinusoidally around it: ``amplitude`` of
    the half-range (at most ``max_amplitude_ticks``, ~26 degrees), one full swing per ``period_s``, each
    joint phase-shifted; the gripper opens and closes between 20 % and 80 % of its range.
    """

    period_s: float = 8.0
    amplitude: float = 0.3
    max_amplitude_ticks: float = 300.0
    gripper: str | None = "gripper"

    def ticks(self, t: float, ranges: units.JointRanges) -> NDArray[np.float64]:
        half = (ranges.range_max - ranges.range_min) / 2.0
        amp = np.minimum(self.amplitude * half, self.max_amplitude_ticks)
        phase = np.arange(len(ranges.names)) * (math.pi / 3.0)
        w = 2.0 * math.pi / self.period_s
        # sin(w t - phase) is not 0 at t = 0 for phase > 0: ramp the swing in over the first period.
        ramp = min(max(t / self.period_s, 0.0), 1.0)
        out = ranges.mid + ramp * amp * np.sin(w * t - phase)
        if self.gripper in ranges.names:
            g = ranges.index(self.gripper)
            frac = 0.5 + 0.3 * math.sin(w * 1.5 * t) * ramp
            out[g] = ranges.range_min[g] + frac * (ranges.range_max[g] - ranges.range_min[g])
        return out
