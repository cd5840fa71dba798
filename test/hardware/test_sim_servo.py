"""Servo model semantics: offset frame, limits, EEPROM lock, torque, motion, faults."""
from __future__ import annotations

from gemma3nvla_ros.hardware import scs_protocol as scs
from gemma3nvla_ros.hardware.sim_servo import SimServo, SimServoBus, make_so101_bus
from gemma3nvla_ros.hardware.sts3215 import REG


def _write(bus, sid, name, value):
    addr, size = REG[name]
    return bus.handle(scs.instruction_packet(sid, scs.INST_WRITE, [addr, *int(value).to_bytes(size, "little")]))


def _read(bus, sid, name):
    addr, size = REG[name]
    (p,) = scs.PacketParser().feed(bus.handle(scs.instruction_packet(sid, scs.INST_READ, [addr, size])))
    return int.from_bytes(p.params, "little")


def test_homing_offset_as_lerobot_calibration_expects(clock):
    """LeRobot writes Homing_Offset = present - 2047 (raw frame); present then reads 2047."""
    bus = SimServoBus([SimServo(1, position=3000.0, clock=clock)])
    _write(bus, 1, "Lock", 0)
    present = _read(bus, 1, "Present_Position")
    offset = present - 2047
    _write(bus, 1, "Homing_Offset", scs.encode_sign_magnitude(offset, 11))
    assert _read(bus, 1, "Present_Position") == 2047
    # Negative offsets wrap the same way: present = (actual - offset) mod 4096.
    _write(bus, 1, "Homing_Offset", scs.encode_sign_magnitude(-1000, 11))
    assert _read(bus, 1, "Present_Position") == (3000 + 1000) % 4096


def test_eeprom_locked_writes_are_ignored(clock):
    bus = SimServoBus([SimServo(1, clock=clock)])
    assert bus.servo(1).peek("Lock") == 1
    _write(bus, 1, "Min_Position_Limit", 1000)
    assert _read(bus, 1, "Min_Position_Limit") == 0
    _write(bus, 1, "Lock", 0)
    _write(bus, 1, "Min_Position_Limit", 1000)
    assert _read(bus, 1, "Min_Position_Limit") == 1000


def test_read_only_registers_ignore_writes(clock):
    bus = SimServoBus([SimServo(1, clock=clock)])
    _write(bus, 1, "Present_Position", 10)
    assert _read(bus, 1, "Present_Position") == 2047
    _write(bus, 1, "Model_Number", 1)
    assert _read(bus, 1, "Model_Number") == 777


def test_torque_and_first_order_motion(clock):
    bus = SimServoBus([SimServo(1, position=2000.0, clock=clock)])
    _write(bus, 1, "Goal_Position", 2400)
    clock.advance(1.0)
    assert _read(bus, 1, "Present_Position") == 2000  # torque off: no motion
    _write(bus, 1, "Torque_Enable", 1)
    clock.advance(0.01)
    mid = _read(bus, 1, "Present_Position")
    assert 2000 < mid < 2400
    assert _read(bus, 1, "Moving") == 1
    clock.advance(1.0)
    assert _read(bus, 1, "Present_Position") == 2400
    assert _read(bus, 1, "Moving") == 0


def test_goal_clamped_to_position_limits(clock):
    bus = make_so101_bus(calibration={"m": {"id": 1, "homing_offset": 0, "range_min": 1000, "range_max": 3000}}, ids=[1], clock=clock)
    _write(bus, 1, "Torque_Enable", 1)
    _write(bus, 1, "Goal_Position", 3900)
    clock.advance(2.0)
    assert _read(bus, 1, "Present_Position") == 3000


def test_diagnostic_registers(clock):
    bus = SimServoBus([SimServo(1, clock=clock, voltage_dv=74, temperature_c=41)])
    assert _read(bus, 1, "Present_Voltage") == 74
    assert _read(bus, 1, "Present_Temperature") == 41
    bus.servo(1).set_alarm(scs.ERRBIT_OVERLOAD)
    assert _read(bus, 1, "Status") == scs.ERRBIT_OVERLOAD


def test_overload_alarm_unloads_torque(clock):
    bus = SimServoBus([SimServo(1, clock=clock)])
    _write(bus, 1, "Torque_Enable", 1)
    bus.servo(1).set_alarm(scs.ERRBIT_OVERLOAD)  # in the default Unloading_Condition (44)
    assert _read(bus, 1, "Torque_Enable") == 0


def test_fault_dead_drop_corrupt(clock):
    bus = make_so101_bus(clock=clock)
    ping = scs.instruction_packet(2, scs.INST_PING)
    bus.set_faults(2, dead=True)
    assert bus.handle(ping) == b""
    _write(bus, 2, "Acceleration", 5)
    bus.set_faults(2, dead=False)
    assert _read(bus, 2, "Acceleration") == 0  # a dead motor ignored the write too
    bus.set_faults(2, drop_next=1)
    assert bus.handle(ping) == b""
    assert bus.handle(ping) == scs.status_packet(2, 0)
    bus.set_faults(2, corrupt_next=1)
    (p,) = scs.PacketParser().feed(bus.handle(ping))
    assert not p.checksum_ok
    bus.set_faults(None, drop_probability=1.0)
    assert bus.handle(scs.instruction_packet(5, scs.INST_PING)) == b""


