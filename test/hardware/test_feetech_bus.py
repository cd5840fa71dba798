"""FeetechBus over scservo_sdk against the simulated bus: connect, configure, calibration, torque,
sync read/write, and every injected fault retried, counted and attributed to its motor."""
from __future__ import annotations

import time

import numpy as np
import pytest

from gemma3nvla_ros.hardware.calibration import EXAMPLE_CALIBRATION, SO101_MOTORS, compare_with_servos, parse_calibration
from gemma3nvla_ros.hardware.feetech_bus import BusError, BusPortError, FeetechBus, MotorsMissingError
from gemma3nvla_ros.hardware.servo_config import ServoSettings, motor_settings

LEROBOT = ServoSettings()  # LeRobot 0.6.1's values


def test_connect_reports_missing_ids(sim):
    sim.bus.set_faults(3, dead=True)
    sim.bus.set_faults(5, dead=True)
    bus = FeetechBus(sim.port, SO101_MOTORS, timeout_ms=20.0, retries=1)
    with pytest.raises(MotorsMissingError) as exc:
        bus.connect()
    msg = str(exc.value)
    assert "3 (elbow_flex)" in msg and "5 (wrist_roll)" in msg and "1 (" not in msg
    assert "power supply" in msg
    bus.close()


def test_connect_waits_for_a_bus_that_comes_up_late(sim):
    """The bridge's sim mode starts the simulator's process just before connecting: motors that answer only
    after a moment are found with ``wait_s``, and still reported missing when they never answer."""
    import threading

    sim.bus.set_faults(1, dead=True)
    waiting = FeetechBus(sim.port, SO101_MOTORS, timeout_ms=20.0, retries=0)
    threading.Timer(0.4, sim.bus.set_faults, args=(1,), kwargs={"dead": False}).start()
    waiting.connect(wait_s=5.0)  # answers after ~0.4 s: no error
    waiting.close()
    sim.bus.set_faults(1, dead=True)
    impatient = FeetechBus(sim.port, SO101_MOTORS, timeout_ms=20.0, retries=0)
    t0 = time.monotonic()
    with pytest.raises(MotorsMissingError, match="1 \\(shoulder_pan\\)"):
        impatient.connect(wait_s=0.3)
    assert time.monotonic() - t0 >= 0.3
    impatient.close()


def test_open_bad_port_is_clear():
    bus = FeetechBus("/dev/does-not-exist-so101", SO101_MOTORS)
    with pytest.raises(BusPortError, match="Cannot open servo bus port '/dev/does-not-exist-so101'"):
        bus.open()


def test_servo_calibration_matches_file(feetech):
    assert compare_with_servos(parse_calibration(EXAMPLE_CALIBRATION), feetech.read_calibration()) == []


def test_write_calibration_then_read_back(feetech, sim):
    cal = parse_calibration(EXAMPLE_CALIBRATION)
    from dataclasses import replace
    changed = {**cal, "gripper": replace(cal["gripper"], homing_offset=-100, range_max=3000)}
    feetech.write_calibration(changed)
    assert compare_with_servos(changed, feetech.read_calibration()) == []
    assert sim.bus.servo(6).homing_offset == -100


def test_configure_writes_only_differences_then_nothing(feetech, sim):
    sim.bus.servo(5).set_register("Phase", 0x1C)  # multi-turn angle feedback on: LeRobot clears bit 4 only
    changes = feetech.configure()
    assert "gripper.Max_Torque_Limit=500" in changes and "shoulder_pan.P_Coefficient=16" in changes
    assert "wrist_roll.Phase=12" in changes and not any(c.startswith("wrist_flex.Phase") for c in changes)
    for servo in sim.bus.servos:
        for setting in motor_settings(LEROBOT, gripper=servo.servo_id == 6):
            assert servo.peek(setting.register) == setting.wanted(0x0C if setting.register == "Phase" else 0)
    assert sim.bus.servo(6).peek("Protection_Current") == 250
    assert sim.bus.servo(1).peek("Max_Torque_Limit") == 1000  # only the gripper is limited
    assert feetech.configure() == []


