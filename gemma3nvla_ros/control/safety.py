"""The bridge's goal logic, no ROS: calibrated-range clamp, per-step clamp relative to the present
position (LeRobot's ``max_relative_target``), and the command watchdog.

States: IDLE (no command yet: servos hold the goal = present written when torque came on), ACTIVE
(fresh commands: one goal per cycle, stepping towards the target), HOLDING (commands stopped for
longer than ``command_timeout``: the present position is latched once as the goal and kept — the arm
stops where it is, and the latched goal is not re-read each cycle, so a joint sagging under load does
not ratchet down). Joints in ``keep_goal_on_hold`` (the gripper by default) latch their last commanded
target instead: a gripper squeezing an object holds it through its position error, and latching it to
where it stands would open the grip and drop the object. Times are steady-clock nanoseconds (the
hardware loop's clock, as in ros2_control): a ROS clock that jumps back or stops cannot keep a stale
target alive or freeze the latch.

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
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from gemma3nvla_ros.control import units

if TYPE_CHECKING:
    from gemma3nvla_ros.hardware.feetech_bus import MotorHealth


SHUTDOWN_ACTIONS = ("disable_torque", "hold")
OVERLOAD_RECOVERY = ("manual", "auto")


def check_choice(value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"must be one of {list(choices)}, not {value!r}")
    return value


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


def alarm_active(health: "MotorHealth") -> bool:
    """The servo reports an alarm (overload, overheat, voltage, ...) in its status or error bits."""
    return bool((health.status or 0) | health.error_bits)


def motors_to_recover(health: Mapping[str, "MotorHealth"], tripped: Collection[str] = ()) -> list[str]:
    """Motors whose torque must be re-enabled, given that every motor just answered a read: those
    marked ``unreachable`` (a transaction failed after its retries: maybe a brown-out, after which the
    servo is limp with its RAM reset), and those read with torque off while no alarm is reported (a
    cleared trip, or a brown-out between two reads). A motor whose alarm is still active is left limp:
    the firmware would switch torque straight off again, and an overheating servo should cool down.
    ``tripped`` motors (an alarm was seen on them, often a collision) wait for an operator instead."""
    due = []
    for name, h in health.items():
        if name in tripped:
            continue
        if h.unreachable or (h.torque_enabled is False and not alarm_active(h)):
            due.append(name)
    return due


class ArmGoalController:
    def __init__(
        self,
        ranges: units.JointRanges,
        *,
        max_relative_target: NDArray[np.float64] | None,
        command_timeout_ns: int,
        keep_goal_on_hold: Sequence[str] = (),
    ) -> None:
        self.ranges = ranges
        self.names = list(ranges.names)
        self.set_max_relative_target(max_relative_target)
        self.command_timeout_ns = int(command_timeout_ns)
        self.set_keep_goal_on_hold(keep_goal_on_hold)
        self.state = WatchdogState.IDLE
        self._target: NDArray[np.float64] | None = None  # ticks
        self._last_command_ns: int | None = None
        self.commands_accepted = 0

    def set_max_relative_target(self, max_relative_target: NDArray[np.float64] | None) -> None:
        """Radians per joint (``parse_max_relative_target``'s result); None disables the step clamp."""
        self.max_step_ticks = (
            None if max_relative_target is None else np.asarray(max_relative_target) / units.RAD_PER_TICK
        )

    def set_keep_goal_on_hold(self, names: Sequence[str]) -> None:
        unknown = [n for n in names if n not in self.names]
        if unknown:
            raise ValueError(f"unknown joint names {unknown} (known: {self.names})")
        self._keep = np.array([n in names for n in self.names])

    def target_goals(self, present_ticks: NDArray[np.float64]) -> dict[str, int]:
        """Goal per joint that keeps its commanded target when the arm is to hold (``on_shutdown:
        hold``): its current goal for joints in ``keep_goal_on_hold`` that have a target, the present
        position for every other joint."""
        present = np.asarray(present_ticks, dtype=np.float64)
        held = present.copy()
        if self._target is not None:
            held[self._keep] = self._target[self._keep]
        goals = units.ticks_to_goal(self._step(self._clip_range(held), present))
        return dict(zip(self.names, goals.tolist()))

    def target_outside_range(self) -> list[str]:
        """Joints whose commanded target lies outside the calibrated range (it will be clamped)."""
        if self._target is None:
            return []
        return [n for n, a, b in zip(self.names, self._clip_range(self._target), self._target) if a != b]

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
                # Commands stopped: latch where the arm is now and stop there (kept joints: their target).
                self.state = WatchdogState.HOLDING
                latched = present.copy()
                if self._target is not None:
                    latched[self._keep] = self._target[self._keep]
                self._target = latched
                goals = units.ticks_to_goal(self._step(self._clip_range(latched), present))
                return CycleResult(goals, [], [], self.state)
        if self.state is not WatchdogState.ACTIVE or self._target is None:
            return CycleResult(None, [], [], self.state)
        clipped = self._clip_range(self._target)
        range_clamped = [n for n, a, b in zip(self.names, clipped, self._target) if a != b]
        goal = self._step(clipped, present)
        step_clamped = [n for n, a, b in zip(self.names, goal, clipped) if abs(a - b) > 1e-9]
        return CycleResult(units.ticks_to_goal(goal), range_clamped, step_clamped, self.state)

    def _step(self, goal: NDArray[np.float64], present: NDArray[np.float64]) -> NDArray[np.float64]:
        """The per-step clamp relative to the present position (then the range again)."""
        if self.max_step_ticks is None:
            return goal
        return self._clip_range(np.clip(goal, present - self.max_step_ticks, present + self.max_step_ticks))

    def _clip_range(self, ticks: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.clip(ticks, self.ranges.range_min, self.ranges.range_max)
