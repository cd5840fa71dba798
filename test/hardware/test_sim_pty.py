"""feetech-servo-sdk, unmodified, against the simulated bus on a pty."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import scservo_sdk as scs
import serial

from gemma3nvla_ros.hardware.sim_bus import PtySimBus
from gemma3nvla_ros.hardware.sim_servo import make_so101_bus


def _open(port: str):
    ph = scs.PortHandler(port)
    assert ph.openPort()
    assert ph.setBaudRate(1_000_000)  # a pty accepts the termios speed; must not fail
    return ph, scs.PacketHandler(0)


def test_pyserial_opens_pty_at_1mbaud(sim):
    ser = serial.Serial(sim.port, baudrate=1_000_000, timeout=0.5)
    ser.baudrate = 500_000
    ser.baudrate = 1_000_000
    ser.write(bytes([0xFF, 0xFF, 0x01, 0x02, 0x01, 0xFB]))
    assert ser.read(6) == bytes([0xFF, 0xFF, 0x01, 0x02, 0x00, 0xFC])
    ser.close()


def test_sdk_ping_read_write(sim):
    ph, pk = _open(sim.port)
    for motor_id in range(1, 7):
        assert pk.ping(ph, motor_id) == (777, scs.COMM_SUCCESS, 0)
    model, comm, _ = pk.ping(ph, 9)
    assert comm == scs.COMM_RX_TIMEOUT
    assert pk.write1ByteTxRx(ph, 3, 41, 200) == (scs.COMM_SUCCESS, 0)
    assert pk.read1ByteTxRx(ph, 3, 41) == (200, scs.COMM_SUCCESS, 0)
    ph.closePort()


def test_sdk_sync_write_moves_sim_motors_and_sync_read_sees_it(sim, clock):
    ph, pk = _open(sim.port)
    for motor_id in range(1, 7):
        pk.write1ByteTxRx(ph, motor_id, 40, 1)  # torque on
    writer = scs.GroupSyncWrite(ph, pk, 42, 2)
    goals = {1: 2100, 2: 2000, 3: 1900, 4: 2050, 5: 1000, 6: 2500}
    for motor_id, goal in goals.items():
        writer.addParam(motor_id, [scs.SCS_LOBYTE(goal), scs.SCS_HIBYTE(goal)])
    assert writer.txPacket() == scs.COMM_SUCCESS
    time.sleep(0.05)  # the pty thread applies it
    clock.advance(2.0)
    reader = scs.GroupSyncRead(ph, pk, 56, 2)
    for motor_id in goals:
        reader.addParam(motor_id)
    assert reader.txRxPacket() == scs.COMM_SUCCESS
    assert {i: reader.getData(i, 56, 2) for i in goals} == goals
    ph.closePort()


def test_sdk_sees_dropped_and_corrupted_replies(sim):
    ph, pk = _open(sim.port)
    sim.bus.set_faults(4, drop_next=1)
    assert pk.ping(ph, 4)[1] == scs.COMM_RX_TIMEOUT
    sim.bus.set_faults(4, corrupt_next=1)
    assert pk.read2ByteTxRx(ph, 4, 56)[1] == scs.COMM_RX_CORRUPT
    assert pk.read2ByteTxRx(ph, 4, 56)[1] == scs.COMM_SUCCESS
    ph.closePort()


def test_client_can_reopen_port(sim):
    for _ in range(2):
        ph, pk = _open(sim.port)
        assert pk.ping(ph, 1)[1] == scs.COMM_SUCCESS
        ph.closePort()


def test_symlink_port(tmp_path):
    link = tmp_path / "so101"
    with PtySimBus(make_so101_bus(), link=link) as server:
        assert os.readlink(link) == server.path and server.port == str(link)
        ph, pk = _open(str(link))
        assert pk.ping(ph, 6)[1] == scs.COMM_SUCCESS
        ph.closePort()
    assert not link.exists()


def test_cli_prints_port_writes_path_file_and_applies_faults(tmp_path):
    link, path_file = tmp_path / "arm", tmp_path / "port.txt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gemma3nvla_ros.hardware.sim_bus", "--link", str(link), "--path-file",
         str(path_file), "--dead", "3", "--exit-on-stdin-eof"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line == str(link)
        assert path_file.read_text().strip() == str(link)
        ph, pk = _open(line)
        assert pk.ping(ph, 2)[1] == scs.COMM_SUCCESS
        assert pk.ping(ph, 3)[1] == scs.COMM_RX_TIMEOUT
        ph.closePort()
        proc.stdin.close()  # parent gone -> the child exits by itself
        assert proc.wait(timeout=10) == 0
        assert not link.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_lerobot_feetech_bus_runs_unmodified_against_the_sim(sim, clock):
    """LeRobot 0.4.4's own FeetechMotorsBus: handshake, calibration check, normalized reads, a move."""
    from lerobot.motors import Motor, MotorCalibration, MotorNormMode
    from lerobot.motors.feetech import FeetechMotorsBus

    from gemma3nvla_ros.hardware.calibration import EXAMPLE_CALIBRATION, SO101_MOTORS

    motors = {
        n: Motor(i, "sts3215", MotorNormMode.RANGE_0_100 if n == "gripper" else MotorNormMode.DEGREES)
        for n, i in SO101_MOTORS.items()
    }
    bus = FeetechMotorsBus(sim.port, motors, {n: MotorCalibration(**c) for n, c in EXAMPLE_CALIBRATION.items()})
    bus.connect()
    try:
        assert bus.is_calibrated
        pos = bus.sync_read("Present_Position")
        assert all(abs(v) < 0.1 for n, v in pos.items() if n != "gripper")  # homed pose = 0 degrees
        bus.enable_torque()
        bus.sync_write("Goal_Position", {"elbow_flex": 30.0})
        time.sleep(0.05)
        clock.advance(2.0)
        assert abs(bus.sync_read("Present_Position")["elbow_flex"] - 30.0) < 0.2
    finally:
        bus.disconnect()  # disables torque, as LeRobot does by default
    assert {s.peek("Torque_Enable") for s in sim.bus.servos} == {0}
