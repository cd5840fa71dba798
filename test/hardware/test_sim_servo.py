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