def test_power_loss_then_power_up_like_a_brown_out(clock):
    """Unpowered: silent and limp (a hand or gravity moves it). Powered up: answers again with EEPROM
    (calibration, PID) kept and RAM at power-on values: torque off, Lock 1, Acceleration 0, and a goal
    register that is not the present position, so enabling torque without goal := present jumps."""
    cal = {"m": {"id": 1, "homing_offset": 100, "range_min": 1000, "range_max": 3000}}
    bus = make_so101_bus(calibration=cal, ids=[1], clock=clock)
    servo = bus.servo(1)
    _write(bus, 1, "Lock", 0)
    _write(bus, 1, "P_Coefficient", 16)
    _write(bus, 1, "Acceleration", 254)
    _write(bus, 1, "Goal_Position", 2100)
    _write(bus, 1, "Torque_Enable", 1)
    _write(bus, 1, "Lock", 1)
    clock.advance(1.0)
    assert _read(bus, 1, "Present_Position") == 2100
    ping = scs.instruction_packet(1, scs.INST_PING)

    bus.set_power(1, False)
    assert bus.handle(ping) == b"" and not servo.torque_enabled
    servo.push_to(1700.0)  # limp: it stays where it is pushed
    clock.advance(1.0)
    assert servo.position == 1700.0

    bus.set_power(1, True)
    assert bus.handle(ping) == scs.status_packet(1, 0)
    assert _read(bus, 1, "Torque_Enable") == 0 and _read(bus, 1, "Lock") == 1
    assert _read(bus, 1, "Acceleration") == 0
    assert _read(bus, 1, "Goal_Position") != _read(bus, 1, "Present_Position") == 1700
    assert (servo.homing_offset, _read(bus, 1, "Min_Position_Limit"), _read(bus, 1, "P_Coefficient")) == (100, 1000, 16)
    _write(bus, 1, "Torque_Enable", 1)  # without goal := present first
    clock.advance(2.0)
    assert _read(bus, 1, "Present_Position") == 1000  # driven to Min_Position_Limit: the jump a host must avoid


def test_cold_start_goal_is_not_present(clock):
    warm = make_so101_bus(clock=clock)
    cold = make_so101_bus(clock=clock, cold=True)
    assert all(s.goal == round(s.position) for s in warm.servos)
    assert all(s.goal != round(s.position) and not s.torque_enabled for s in cold.servos)


def test_text_commands_for_tests_and_the_cli(clock):
    from gemma3nvla_ros.hardware.sim_bus import apply_command

    bus = make_so101_bus(clock=clock)
    assert apply_command(bus, "power-off 3\n") == "ok power-off 3"
    assert not bus.servo(3).powered
    assert apply_command(bus, "move 3 1500") == "ok move 3 1500"
    assert bus.servo(3).position == 1500.0
    assert apply_command(bus, "power-on 3") == "ok power-on 3" and bus.servo(3).powered
    assert apply_command(bus, "alarm 2 32") == "ok alarm 2 32" and bus.servo(2).alarm == 32
    assert apply_command(bus, "alarm 2 0x0") == "ok alarm 2 0x0" and bus.servo(2).alarm == 0
    assert apply_command(bus, "dead 4 1") == "ok dead 4 1" and bus.servo(4).faults.dead
    assert apply_command(bus, "dead 4 0") == "ok dead 4 0" and not bus.servo(4).faults.dead
    assert apply_command(bus, "power-off 9").startswith("error power-off 9")
    assert apply_command(bus, "explode 1").startswith("error explode 1: expected one of")
    assert apply_command(bus, "move 1").startswith("error")


def test_reply_fault_commands_by_count_always_and_off(clock):
    from gemma3nvla_ros.hardware.sim_bus import apply_command

    bus = make_so101_bus(clock=clock)
    ping = scs.instruction_packet(2, scs.INST_PING, [])
    good = bus.handle(ping)
    assert apply_command(bus, "corrupt 2 always truncate") == "ok corrupt 2 always truncate"
    for _ in range(5):  # persistently: every reply cut short before its checksum
        assert bus.handle(ping) == good[:-2]
    assert apply_command(bus, "corrupt 2 off") == "ok corrupt 2 off"
    assert bus.handle(ping) == good
    assert apply_command(bus, "corrupt 2 1 checksum") == "ok corrupt 2 1 checksum"
    bad = bus.handle(ping)
    assert len(bad) == len(good) and bad[-1] != good[-1] and bus.handle(ping) == good  # once
    assert apply_command(bus, "drop all 2") == "ok drop all 2"
    assert [bus.handle(ping), bus.handle(ping), bus.handle(ping)] == [b"", b"", good]
    assert bus.handle(scs.instruction_packet(5, scs.INST_PING, [])) == b""  # every servo
    assert apply_command(bus, "drop 2 always") == "ok drop 2 always" and bus.handle(ping) == b""
    assert apply_command(bus, "drop 2 1 truncate").startswith("error")
    assert apply_command(bus, "corrupt 2 -1").startswith("error")


def test_phase_bit_4_reports_positions_unwrapped(clock):
    """Multi-turn angle feedback (Phase bit 4): a joint past its offset's wrap reads negative, the
    overflow LeRobot 0.6.1 prevents by clearing the bit; cleared, the same joint reads 0..4095 again."""
    servo = SimServo(1, clock=clock)
    servo.set_register("Homing_Offset", 1000)
    servo.push_to(3500.0)  # actual 4500 mod 4096 = 404: before its offset

    def present() -> int:
        return scs.decode_sign_magnitude(int.from_bytes(servo.read(*REG["Present_Position"]), "little"), 15)

    assert present() == 3500
    servo.set_register("Phase", 0x1C)
    assert present() == 404 - 1000
    servo.set_register("Phase", 0x0C)
    assert present() == 3500