def test_enable_torque_holds_position_no_jump(feetech, sim, clock):
    sim.bus.servo(2).push_to(1500.0)  # someone moved the limp arm; stale goal elsewhere
    feetech.enable_torque()
    assert all(feetech.torque_enabled().values())
    assert {s.peek("Lock") for s in sim.bus.servos} == {1}
    clock.advance(1.0)
    assert feetech.read_positions()[1] == 1500  # held, did not drive back to the old goal
    feetech.disable_torque()
    assert not any(feetech.torque_enabled().values())
    assert {s.peek("Lock") for s in sim.bus.servos} == {0}


def test_sync_write_goals_moves_and_sync_read_follows(feetech, clock):
    feetech.enable_torque()
    start = feetech.read_positions()
    goals = {n: int(p) + 100 for n, p in zip(feetech.names, start)}
    feetech.write_goals(goals)
    time.sleep(0.05)
    clock.advance(0.5)
    np.testing.assert_array_equal(feetech.read_positions(), start + 100)


def test_dropped_reply_is_retried_and_counted(feetech, sim):
    sim.bus.set_faults(4, drop_next=1)
    feetech.read_positions()
    assert feetech.counters.no_reply == 1 and feetech.counters.retries == 1 and feetech.counters.failed == 0
    assert feetech.health["wrist_flex"].no_reply == 1
    assert feetech.health["wrist_flex"].consecutive_failures == 0  # recovered


def test_corrupted_checksum_is_retried_and_counted(feetech, sim):
    sim.bus.set_faults(2, corrupt_next=1)
    feetech.read_positions()
    assert feetech.counters.bad_checksum == 1 and feetech.counters.failed == 0
    assert feetech.health["shoulder_lift"].bad_checksum == 1


def test_stale_bytes_do_not_leak_into_the_next_read(feetech, sim):
    # Motor 2's reply is corrupted mid sync-read: replies of 3..6 are left unread in the buffer.
    sim.bus.set_faults(2, corrupt_next=3)
    with pytest.raises(BusError):
        feetech.read_positions()
    # A later single read of motor 5 must get a fresh answer, not the stale Present_Position.
    assert feetech.read("wrist_roll", "Acceleration") == sim.bus.servo(5).peek("Acceleration")


def test_dead_motor_fails_after_retries_and_is_named(feetech, sim):
    sim.bus.set_faults(3, dead=True)
    with pytest.raises(BusError) as exc:
        feetech.read_positions()
    assert exc.value.motor == "elbow_flex"
    assert feetech.counters.failed == 1 and feetech.counters.no_reply == 3  # 1 try + 2 retries
    assert feetech.health["elbow_flex"].consecutive_failures == 3
    # Diagnostics still refresh the motors that answer and leave the dead one unknown.
    health = feetech.read_diagnostics()
    assert health["shoulder_pan"].voltage_v == pytest.approx(12.0)
    assert health["elbow_flex"].voltage_v is None
    sim.bus.set_faults(3, dead=False)
    feetech.read_positions()
    assert feetech.health["elbow_flex"].consecutive_failures == 0


def test_diagnostics_values_and_alarm_bits(feetech, sim):
    from gemma3nvla_ros.hardware.scs_protocol import ERRBIT_OVERHEAT

    sim.bus.servo(6).temperature_c = 66
    sim.bus.servo(6).voltage_dv = 74
    sim.bus.servo(6).set_alarm(ERRBIT_OVERHEAT)
    health = feetech.read_diagnostics()["gripper"]
    assert (health.temperature_c, health.voltage_v, health.status) == (66, pytest.approx(7.4), ERRBIT_OVERHEAT)
    assert health.error_bits == ERRBIT_OVERHEAT  # from the status packets themselves
    assert health.current_a is not None


def test_port_vanishing_raises_port_error(sim):
    bus = FeetechBus(sim.port, SO101_MOTORS, timeout_ms=20.0)
    bus.connect()
    sim.stop()
    with pytest.raises(BusPortError):
        for _ in range(3):
            bus.read_positions()
    bus.close()


def test_second_opener_of_the_same_port_is_refused(feetech, sim):
    other = FeetechBus(sim.port, SO101_MOTORS)
    with pytest.raises(BusPortError, match="in use by another process"):
        other.open()
    feetech.close()
    other.open()  # free again once the first closed it
    other.close()


