"""Command validation, goal clamping and the watchdog (the bridge's pure logic)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from gemma3nvla_ros.control import units
from gemma3nvla_ros.hardware.calibration import EXAMPLE_CALIBRATION, SO101_MOTORS
from gemma3nvla_ros.control.commands import CommandRejected, check_command_age, validate_joint_command
from gemma3nvla_ros.control.safety import ArmGoalController, WatchdogState, parse_max_relative_target

NAMES = list(SO101_MOTORS)
RANGES = units.JointRanges.from_calibration(EXAMPLE_CALIBRATION, NAMES)
MS = 1_000_000


@pytest.mark.parametrize(
    "names,positions,needle",
    [
        ([], [], "no joint names"),
        (["gripper"], [0.1, 0.2], "1 names but 2 positions"),
        (["gripper", "elbow_flex"], [0.1], "2 names but 1 positions"),
        (["gripper", "gripper"], [0.1, 0.2], "duplicate joint names ['gripper']"),
        (["elbow"], [0.0], "unknown joint names ['elbow']"),
        (["elbow_flex", "wrist_flex"], [0.0, math.nan], "non-finite positions for ['wrist_flex']"),
        (["elbow_flex"], [math.inf], "non-finite"),
        (["elbow_flex"], [-math.inf], "non-finite"),
    ],
)
def test_bad_commands_rejected_whole(names, positions, needle):
    with pytest.raises(CommandRejected) as exc:
        validate_joint_command(names, positions, NAMES)
    assert needle in str(exc.value)


def test_subset_command_accepted():
    cmd = validate_joint_command(["gripper", "shoulder_pan"], [0.1, -0.2], NAMES)
    assert cmd.positions == {"gripper": 0.1, "shoulder_pan": -0.2}


def test_max_relative_target_parsing():
    assert parse_max_relative_target(0.0, 6) is None
    assert parse_max_relative_target([], 6) is None
    np.testing.assert_array_equal(parse_max_relative_target(0.1, 6), np.full(6, 0.1))
    assert parse_max_relative_target([0.1] * 6, 6).shape == (6,)
    for bad in ([0.1] * 5, -0.1, [0.1, 0.1, 0.1, 0.1, 0.1, -1.0], math.nan):
        with pytest.raises(ValueError):
            parse_max_relative_target(bad, 6)


def _controller(max_rel=0.05, timeout_ms=200):
    return ArmGoalController(RANGES, max_relative_target=parse_max_relative_target(max_rel, 6), command_timeout_ns=timeout_ms * MS)


def test_idle_writes_nothing():
    ctl = _controller()
    result = ctl.cycle(RANGES.mid, 0)
    assert result.goals is None and result.state is WatchdogState.IDLE


def test_goal_steps_by_max_relative_target_and_untouched_joints_hold():
    ctl = _controller(max_rel=0.05)
    present = RANGES.mid.copy()
    ctl.on_command({"elbow_flex": 1.0}, 0, present)
    result = ctl.cycle(present, 10 * MS)
    step = 0.05 / units.RAD_PER_TICK
    i = NAMES.index("elbow_flex")
    assert result.goals[i] == round(present[i] + step)
    others = [j for j in range(6) if j != i]
    np.testing.assert_array_equal(result.goals[others], np.rint(present[others]))
    assert result.step_clamped == ["elbow_flex"]


def test_goal_clamped_to_calibrated_range():
    ctl = _controller(max_rel=0.0)  # per-step clamp off: only the range clamp acts
    present = RANGES.mid.copy()
    ctl.on_command({"wrist_flex": 100.0, "gripper": -100.0}, 0, present)
    result = ctl.cycle(present, MS)
    assert result.goals[NAMES.index("wrist_flex")] == EXAMPLE_CALIBRATION["wrist_flex"]["range_max"]
    assert result.goals[NAMES.index("gripper")] == EXAMPLE_CALIBRATION["gripper"]["range_min"]
    assert set(result.range_clamped) == {"wrist_flex", "gripper"}


def test_command_in_range_reaches_target_exactly():
    ctl = _controller(max_rel=0.0)
    present = RANGES.mid.copy()
    target_rad = {n: 0.1 for n in NAMES}
    ctl.on_command(target_rad, 0, present)
    goals = ctl.cycle(present, MS).goals
    np.testing.assert_allclose(units.ticks_to_radians(goals, RANGES), 0.1, atol=units.RAD_PER_TICK)


def test_watchdog_latches_present_once_then_writes_nothing():
    ctl = _controller(timeout_ms=200)
    present = RANGES.mid.copy()
    ctl.on_command({"elbow_flex": 0.5}, 0, present)
    assert ctl.cycle(present, 100 * MS).state is WatchdogState.ACTIVE
    moved = present + 7.0
    result = ctl.cycle(moved, 250 * MS)  # > 200 ms since the last command
    assert result.state is WatchdogState.HOLDING
    np.testing.assert_array_equal(result.goals, np.rint(moved))  # stop where it is: no jump
    sagged = moved - 3.0
    assert ctl.cycle(sagged, 260 * MS).goals is None  # latched, not re-read: no ratcheting
    # A new command resumes from the latched hold, stepping again.
    ctl.on_command({"gripper": 0.2}, 300 * MS, None)
    result = ctl.cycle(sagged, 301 * MS)
    assert result.state is WatchdogState.ACTIVE
    i = NAMES.index("elbow_flex")
    assert abs(result.goals[i] - moved[i]) <= 0.05 / units.RAD_PER_TICK + 1


def test_reset_goes_idle():
    ctl = _controller()
    ctl.on_command({"gripper": 0.0}, 0, RANGES.mid)
    ctl.reset()
    assert ctl.cycle(RANGES.mid, MS).goals is None
    with pytest.raises(ValueError):
        ctl.on_command({"gripper": 0.0}, 0, None)


def test_joints_outside_range_before_torque_on():
    from gemma3nvla_ros.control.safety import joints_outside_range

    ranges = units.JointRanges.from_calibration(EXAMPLE_CALIBRATION)
    present = ranges.mid.copy()
    assert joints_outside_range(present, ranges, 45) == []
    present[1] = ranges.range_min[1] - 45  # within tolerance: resting on the stop
    present[3] = ranges.range_max[3] + 46
    assert [n for n, *_ in joints_outside_range(present, ranges, 45)] == ["wrist_flex"]
    assert [n for n, *_ in joints_outside_range(present, ranges, 0)] == ["shoulder_lift", "wrist_flex"]


def test_motors_to_recover():
    from gemma3nvla_ros.hardware.feetech_bus import MotorHealth
    from gemma3nvla_ros.control.safety import motors_to_recover
    from gemma3nvla_ros.hardware.scs_protocol import ERRBIT_OVERLOAD

    health = {n: MotorHealth(n, i, torque_enabled=True) for n, i in SO101_MOTORS.items()}
    assert motors_to_recover(health) == []
    health["elbow_flex"].unreachable = True  # failed after retries: maybe a brown-out
    health["wrist_flex"].torque_enabled = False  # a trip that has cleared
    health["gripper"].torque_enabled = False
    health["gripper"].status = ERRBIT_OVERLOAD  # still tripped: leave it limp
    health["shoulder_pan"].torque_enabled = None  # never read: nothing known
    assert motors_to_recover(health) == ["elbow_flex", "wrist_flex"]
    health["gripper"].status = 0
    health["gripper"].error_bits = ERRBIT_OVERLOAD
    assert motors_to_recover(health) == ["elbow_flex", "wrist_flex"]


def test_hold_joint_resets_only_that_joint_and_keeps_the_watchdog():
    """ACTIVE, commands naming only the gripper: the elbow's target is still 0.5 rad from an earlier
    command. The elbow comes back from a brown-out 200 ticks lower: it must hold there, not step back
    to 0.5 rad, while the gripper keeps its target."""
    ctl = _controller(max_rel=0.05, timeout_ms=500)
    present = RANGES.mid.copy()
    e, g = NAMES.index("elbow_flex"), NAMES.index("gripper")
    ctl.on_command({"elbow_flex": 0.5, "gripper": 0.3}, 0, present)
    fallen = present.copy()
    fallen[e] -= 200
    ctl.hold_joint("elbow_flex", fallen[e])
    ctl.on_command({"gripper": 0.3}, 10 * MS, None)
    result = ctl.cycle(fallen, 20 * MS)
    assert result.state is WatchdogState.ACTIVE
    assert result.goals[e] == fallen[e]
    assert result.goals[g] == round(fallen[g] + 0.05 / units.RAD_PER_TICK)  # still stepping
    # HOLDING stays HOLDING (writes nothing), IDLE stays IDLE.
    assert ctl.cycle(fallen, 600 * MS).state is WatchdogState.HOLDING
    ctl.hold_joint("elbow_flex", fallen[e] + 5)
    assert ctl.cycle(fallen, 610 * MS).goals is None and ctl.state is WatchdogState.HOLDING
    idle = _controller()
    idle.hold_joint("elbow_flex", 100.0)
    assert idle.cycle(RANGES.mid, MS).goals is None and idle.state is WatchdogState.IDLE


def test_stale_commands_are_rejected_fresh_and_unstamped_ones_taken() -> None:
    now, timeout = 100 * 10**9, 500_000_000
    check_command_age(now - 100_000_000, now, timeout)  # 0.1 s old: fresh
    check_command_age(0, now, timeout)  # unstamped (typed by hand): taken as current
    check_command_age(now + 50_000_000, now, timeout)  # sender's clock slightly ahead: not stale
    with pytest.raises(CommandRejected, match=r"stale: stamped 2\.000 s ago, more than command_timeout 0\.500 s"):
        check_command_age(now - 2 * 10**9, now, timeout)


def test_commands_stamped_far_in_the_future_are_rejected() -> None:
    now, timeout = 100 * 10**9, 500_000_000
    check_command_age(now + 400_000_000, now, timeout)  # a little ahead (clock skew): taken
    with pytest.raises(CommandRejected, match=r"stamped 3600\.000 s in the future"):
        check_command_age(now + 3600 * 10**9, now, timeout)


def test_watchdog_keeps_the_grippers_goal_and_latches_the_rest():
    """A gripper squeezing an object stands short of its target; latching it to present would open it."""
    ctl = _controller(timeout_ms=200)
    ctl.set_keep_goal_on_hold(["gripper"])
    g, e = NAMES.index("gripper"), NAMES.index("elbow_flex")
    present = RANGES.mid.copy()
    ctl.on_command({"gripper": 0.3, "elbow_flex": 0.3}, 0, present)
    squeezing = present.copy()
    squeezing[g] += 40  # stopped by the object, 0.3 rad (~170 ticks) not reached
    squeezing[e] += 60
    result = ctl.cycle(squeezing, 250 * MS)
    assert result.state is WatchdogState.HOLDING
    assert result.goals[e] == round(squeezing[e])  # the arm stops where it is
    assert result.goals[g] > squeezing[g] + 20  # the gripper still pulls towards its goal
    assert ctl.target_goals(squeezing)[NAMES[g]] == result.goals[g]  # on_shutdown=hold keeps it too
    assert ctl.target_goals(squeezing)[NAMES[e]] == round(squeezing[e])
    with pytest.raises(ValueError, match="unknown joint names"):
        ctl.set_keep_goal_on_hold(["grip"])


def test_motors_that_tripped_wait_for_the_operator():
    from gemma3nvla_ros.control.safety import motors_to_recover
    from gemma3nvla_ros.hardware.feetech_bus import MotorHealth

    health = {n: MotorHealth(n, i, torque_enabled=True) for n, i in SO101_MOTORS.items()}
    health["wrist_flex"].torque_enabled = False  # alarm cleared, torque still off
    assert motors_to_recover(health) == ["wrist_flex"]
    assert motors_to_recover(health, tripped={"wrist_flex"}) == []


def test_target_outside_range_names_the_joints_of_the_last_command():
    ctl = _controller()
    assert ctl.target_outside_range() == []
    ctl.on_command({"elbow_flex": 10.0}, 0, RANGES.mid.copy())  # far past the calibrated limit
    assert ctl.target_outside_range() == ["elbow_flex"]
    ctl.on_command({"elbow_flex": 0.1}, 1, None)
    assert ctl.target_outside_range() == []
