"""so101_bridge as a real process over DDS, on the simulated bus (through the pty and scservo_sdk)."""
from __future__ import annotations

import json
import math
import signal

import pytest

from gemma3nvla_ros.hardware.calibration import EXAMPLE_CALIBRATION

from helpers_bridge import (
    BRIDGE,
    EXAMPLE_FILE,
    NAMES,
    call_enable,
    registers,
    sim_command,
    torque,
    wait_states,
)
from helpers_ros import spin_for, spin_until


def _bridge_on_standalone_sim(start_node, standalone_sim, *params: str):
    """A bridge on a simulator of its own process (commands on its stdin), diagnostics at 5 Hz; extra
    ``name:=value`` parameters."""
    port = standalone_sim()
    args = [BRIDGE, "-p", f"port:={port}", "-p", f"calibration_file:={EXAMPLE_FILE}", "-p", "diagnostics_rate:=5.0"]
    for p in params:
        args += ["-p", p]
    return start_node(*args, name="bridge"), standalone_sim.procs[-1]


def test_joint_states_follow_commands(ros, arm, start_node):
    proc = start_node(BRIDGE, "-p", "mode:=sim", "-p", "max_relative_target:=0.05", name="bridge")
    wait_states(ros, arm, proc)
    first = arm.states[-1]
    assert list(first.name) == NAMES and len(first.position) == 6
    assert all(abs(p) < 0.01 for p in first.position)  # the sim rests mid-range = 0 rad
    assert first.header.stamp.sec > 0
    stamps = [s.header.stamp.sec * 10**9 + s.header.stamp.nanosec for s in arm.states]
    assert stamps == sorted(stamps)

    target = {"elbow_flex": 0.4, "gripper": -0.2}  # a subset is fine; the others hold
    reached = spin_until(
        ros, arm.node,
        lambda: (arm.command(target, target.values()) or True)
        and all(abs(arm.positions()[n] - v) < 0.01 for n, v in target.items()),
        20.0,
    )
    assert reached, f"arm did not reach {target}: {arm.positions()}\n{proc.output}"
    assert abs(arm.positions()["shoulder_pan"]) < 0.01
    assert proc.proc.poll() is None


def test_bad_commands_never_move_the_arm(ros, arm, start_node):
    proc = start_node(BRIDGE, "-p", "mode:=sim", "-p", "diagnostics_rate:=5.0", name="bridge")
    wait_states(ros, arm, proc)
    before = arm.positions()
    bad = [
        (["elbow_flex"], [math.nan]),
        (["elbow_flex", "gripper"], [0.5, math.inf]),
        (["elbow_flex", "elbow_flex"], [0.5, 0.5]),
        (["elbo_flex"], [0.5]),
        (["elbow_flex", "gripper"], [0.5]),
        ([], []),
    ]
    for names, positions in bad:
        arm.command(names, positions)
        spin_for(ros, arm.node, 0.1)
    spin_for(ros, arm.node, 1.2)  # past the warning's 1 s throttle, so the stale one is logged too
    bad.append((["elbow_flex"], [0.5]))  # well formed but stamped 5 s ago: stale
    arm.command(["elbow_flex"], [0.5], age_s=5.0)
    spin_for(ros, arm.node, 1.2)
    bad.append((["elbow_flex"], [0.5]))  # stamped an hour ahead: a sender with a wrong clock
    arm.command(["elbow_flex"], [0.5], age_s=-3600.0)
    spin_for(ros, arm.node, 1.0)
    after = arm.positions()
    assert all(abs(after[n] - before[n]) < 0.005 for n in NAMES), (before, after)
    assert spin_until(ros, arm.node, lambda: (arm.bus_value("commands_rejected") or "0") == str(len(bad)), 5.0)
    assert arm.bus_value("commands_accepted") == "0"
    assert "rejected joint command, arm not moved" in proc.output
    assert "command is stale" in proc.output
    assert "in the future" in proc.output