def test_disable_torque_reaches_every_answering_motor_when_one_is_dead(feetech, sim):
    """Shutdown with on_shutdown=disable_torque and one motor silent: the others still go limp (a
    failure on motor 3 must not leave motors 4..6 holding), and the failure is still raised."""
    feetech.enable_torque()
    sim.bus.set_faults(3, dead=True)
    with pytest.raises(BusError) as exc:
        feetech.disable_torque()
    assert exc.value.motor == "elbow_flex"
    assert [s.torque_enabled for s in sim.bus.servos] == [False, False, True, False, False, False]
    assert [s.peek("Lock") for s in sim.bus.servos] == [0, 0, 1, 0, 0, 0]


def test_diagnostics_read_torque_state(feetech, sim):
    from gemma3nvla_ros.hardware.scs_protocol import ERRBIT_OVERLOAD

    feetech.enable_torque()
    assert all(h.torque_enabled for h in feetech.read_diagnostics().values())
    sim.bus.servo(2).set_alarm(ERRBIT_OVERLOAD)  # the firmware unloads: torque off by itself
    sim.bus.servo(2).set_alarm(0)  # alarm gone, torque stays off
    health = feetech.read_diagnostics()
    assert health["shoulder_lift"].torque_enabled is False and health["shoulder_pan"].torque_enabled is True


def test_motor_failing_after_retries_is_marked_unreachable_until_torque_is_enabled(feetech, sim):
    sim.bus.set_faults(4, drop_next=1)
    feetech.read_positions()  # recovered by a retry: not unreachable
    assert not any(h.unreachable for h in feetech.health.values())
    sim.bus.set_faults(4, dead=True)
    with pytest.raises(BusError):
        feetech.read_positions()
    assert [n for n, h in feetech.health.items() if h.unreachable] == ["wrist_flex"]
    sim.bus.set_faults(4, dead=False)
    feetech.read_positions()
    assert feetech.health["wrist_flex"].unreachable  # answering again does not clear it: torque may be off
    feetech.enable_torque()
    assert not feetech.health["wrist_flex"].unreachable


def test_motor_that_only_missed_replies_kept_torque_and_needs_no_recovery(feetech, sim):
    feetech.enable_torque()
    sim.bus.set_faults(5, dead=True)  # a data-line fault: no replies, power and torque kept
    with pytest.raises(BusError):
        feetech.read_positions()
    sim.bus.set_faults(5, dead=False)
    assert feetech.health["wrist_roll"].unreachable
    assert feetech.refresh_torque("wrist_roll") is True
    assert not feetech.health["wrist_roll"].unreachable and feetech.health["wrist_roll"].recoveries == 0
    sim.bus.set_power(5, False)
    sim.bus.set_power(5, True)  # a brief brown-out between two reads
    assert feetech.refresh_torque("wrist_roll") is False
    assert feetech.health["wrist_roll"].torque_enabled is False


def test_recover_motor_after_a_brown_out_holds_where_it_fell(feetech, sim, clock):
    """Motor 3 loses power (limp, falls 300 ticks) and powers up with torque off, RAM reset and its goal
    register elsewhere. recover_motor brings it back alone: configuration re-applied, goal := present
    before torque on (no jump), torque verified; the other motors keep torque throughout."""
    feetech.configure()
    feetech.enable_torque()
    elbow = sim.bus.servo(3)
    start = feetech.read_positions()
    sim.bus.set_power(3, False)
    elbow.push_to(start[2] - 300)
    sim.bus.set_power(3, True)
    assert elbow.peek("Acceleration") == 0 and not elbow.torque_enabled and elbow.goal != start[2] - 300
    held = feetech.recover_motor("elbow_flex")
    assert held == start[2] - 300
    assert elbow.torque_enabled and elbow.goal == held and elbow.peek("Lock") == 1
    assert elbow.peek("Acceleration") == LEROBOT.acceleration
    assert elbow.peek("Maximum_Acceleration") == LEROBOT.maximum_acceleration
    assert all(s.torque_enabled for s in sim.bus.servos)
    clock.advance(1.0)
    np.testing.assert_array_equal(feetech.read_positions(), [*start[:2], held, *start[3:]])
    health = feetech.health["elbow_flex"]
    assert (health.recoveries, health.unreachable, health.torque_enabled) == (1, False, True)


