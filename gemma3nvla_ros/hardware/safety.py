"""The bridge's goal logic, no ROS: calibrated-range clamp, per-step clamp relative to the present
position (LeRobot's ``max_relative_target``), and the command watchdog.

States: IDLE (no command yet: servos hold the goal = present written when torque came on), ACTIVE
(fresh commands: one goal per cycle, stepping towards the target), HOLDING (commands stopped for
longer than ``command_timeout``: the present position is latched once as the goal and kept — the arm
stops where it is, and the latched goal is not re-read each cycle, so a joint sagging under load does
not ratchet down).  Times are node-clock nanoseconds, so use_sim_time drives it too.

Motor recovery (:func:`motors_to_recover`, :meth:`ArmGoalController.hold_joint`): a motor that failed
to answer, or reads torque off while the bridge holds, is brought back holding where it now is. Only
that joint's target is reset; the watchdog state and the other joints' targets are kept. Rationale:
the other servos never lost torque and hold (or step towards) goals that were clamped relative to
fresh present positions, so they need nothing; a full reset would drop their targets mid-motion and
turn a HOLDING latch into IDLE for no safety gain. What matters is that the recovered joint is not
driven back to a target from before the outage, which may be far from where it fell; with its target
at its present position, later commands move it only as they move any joint (the calibrated range
and ``max_relative_target`` apply relative to its new present). A port loss still resets everything
(every servo may have been power-cycled).
"""
from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from gemma3nvla_ros.control import units

if TYPE_CHECKING:
    from gemma3nvla_ros.hardware.feetech_bus import MotorHealth


class WatchdogState(str, enum.Enum):
    IDLE = "idle"
    ACTIVE = "active"
    HOLDING = "holding"


@dataclass
class CycleResult:
    goals: NDArray[np.int64] | None  # integer Goal_Position per joint, None = write nothing
    range_clamped: list[str]
    step_clamped: list[str]
    state: WatchdogState


def parse_max_relative_target(value: float | Sequence[float], n_joints: int) -> NDArray[np.float64] | None:
    """Scalar or one value per joint, radians. 0 (or an empty list) disables the per-step clamp;
    negative or non-finite values are an error."""
    arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if arr.size == 0 or (arr.size == 1 and arr[0] == 0.0):
        return None
    if arr.size == 1:
        arr = np.full(n_joints, arr[0])
    if arr.size != n_joints:
        raise ValueError(f"max_relative_target needs 1 or {n_joints} values, got {arr.size}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"max_relative_target values must be > 0 radians, got {arr.tolist()}")
    return arr


def joints_outside_range(
    present_ticks: NDArray[np.float64], ranges: units.JointRanges, tolerance_ticks: float
) -> list[tuple[str, int, int, int]]:
    """Joints whose present position lies more than ``tolerance_ticks`` outside the calibrated range,
    as ``(name, present, range_min, range_max)``. The servo firmware clamps goals to its limits, so
    enabling torque with goal := present would drive such a joint to the limit at full speed."""
    present = np.asarray(present_ticks, dtype=np.float64)
    bad = (present < ranges.range_min - tolerance_ticks) | (present > ranges.range_max + tolerance_ticks)
    return [
        (n, int(p), int(lo), int(hi))
        for n, p, lo, hi, b in zip(ranges.names, present, ranges.range_min, ranges.range_max, bad)
        if b
    ]


def motors_to_recover(health: Mapping[str, "MotorHealth"]) -> list[str]:
    """Motors whose torque must be re-enabled, given that every motor just answered a read: those
    marked ``unreachable`` (a transaction failed after its retries: maybe a brown-out, after which the
    servo is limp with its RAM reset), and those read with torque off while no alarm is reported (an
    overload trip that has cleared). A motor whose alarm is still active is left limp: the firmware
    would switch torque straight off again, and an overheating servo should cool down."""
    due = []
    for name, h in health.items():
        alarm = (h.status or 0) | h.error_bits
        if h.unreachable or (h.torque_enabled is False and not alarm):
            due.append(name)
    return due


class ArmGoalController:
    def __init__(
        self,
        ranges: units.JointRanges,
        *,
        max_relative_target: NDArray[np.float64] | None,
        command_timeout_ns: int,
    ) -> None:
        self.ranges = ranges
        self.names = list(ranges.names)
        self.max_step_ticks = (
            None if max_relative_target is None else np.asarray(max_relative_target) / units.RAD_PER_TICK
        )
        self.command_timeout_ns = int(command_timeout_ns)
        self.state = WatchdogState.IDLE
        self._target: NDArray[np.float64] | None = None  # ticks
        self._last_command_ns: int | None = None
        self.commands_accepted = 0

    def reset(self) -> None:
        """Forget commands (after torque was re-enabled / reconnect): back to IDLE."""
        self.state = WatchdogState.IDLE
        self._target = None
        self._last_command_ns = None

    def hold_joint(self, name: str, present_tick: float) -> None:
        """One joint came back (goal := present written, torque on): its target becomes its present
        position, so no cycle drives it back to a target from before. Other joints and the watchdog
        state are untouched (see the module docstring)."""
        if self._target is not None:
            self._target[self.names.index(name)] = float(present_tick)

    def on_command(self, positions_rad: Mapping[str, float], now_ns: int, present_ticks: NDArray[np.float64] | None) -> None:
        """Accept an already validated command. Joints it does not name keep their previous target
        (their present position if there was none yet)."""
        if self._target is None:
            if present_ticks is None:
                raise ValueError("no present position known yet")
            self._target = np.array(present_ticks, dtype=np.float64)
        target_rad = units.ticks_to_radians(self._target, self.ranges)
        for name, rad in positions_rad.items():
            target_rad[self.names.index(name)] = rad
        self._target = units.radians_to_ticks(target_rad, self.ranges)
        self._last_command_ns = now_ns
        self.state = WatchdogState.ACTIVE
        self.commands_accepted += 1

    def cycle(self, present_ticks: NDArray[np.float64], now_ns: int) -> CycleResult:
        """Goals for this control cycle given the present position (ticks)."""
        present = np.asarray(present_ticks, dtype=np.float64)
        if self.state is WatchdogState.ACTIVE and self._last_command_ns is not None:
            if now_ns - self._last_command_ns > self.command_timeout_ns:
                # Commands stopped: latch where the arm is now and stop there.
                self.state = WatchdogState.HOLDING
                self._target = present.copy()
                goals = units.ticks_to_goal(self._clip_range(present))
                return CycleResult(goals, [], [], self.state)
        if self.state is not WatchdogState.ACTIVE or self._target is None:
            return CycleResult(None, [], [], self.state)
        clipped = self._clip_range(self._target)
        range_clamped = [n for n, a, b in zip(self.names, clipped, self._target) if a != b]
        goal = clipped
        step_clamped: list[str] = []
        if self.max_step_ticks is not None:
            lo, hi = present - self.max_step_ticks, present + self.max_step_ticks
            stepped = np.clip(goal, lo, hi)
            step_clamped = [n for n, a, b in zip(self.names, stepped, goal) if abs(a - b) > 1e-9]
            goal = self._clip_range(stepped)
        return CycleResult(units.ticks_to_goal(goal), range_clamped, step_clamped, self.state)

    def _clip_range(self, ticks: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.clip(ticks, self.ranges.range_min, self.ranges.range_max)
