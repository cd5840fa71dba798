"""Wire format of the simulated servos, byte for byte."""
from __future__ import annotations

import pytest

from gemma3nvla_ros.hardware import scs_protocol as scs
from gemma3nvla_ros.hardware.sim_servo import SimServo, SimServoBus, make_so101_bus


def test_checksum_matches_sdk_example():
    # Ping id 1: FF FF 01 02 01 FB (Feetech manual example; ~(1+2+1) & 0xFF = 0xFB).
    assert scs.instruction_packet(1, scs.INST_PING) == bytes([0xFF, 0xFF, 0x01, 0x02, 0x01, 0xFB])


def test_ping_reply_bytes():
    bus = SimServoBus([SimServo(1)])
    assert bus.handle(bytes([0xFF, 0xFF, 0x01, 0x02, 0x01, 0xFB])) == bytes([0xFF, 0xFF, 0x01, 0x02, 0x00, 0xFC])


def test_read_model_number_bytes():
    bus = SimServoBus([SimServo(1)])
    reply = bus.handle(scs.instruction_packet(1, scs.INST_READ, [3, 2]))
    assert reply == scs.status_packet(1, 0, (777).to_bytes(2, "little"))
    assert reply[5:7] == bytes([0x09, 0x03])


def test_write_then_read_and_status_reply():
    bus = SimServoBus([SimServo(2)])
    assert bus.handle(scs.instruction_packet(2, scs.INST_WRITE, [41, 254])) == scs.status_packet(2, 0)
    assert bus.handle(scs.instruction_packet(2, scs.INST_READ, [41, 1])) == scs.status_packet(2, 0, [254])


def test_bad_checksum_instruction_is_ignored():
    bus = SimServoBus([SimServo(1)])
    packet = bytearray(scs.instruction_packet(1, scs.INST_WRITE, [41, 200]))
    packet[-1] ^= 0xFF
    assert bus.handle(bytes(packet)) == b""
    assert bus.servo(1).peek("Acceleration") == 0
    assert bus.stats["bad_checksum_in"] == 1


def test_split_and_garbage_prefixed_stream():
    bus = SimServoBus([SimServo(1)])
    packet = scs.instruction_packet(1, scs.INST_PING)
    assert bus.handle(b"\x00\x13\xff" + packet[:3]) == b""
    assert bus.handle(packet[3:]) == scs.status_packet(1, 0)


def test_sync_read_replies_in_requested_order_and_skips_missing():
    bus = make_so101_bus()
    reply = bus.handle(scs.instruction_packet(scs.BROADCAST_ID, scs.INST_SYNC_READ, [3, 2, 3, 1, 9]))
    parsed = scs.PacketParser().feed(reply)
    assert [p.servo_id for p in parsed] == [3, 1]  # id 9 does not exist: no reply
    assert all(p.checksum_ok and p.params == (777).to_bytes(2, "little") for p in parsed)


def test_sync_write_has_no_reply_and_writes_each_motor():
    bus = make_so101_bus()
    params = [42, 2, 1, 0x00, 0x08, 2, 0x10, 0x08]
    assert bus.handle(scs.instruction_packet(scs.BROADCAST_ID, scs.INST_SYNC_WRITE, params)) == b""
    assert bus.servo(1).goal == 0x800
    assert bus.servo(2).goal == 0x810


def test_reg_write_applies_on_action():
    bus = make_so101_bus()
    bus.handle(scs.instruction_packet(1, scs.INST_REG_WRITE, [41, 77]))
    assert bus.servo(1).peek("Acceleration") == 0
    assert bus.handle(scs.instruction_packet(scs.BROADCAST_ID, scs.INST_ACTION)) == b""
    assert bus.servo(1).peek("Acceleration") == 77


def test_broadcast_write_no_reply():
    bus = make_so101_bus()
    assert bus.handle(scs.instruction_packet(scs.BROADCAST_ID, scs.INST_WRITE, [41, 9])) == b""
    assert {s.peek("Acceleration") for s in bus.servos} == {9}


def test_alarm_bits_in_error_byte():
    bus = SimServoBus([SimServo(1)])
    bus.servo(1).set_alarm(scs.ERRBIT_OVERHEAT)
    (packet,) = scs.PacketParser().feed(bus.handle(scs.instruction_packet(1, scs.INST_PING)))
    assert packet.code == scs.ERRBIT_OVERHEAT


@pytest.mark.parametrize("value,bit", [(0, 11), (2047, 11), (-2047, 11), (-5, 15), (4095, 15)])
def test_sign_magnitude_round_trip(value, bit):
    assert scs.decode_sign_magnitude(scs.encode_sign_magnitude(value, bit), bit) == value


def test_sign_magnitude_matches_lerobot():
    from lerobot.motors.encoding_utils import decode_sign_magnitude, encode_sign_magnitude

    for value in (-2047, -1, 0, 1, 1000, 2047):
        assert scs.encode_sign_magnitude(value, 11) == encode_sign_magnitude(value, 11)
        raw = encode_sign_magnitude(value, 11)
        assert scs.decode_sign_magnitude(raw, 11) == decode_sign_magnitude(raw, 11)
    with pytest.raises(ValueError):
        scs.encode_sign_magnitude(2048, 11)
