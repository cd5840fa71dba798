"""The SO-101 leader arm: LeRobot's teleoperator calibration location, and a configuration that never
torques it (on the byte-level simulator, through feetech-servo-sdk)."""
from __future__ import annotations

import json

import pytest

from gemma3nvla_ros.hardware.calibration import EXAMPLE_CALIBRATION, CalibrationError
from gemma3nvla_ros.hardware.leader_arm import (
    LEADER_CONFIG,
    configure_leader,
    load_leader_calibration,
    resolve_leader_calibration_path,
)


def test_leader_location_is_lerobots_teleoperator_dir(tmp_path):
    from lerobot.teleoperators.so_leader import SOLeader
    from lerobot.utils.constants import TELEOPERATORS

    env = {"HF_LEROBOT_CALIBRATION": str(tmp_path)}  # LeRobot's Teleoperator: <calibration>/<TELEOPERATORS>/<name>
    ours = tmp_path / TELEOPERATORS / SOLeader.name
    with pytest.raises(CalibrationError) as exc:
        resolve_leader_calibration_path("lead1", port="/dev/ttyACM1", env=env)
    text = str(exc.value)
    assert f"{ours}/lead1.json" in text and "teleoperators/so101_leader/lead1.json" in text
    assert "lerobot-calibrate --teleop.type=so101_leader --teleop.port=/dev/ttyACM1 --teleop.id=lead1" in text
    old = tmp_path / "teleoperators" / "so101_leader" / "lead1.json"
    old.parent.mkdir(parents=True)
    old.write_text("{}")
    assert resolve_leader_calibration_path("lead1", env=env) == old
    new = tmp_path / "teleoperators" / "so_leader" / "lead1.json"
    new.parent.mkdir(parents=True)
    new.write_text("{}")
    assert resolve_leader_calibration_path("lead1", env=env) == new
    with pytest.raises(CalibrationError, match="--teleop.type=so101_leader"):
        resolve_leader_calibration_path("", env=env)
    with pytest.raises(CalibrationError, match="does not exist"):
        resolve_leader_calibration_path("lead1", str(tmp_path / "nope.json"), env=env)


def test_invalid_leader_file_names_the_leader_command(tmp_path):
    bad = {k: dict(v) for k, v in EXAMPLE_CALIBRATION.items()}
    bad["gripper"]["range_min"] = 5000
    path = tmp_path / "lead.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(CalibrationError) as exc:
        load_leader_calibration(path, port="/dev/ttyACM1", teleop_id="lead")
    assert "gripper.range_min 5000" in str(exc.value)
    assert "--teleop.type=so101_leader" in str(exc.value) and "--robot.type" not in str(exc.value)


def test_configure_leader_leaves_torque_off_and_writes_no_goal(sim, feetech):
    bus = feetech
    bus.enable_torque()  # as if follower code had run on the leader
    goals = bus.sync_read("Goal_Position")
    changes = configure_leader(bus)
    assert all(not on for on in bus.torque_enabled().values())
    assert bus.sync_read("Goal_Position") == goals
    assert {c.split("=")[0].split(".")[1] for c in changes} <= set(LEADER_CONFIG)
    for name in bus.names:
        for register, value in LEADER_CONFIG.items():
            assert bus.read(name, register) == value
    assert configure_leader(bus) == []  # written only where servo memory differs
    # Limp: a hand moves it, and the positions read follow.
    servo = sim.bus.servo(3)
    servo.push_to(2500.0)
    assert bus.read_positions()[2] == 2500
