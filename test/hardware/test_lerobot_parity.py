"""An independent reference for the on-connect servo configuration: LeRobot 0.6.1's own ``SOFollower``
(so101_follower) ``connect()`` against one simulated arm, the bridge's bus bring-up (connect,
configure, enable torque: what ``so101_bridge.start`` calls) against an identical fresh one; every
EEPROM register and the RAM settings LeRobot writes must end up equal.

Runs where LeRobot >= 0.6 imports (the Python 3.12 venv); skipped elsewhere (LeRobot 0.4.4 predates the
Phase fix and the PID fields, so it is no reference for this)."""
from __future__ import annotations

import json

import pytest

from gemma3nvla_ros import compat
from gemma3nvla_ros.hardware.calibration import EXAMPLE_CALIBRATION, SO101_MOTORS
from gemma3nvla_ros.hardware.sim_bus import PtySimBus
from gemma3nvla_ros.hardware.sim_servo import SimServoBus, make_so101_bus
from gemma3nvla_ros.hardware.sts3215 import EEPROM_END, REG

pytestmark = pytest.mark.skipif(
    not compat.LEROBOT_06,
    reason=f"needs LeRobot >= 0.6 as the reference (found {compat.LEROBOT_VERSION}): run it in the Python 3.12 venv",
)

# RAM registers LeRobot's configure() writes or its torque handling leaves set (Goal_Position is left
# out: LeRobot does not write it at connect, the bridge writes goal := present before torque on).
RAM_SETTINGS = ("Torque_Enable", "Acceleration", "Lock", "Maximum_Acceleration")


def _arm_as_found() -> SimServoBus:
    """A calibrated arm that is not at LeRobot's settings: factory RAM and EEPROM (return delay 250,
    P 32, no gripper limits), multi-turn feedback (Phase bit 4) on two servos, a hand-tuned P on one."""
    bus = make_so101_bus(calibration=EXAMPLE_CALIBRATION, cold=True)
    bus.servo(2).set_register("Phase", 0x1C)
    bus.servo(5).set_register("Phase", 0x1C)
    bus.servo(3).set_register("P_Coefficient", 40)
    return bus


def _snapshot(bus: SimServoBus) -> dict[tuple[int, str], int]:
    return {
        (servo.servo_id, name): servo.peek(name)
        for servo in bus.servos
        for name, (address, _) in REG.items()
        if address < EEPROM_END or name in RAM_SETTINGS
    }


def test_bridge_configures_the_servos_exactly_as_lerobot_so101_follower_connect(tmp_path):
    from lerobot.robots.so_follower import SO101Follower, SO101FollowerConfig

    from gemma3nvla_ros.hardware.feetech_bus import FeetechBus

    before = _snapshot(_arm_as_found())
    (tmp_path / "parity.json").write_text(json.dumps(EXAMPLE_CALIBRATION))  # matches servo memory: no prompt
    with PtySimBus(_arm_as_found()) as sim:
        robot = SO101Follower(SO101FollowerConfig(port=sim.port, id="parity", calibration_dir=tmp_path))
        robot.connect()
        try:
            lerobot_result = _snapshot(sim.bus)
        finally:
            robot.disconnect()

    with PtySimBus(_arm_as_found()) as sim:
        bus = FeetechBus(sim.port, SO101_MOTORS)
        bus.connect()
        try:
            bus.configure(gripper="gripper")
            bus.enable_torque()
            bridge_result = _snapshot(sim.bus)
            positions = bus.read_positions()
        finally:
            bus.close()

    changed = {k for k in before if before[k] != lerobot_result[k]}
    # The reference did configure something on every servo (else the comparison proves nothing).
    assert {(2, "Phase"), (5, "Phase"), (3, "P_Coefficient"), (6, "Protection_Current")} <= changed
    assert {sid for sid, _ in changed} == set(SO101_MOTORS.values())
    diff = {k: (lerobot_result[k], bridge_result[k]) for k in lerobot_result if lerobot_result[k] != bridge_result[k]}
    assert diff == {}, f"(motor id, register): (LeRobot 0.6.1, bridge) {diff}"
    assert all(0 <= p <= 4095 for p in positions)