def test_watchdog_holds_when_commands_stop(ros, arm, start_node):
    proc = start_node(
        BRIDGE, "-p", "mode:=sim", "-p", "command_timeout:=0.3", "-p", "max_relative_target:=0.01",
        "-p", "diagnostics_rate:=5.0", name="bridge",
    )
    wait_states(ros, arm, proc)
    # A far target approached at <= 0.01 rad per 100 Hz cycle: commands stop long before it is reached.
    spin_for(ros, arm.node, 0.5, each=lambda: arm.command(["shoulder_pan"], [1.2]))
    moving = arm.positions()["shoulder_pan"]
    assert 0.02 < moving < 1.0, moving
    spin_for(ros, arm.node, 1.0)  # > command_timeout: the watchdog latched
    held = arm.positions()["shoulder_pan"]
    spin_for(ros, arm.node, 1.0)
    assert abs(arm.positions()["shoulder_pan"] - held) < 0.003  # holds, no creeping on, no jump
    assert held < 1.0
    assert spin_until(ros, arm.node, lambda: arm.bus_value("watchdog") == "holding", 5.0)


@pytest.mark.parametrize(
    "on_shutdown,sig,expected",
    [
        ("disable_torque", signal.SIGINT, [0] * 6),
        ("disable_torque", signal.SIGTERM, [0] * 6),
        ("disable_torque", signal.SIGHUP, [0] * 6),  # the terminal closed / ssh dropped
        ("disable_torque", signal.SIGQUIT, [0] * 6),
        ("hold", signal.SIGINT, [1] * 6),
    ],
)
def test_shutdown_torque_handling(ros, arm, start_node, standalone_sim, on_shutdown, sig, expected):
    port = standalone_sim()
    assert torque(port) == [0] * 6
    proc = start_node(
        BRIDGE, "-p", f"port:={port}", "-p", f"calibration_file:={EXAMPLE_FILE}", "-p", f"on_shutdown:={on_shutdown}",
        name="bridge",
    )
    wait_states(ros, arm, proc)
    # (No bus reads from here while the bridge runs: two openers of one serial port steal each
    # other's replies, on a pty as on a real adapter.)
    assert proc.stop(sig=sig) == 0, proc.output
    assert torque(port) == expected, proc.output
    if on_shutdown == "hold":  # held where it was: goal == present, nothing left to move to
        goals, present = registers(port, 42), registers(port, 56)
        assert all(abs(g - p) <= 1 for g, p in zip(goals, present)), (goals, present)