def test_recover_motor_with_an_active_alarm_fails_and_leaves_it_limp(feetech, sim):
    from gemma3nvla_ros.hardware.scs_protocol import ERRBIT_OVERLOAD

    feetech.enable_torque()
    sim.bus.servo(2).set_alarm(ERRBIT_OVERLOAD)  # the firmware unloads, and would again at once
    with pytest.raises(BusError, match="torque on shoulder_lift did not stay on .*overload"):
        feetech.recover_motor("shoulder_lift")
    assert not sim.bus.servo(2).torque_enabled
    assert feetech.health["shoulder_lift"].torque_enabled is False
    assert feetech.health["shoulder_lift"].recoveries == 0


@pytest.mark.parametrize("mode", ["checksum", "truncate"])
def test_a_few_incorrect_status_packets_are_retried_and_the_rescue_counted(feetech, sim, mode):
    """LeRobot's num_read_retries: two corrupted replies in a row ("Incorrect status packet", as a bad
    checksum or cut short) and the third try answers; the read succeeds and says a retry rescued it."""
    expected = feetech.read_positions()
    sim.bus.set_faults(3, corrupt_next=2, corrupt_mode=mode)
    np.testing.assert_array_equal(feetech.read_positions(), expected)
    c = feetech.counters
    assert (c.bad_checksum, c.retries, c.recovered, c.failed) == (2, 2, 1, 0)
    assert feetech.health["elbow_flex"].bad_checksum == 2 and feetech.health["elbow_flex"].consecutive_failures == 0


def test_persistently_incorrect_status_packets_fail_naming_the_motor(feetech, sim):
    sim.bus.set_faults(4, corrupt_probability=1.0)
    with pytest.raises(BusError, match="Incorrect status packet") as exc:
        feetech.read_positions()
    assert exc.value.motor == "wrist_flex"
    c = feetech.counters
    assert (c.bad_checksum, c.retries, c.recovered, c.failed) == (3, 2, 0, 1)
    sim.bus.set_faults(4, corrupt_probability=0.0)
    feetech.read_positions()
    assert feetech.counters.failed == 1


def test_retry_count_changed_at_run_time_applies_to_the_next_transaction(feetech, sim):
    feetech.retries = 0
    sim.bus.set_faults(2, drop_next=1)
    with pytest.raises(BusError):
        feetech.read_positions()
    feetech.retries = 3
    sim.bus.set_faults(2, corrupt_next=3)
    feetech.read_positions()
    assert feetech.counters.recovered == 1


def test_set_gains_while_holding_keeps_torque_and_position(feetech, sim, clock):
    feetech.configure()
    feetech.enable_torque()
    start = feetech.read_positions()
    changes = feetech.set_gains(ServoSettings(position_p_coefficient=24, position_d_coefficient=20))
    assert sorted(changes)[:2] == ["elbow_flex.D_Coefficient=20", "elbow_flex.P_Coefficient=24"]
    assert len(changes) == 12
    for servo in sim.bus.servos:
        assert (servo.peek("P_Coefficient"), servo.peek("I_Coefficient"), servo.peek("D_Coefficient")) == (24, 0, 20)
        assert servo.torque_enabled and servo.peek("Lock") == 1  # held throughout, EEPROM locked again
    assert feetech.settings.position_p_coefficient == 24  # what a later configure() keeps
    assert feetech.configure() == []
    clock.advance(1.0)
    np.testing.assert_array_equal(feetech.read_positions(), start)
    assert feetech.set_gains(feetech.settings) == []


def test_set_gains_on_a_silent_motor_raises_and_keeps_the_old_settings(feetech, sim):
    feetech.configure()
    sim.bus.set_faults(5, dead=True)
    with pytest.raises(BusError) as exc:
        feetech.set_gains(ServoSettings(position_p_coefficient=30))
    assert exc.value.motor == "wrist_roll"
    assert feetech.settings == LEROBOT