def test_missing_calibration_refuses_with_instructions(start_node, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_LEROBOT_CALIBRATION", str(tmp_path / "nothing"))
    proc = start_node(BRIDGE, "-p", "port:=/dev/null", "-p", "robot_id:=my_arm", name="bridge")
    assert proc.wait_exit() == 2
    out = proc.output
    assert "No calibration for robot_id 'my_arm'" in out
    assert "lerobot-calibrate --robot.type=so101_follower" in out and "--robot.id=my_arm" in out


def test_mismatched_calibration_refuses_to_move(start_node, standalone_sim, tmp_path):
    other = {k: dict(v) for k, v in EXAMPLE_CALIBRATION.items()}
    other["wrist_flex"]["homing_offset"] += 100
    servo_cal = tmp_path / "servo.json"
    servo_cal.write_text(json.dumps(other))
    port = standalone_sim(calibration=str(servo_cal))
    proc = start_node(BRIDGE, "-p", f"port:={port}", "-p", f"calibration_file:={EXAMPLE_FILE}", "-p", "robot_id:=arm7", name="bridge")
    assert proc.wait_exit() == 2
    out = proc.output
    assert "does not match the servo memory" in out and "wrist_flex.homing_offset: file 64, servo 164" in out
    assert f"--robot.port={port} --robot.id=arm7" in out and "Refusing to move" in out
    assert torque(port) == [0] * 6  # nothing was enabled


def test_write_calibration_to_motors_fixes_mismatch(ros, arm, start_node, standalone_sim, tmp_path):
    other = {k: dict(v) for k, v in EXAMPLE_CALIBRATION.items()}
    other["gripper"]["range_max"] -= 50
    servo_cal = tmp_path / "servo.json"
    servo_cal.write_text(json.dumps(other))
    port = standalone_sim(calibration=str(servo_cal))
    proc = start_node(
        BRIDGE, "-p", f"port:={port}", "-p", f"calibration_file:={EXAMPLE_FILE}", "-p", "write_calibration_to_motors:=true",
        name="bridge",
    )
    wait_states(ros, arm, proc)
    assert "writing calibration" in proc.output and "gripper.range_max" in proc.output
    assert proc.stop() == 0
    assert registers(port, 11)[5] == EXAMPLE_CALIBRATION["gripper"]["range_max"]


def test_missing_motor_at_start_is_named(start_node):
    proc = start_node(BRIDGE, "-p", "mode:=sim", "-p", "sim_args:=--dead 3", "-p", "bus_timeout_ms:=10.0", name="bridge")
    assert proc.wait_exit() == 2
    assert "no answer from motor ids 3 (elbow_flex)" in proc.output


def test_bus_faults_are_retried_counted_and_reported(ros, arm, start_node):
    proc = start_node(
        BRIDGE, "-p", "mode:=sim", "-p", "sim_args:=--drop-probability 0.03 --corrupt-probability 0.03 --seed 3",
        "-p", "bus_timeout_ms:=10.0", "-p", "bus_retries:=3", "-p", "diagnostics_rate:=5.0", name="bridge",
    )
    wait_states(ros, arm, proc)
    assert spin_until(
        ros, arm.node,
        lambda: int(arm.bus_value("no_reply") or 0) > 0 and int(arm.bus_value("bad_checksum") or 0) > 0,
        30.0,
    ), proc.output
    n = len(arm.states)
    spin_for(ros, arm.node, 1.0)
    assert len(arm.states) > n  # still publishing
    assert int(arm.bus_value("retries")) > 0
    assert proc.proc.poll() is None


def test_motor_dying_at_runtime_is_reported_and_recovers(ros, arm, start_node):
    """A motor loses power mid-run (a brown-out: the simulated servo goes silent and limp, then powers
    up with torque off and its goal register far from where it rests): no stale joint_states, ERROR on
    /diagnostics naming it, the node lives on; when it answers again the bridge re-enables it where it
    is (goal := present first: without that it would drive to its lower limit), counts and logs it."""
    proc = start_node(
        BRIDGE, "-p", "mode:=sim", "-p", "sim_args:=--dead-between 3:4.0:7.0", "-p", "bus_timeout_ms:=10.0",
        "-p", "diagnostics_rate:=5.0", name="bridge",
    )
    wait_states(ros, arm, proc)
    since, before = len(arm.states), arm.positions()

    assert spin_until(ros, arm.node, lambda: arm.motor_level("elbow_flex") == 2, 20.0), proc.output
    n = len(arm.states)
    spin_for(ros, arm.node, 0.5)
    assert len(arm.states) - n <= 2  # nothing (stale) published while a motor is silent
    assert int(arm.bus_value("failed_after_retries")) > 0
    assert proc.proc.poll() is None
    # Level 0 needs torque read back on: a limp motor is an ERROR while the bridge should hold.
    assert spin_until(ros, arm.node, lambda: arm.motor_level("elbow_flex") == 0 and len(arm.states) > n + 20, 20.0), proc.output
    spin_for(ros, arm.node, 1.0)  # long enough for a jump to the limit (~0.4 s) to show
    assert arm.motor_value("elbow_flex", "torque") == "on"
    assert max(arm.max_excursion(since, before).values()) < 0.01, (arm.max_excursion(since, before), proc.output)
    assert "motor 3 (elbow_flex) answered again: torque re-enabled, holding at 0.000 rad" in proc.output
    assert arm.motor_value("elbow_flex", "recoveries") == "1" and arm.bus_value("motor_recoveries") == "1"


def test_brown_out_while_commanded_holds_where_the_joint_fell(ros, arm, start_node, standalone_sim):
    """Commands name only the gripper; the elbow's controller target is still 0.3 rad from an earlier
    command when it loses power and falls to 0 rad. Once back, it must hold at 0 rad: not driven back
    to the stale 0.3 rad target, not to the lower limit its reset goal register points at, while the
    gripper keeps following its commands."""
    proc, sim = _bridge_on_standalone_sim(start_node, standalone_sim, "max_relative_target:=0.05")
    wait_states(ros, arm, proc)
    target = {"elbow_flex": 0.3, "gripper": 0.0}
    assert spin_until(
        ros, arm.node,
        lambda: (arm.command(target, target.values()) or True)
        and all(abs(arm.positions()[n] - v) < 0.01 for n, v in target.items()),
        20.0,
    ), proc.output
    gripper = [0.0]
    keep_commanding = lambda: arm.command(["gripper"], gripper)  # noqa: E731

    sim_command(sim, "power-off 3")
    spin_for(ros, arm.node, 0.3, each=keep_commanding)
    elbow_zero = round((EXAMPLE_CALIBRATION["elbow_flex"]["range_min"] + EXAMPLE_CALIBRATION["elbow_flex"]["range_max"]) / 2)
    sim_command(sim, f"move 3 {elbow_zero}")  # limp: it falls to 0 rad
    sim_command(sim, "power-on 3")
    assert spin_until(ros, arm.node, lambda: (keep_commanding() or True) and "answered again" in proc.output, 10.0), proc.output
    since = len(arm.states)
    gripper[0] = -0.2
    spin_for(ros, arm.node, 1.5, each=keep_commanding)
    assert arm.max_excursion(since, {"elbow_flex": 0.0})["elbow_flex"] < 0.01, proc.output
    assert abs(arm.positions()["gripper"] + 0.2) < 0.01  # the others were not reset
    assert arm.bus_value("watchdog") == "active"
    assert "motor 3 (elbow_flex) answered again: torque re-enabled, holding at 0.000 rad" in proc.output


def test_motor_that_only_missed_replies_is_not_reset(ros, arm, start_node, standalone_sim):
    """A data-line fault: the motor is silent for a while but keeps power and torque. Nothing was
    lost, so nothing is re-enabled or counted (its target is not reset either)."""
    proc, sim = _bridge_on_standalone_sim(start_node, standalone_sim)
    wait_states(ros, arm, proc)
    sim_command(sim, "dead 5 1")
    assert spin_until(ros, arm.node, lambda: arm.motor_level("wrist_roll") == 2, 10.0), proc.output
    sim_command(sim, "dead 5 0")
    assert spin_until(ros, arm.node, lambda: arm.motor_level("wrist_roll") == 0, 10.0), proc.output
    spin_for(ros, arm.node, 0.5)
    assert arm.motor_value("wrist_roll", "torque") == "on"
    assert "torque re-enabled" not in proc.output, proc.output
    assert arm.bus_value("motor_recoveries") == "0"


def test_motor_back_far_outside_its_range_stays_limp(ros, arm, start_node, standalone_sim):
    """A joint that fell far outside its calibrated range while unpowered is not re-enabled (the
    firmware would pull it to the limit at full speed), as at start-up; once moved back inside, it is."""
    proc, sim = _bridge_on_standalone_sim(start_node, standalone_sim)
    wait_states(ros, arm, proc)
    low = EXAMPLE_CALIBRATION["wrist_flex"]["range_min"]
    sim_command(sim, "power-off 4")
    spin_for(ros, arm.node, 0.3)  # silent for a while: reads fail
    sim_command(sim, f"move 4 {low - 300}")
    sim_command(sim, "power-on 4")
    assert spin_until(ros, arm.node, lambda: "outside its calibrated range" in proc.output, 10.0), proc.output
    spin_for(ros, arm.node, 1.0)
    assert arm.motor_value("wrist_flex", "torque") == "off" and arm.motor_level("wrist_flex") == 2
    assert abs(arm.positions()["wrist_flex"] - dict(zip(NAMES, arm.states[-20].position))["wrist_flex"]) < 0.005
    assert "(wrist_flex) answered again" not in proc.output, proc.output
    sim_command(sim, f"move 4 {low + 100}")
    assert spin_until(ros, arm.node, lambda: arm.motor_level("wrist_flex") == 0, 10.0), proc.output
    assert "motor 4 (wrist_flex) answered again: torque re-enabled" in proc.output


def test_torque_trip_waits_for_the_operator_once_its_alarm_clears(ros, arm, start_node, standalone_sim):
    """An overload trip (often a collision) switches torque off by itself while the motor keeps
    answering: limp and an ERROR while the alarm lasts, and — by default — still limp after it clears,
    until an operator calls ~/enable; then re-enabled where it stands."""
    proc, sim = _bridge_on_standalone_sim(start_node, standalone_sim)
    wait_states(ros, arm, proc)
    assert spin_until(ros, arm.node, lambda: arm.motor_value("shoulder_lift", "torque") == "on", 10.0)
    sim_command(sim, "alarm 2 32")  # overload: in Unloading_Condition, torque off
    assert spin_until(ros, arm.node, lambda: arm.motor_value("shoulder_lift", "torque") == "off", 10.0), proc.output
    refused = call_enable(ros, arm.node)
    assert not refused.success and "alarm still active on ['shoulder_lift']" in refused.message
    sim_command(sim, "alarm 2 0")
    spin_for(ros, arm.node, 1.5)  # alarm gone: an automatic recovery would have happened by now
    assert arm.motor_value("shoulder_lift", "torque") == "off" and arm.motor_level("shoulder_lift") == 2
    assert arm.bus_value("awaiting_enable") == "shoulder_lift"
    assert "torque re-enabled" not in proc.output
    reply = call_enable(ros, arm.node)
    assert reply.success and "shoulder_lift" in reply.message, reply.message
    assert spin_until(ros, arm.node, lambda: arm.motor_level("shoulder_lift") == 0, 10.0), proc.output
    assert arm.motor_value("shoulder_lift", "torque") == "on" and arm.bus_value("awaiting_enable") == "none"


def test_torque_trip_is_re_enabled_by_itself_with_auto_recovery(ros, arm, start_node, standalone_sim):
    proc, sim = _bridge_on_standalone_sim(start_node, standalone_sim, "overload_recovery:=auto")
    wait_states(ros, arm, proc)
    sim_command(sim, "alarm 2 32")
    assert spin_until(ros, arm.node, lambda: arm.motor_value("shoulder_lift", "torque") == "off", 10.0), proc.output
    spin_for(ros, arm.node, 1.0)
    assert arm.motor_level("shoulder_lift") == 2 and "torque re-enabled" not in proc.output
    sim_command(sim, "alarm 2 0")
    assert spin_until(ros, arm.node, lambda: arm.motor_level("shoulder_lift") == 0, 10.0), proc.output
    assert arm.motor_value("shoulder_lift", "torque") == "on"
    assert "motor 2 (shoulder_lift) was limp (a cleared trip or a brief brown-out): torque re-enabled" in proc.output


def test_port_loss_reconnects_and_holds(ros, arm, start_node, standalone_sim, tmp_path):
    """The adapter vanishes (simulator process exits) and comes back on the same path."""
    link = str(tmp_path / "ttyARM")
    standalone_sim(link=link)
    proc = start_node(
        BRIDGE, "-p", f"port:={link}", "-p", f"calibration_file:={EXAMPLE_FILE}", "-p", "diagnostics_rate:=5.0",
        name="bridge",
    )
    wait_states(ros, arm, proc)
    first = standalone_sim.procs[0]
    first.stdin.close()
    first.wait(timeout=10)

    def bus_level() -> int | None:
        for array in reversed(arm.diags):
            for status in array.status:
                if status.name.endswith("servo bus"):
                    return status.level[0]
        return None

    assert spin_until(ros, arm.node, lambda: bus_level() == 2, 20.0), proc.output
    assert "servo bus lost" in proc.output and proc.proc.poll() is None
    # Plugged back in together with the arm's supply: servos at the homed pose, just powered up (torque
    # off, RAM reset, goal registers at the lower limits: a reconnect without goal := present jumps).
    standalone_sim("--cold", link=link)
    n = len(arm.states)
    assert spin_until(ros, arm.node, lambda: len(arm.states) > n + 20 and bus_level() == 0, 30.0), proc.output
    assert "servo bus reconnected" in proc.output
    spin_for(ros, arm.node, 1.0)  # long enough for a jump to the limits (~0.4 s) to show
    assert max(arm.max_excursion(n, {k: 0.0 for k in NAMES}).values()) < 0.01, proc.output
    assert spin_until(ros, arm.node, lambda: all(arm.motor_value(k, "torque") == "on" for k in NAMES), 5.0)
    assert proc.stop() == 0
    assert registers(link, 41, size=1) == [254] * 6  # RAM configuration re-applied after the power-up


def test_joint_far_outside_the_calibrated_range_refuses_to_enabletorque(start_node, standalone_sim, tmp_path):
    """The servo firmware clamps Goal_Position to its limits: enabling torque (goal := present) with a
    joint resting far outside [range_min, range_max] would drive it to the limit at full speed — a
    start-up jump. The bridge must refuse, say which joint and what to do, and leave torque off."""
    port = standalone_sim()  # every joint rests mid-range of the example calibration (wrist_flex ~2025)
    narrow = {k: dict(v) for k, v in EXAMPLE_CALIBRATION.items()}
    narrow["wrist_flex"]["range_min"] = 2400
    cal = tmp_path / "narrow.json"
    cal.write_text(json.dumps(narrow))
    proc = start_node(
        BRIDGE, "-p", f"port:={port}", "-p", f"calibration_file:={cal}", "-p", "write_calibration_to_motors:=true",
        name="bridge",
    )
    assert proc.wait_exit() == 2, proc.output
    assert "wrist_flex" in proc.output and "outside the calibrated range" in proc.output
    assert torque(port) == [0] * 6
    assert abs(registers(port, 56)[3] - 2025) <= 2  # it did not move


def test_incorrect_status_packets_are_retried_counted_and_persistent_ones_fault(ros, arm, start_node, standalone_sim):
    """A couple of corrupted replies (LeRobot's "Incorrect status packet"): a retry rescues the read,
    joint_states never stop, /diagnostics counts the rescue. Corrupted for good: no joint_states (none
    stale), the fault on /diagnostics names the motor and the SDK's reason, the node lives; corruption
    gone: it publishes again, fault cleared."""
    proc, sim = _bridge_on_standalone_sim(start_node, standalone_sim)
    wait_states(ros, arm, proc)
    assert spin_until(ros, arm.node, lambda: arm.bus_status() is not None, 10.0)
    assert arm.bus_value("bus_retries") == "2"
    # Counted from here: a loaded machine may already have had a late reply rescued by a retry.
    rescued, failed = int(arm.bus_value("recovered_by_retry")), int(arm.bus_value("failed_after_retries"))

    sim_command(sim, "corrupt 3 2 truncate")
    assert spin_until(ros, arm.node, lambda: int(arm.bus_value("recovered_by_retry")) > rescued, 10.0), proc.output
    assert int(arm.bus_value("failed_after_retries")) == failed and arm.bus_status().level[0] == 0
    n = len(arm.states)
    spin_for(ros, arm.node, 0.3)
    assert len(arm.states) > n + 10

    sim_command(sim, "corrupt 3 always checksum")
    assert spin_until(ros, arm.node, lambda: "Incorrect status packet" in arm.bus_status().message, 10.0), proc.output
    assert "elbow_flex" in arm.bus_status().message and arm.bus_status().level[0] == 1
    spin_for(ros, arm.node, 0.2)  # a state already in flight
    n, failed = len(arm.states), int(arm.bus_value("failed_after_retries"))
    spin_for(ros, arm.node, 0.5)
    assert len(arm.states) == n and int(arm.bus_value("failed_after_retries")) > failed
    assert proc.proc.poll() is None

    sim_command(sim, "corrupt 3 off")
    assert spin_until(ros, arm.node, lambda: len(arm.states) > n + 10 and arm.bus_status().level[0] == 0, 10.0)
