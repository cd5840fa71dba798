"""The SO-101 *leader* arm (the one moved by hand): its LeRobot calibration location and command, and its
on-connect configuration. Same servos, bus code and calibration format as the follower
(``hardware.calibration``, ``hardware.feetech_bus``); what differs is kept here.

Calibration location (LeRobot 0.4.4 ``Teleoperator``): ``$HF_LEROBOT_CALIBRATION/teleoperators/so_leader/<id>.json``
(0.4.3+), or ``teleoperators/so101_leader/<id>.json`` for older installs, written by
``lerobot-calibrate --teleop.type=so101_leader --teleop.port=<port> --teleop.id=<id>``.

The leader is never torqued: :func:`configure_leader` switches torque off first and writes only what
LeRobot's ``SOLeader.configure`` writes (return delay, accelerations, position mode, and in 0.6.1 Phase
bit 4 cleared: single-turn readings) where servo memory differs. No goal is ever written.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from gemma3nvla_ros.hardware.calibration import (
    SO101_MOTORS,
    CalibrationError,
    MotorCalibration,
    calibrate_command,
    hf_lerobot_calibration_dir,
    load_calibration,
)
from gemma3nvla_ros.hardware.servo_config import PHASE_SETTING

LEADER_DIRS = ("so_leader", "so101_leader")  # 0.4.3+ first, then the older name

# What LeRobot's SOLeader.configure() (FeetechMotorsBus.configure_motors + Operating_Mode) writes.
LEADER_CONFIG: dict[str, int] = {
    "Return_Delay_Time": 0,
    "Maximum_Acceleration": 254,
    "Acceleration": 254,
    "Operating_Mode": 0,  # position mode
}


def leader_calibrate_command(port: str = "<port>", teleop_id: str = "<leader_id>") -> str:
    return f"lerobot-calibrate --teleop.type=so101_leader --teleop.port={port} --teleop.id={teleop_id}"


def leader_calibration_candidates(teleop_id: str, env: Mapping[str, str] | None = None) -> list[Path]:
    root = hf_lerobot_calibration_dir(env) / "teleoperators"
    return [root / d / f"{teleop_id}.json" for d in LEADER_DIRS]


def resolve_leader_calibration_path(
    teleop_id: str, calibration_file: str = "", port: str = "<port>", env: Mapping[str, str] | None = None
) -> Path:
    """The explicit file if given, else the first existing LeRobot location for ``teleop_id``.
    CalibrationError names every place looked at and the ``lerobot-calibrate`` command for the leader."""
    command = leader_calibrate_command(port, teleop_id or "<leader_id>")
    if calibration_file:
        path = Path(calibration_file).expanduser()
        if not path.is_file():
            raise CalibrationError(
                f"Leader calibration file {path} (parameter calibration_file) does not exist. Point it at the "
                f"JSON that `{command}` wrote, or leave it empty to use LeRobot's location for robot_id."
            )
        return path
    if not teleop_id:
        raise CalibrationError(
            "No leader calibration: set robot_id (the --teleop.id you calibrated the leader with) or "
            f"calibration_file. Calibrate the leader arm with `{command}`."
        )
    candidates = leader_calibration_candidates(teleop_id, env)
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise CalibrationError(
        f"No calibration for the leader arm '{teleop_id}' (looked at {looked}). Calibrate it with "
        f"`{command}` or set calibration_file to an existing calibration JSON."
    )


def load_leader_calibration(
    path: str | os.PathLike[str], expected: Mapping[str, int] = SO101_MOTORS, port: str = "<port>",
    teleop_id: str = "<leader_id>",
) -> dict[str, MotorCalibration]:
    """``load_calibration`` with the leader's recalibration command in its errors."""
    try:
        return load_calibration(path, expected)
    except CalibrationError as exc:
        text = str(exc).replace(calibrate_command(), leader_calibrate_command(port, teleop_id or "<leader_id>"))
        raise CalibrationError(text) from None


def leader_mismatch_message(diffs: list[str], path: Path | str, port: str, teleop_id: str) -> str:
    return (
        f"Leader calibration file {path} does not match the servo memory on {port}: " + "; ".join(diffs) + ". "
        "The positions read would be wrong, so nothing is published. Either the file belongs to another arm "
        "(check robot_id / calibration_file), or the leader was recalibrated since. Fix: run "
        f"`{leader_calibrate_command(port, teleop_id or '<leader_id>')}`, or restart with "
        "write_calibration_to_motors:=true to write the file to the motors."
    )


def configure_leader(bus, names=None) -> list[str]:
    """Torque off (and Lock 0) on every motor, then LEADER_CONFIG where servo memory differs.
    ``bus`` is a connected ``FeetechBus``. Returns the changes written."""
    names = list(names or bus.names)
    bus.disable_torque(names)
    changes = []
    for name in names:
        for register, value in LEADER_CONFIG.items():
            if bus.read(name, register) != value:
                bus.write(name, register, value)
                changes.append(f"{name}.{register}={value}")
        phase = bus.read(name, "Phase")
        if PHASE_SETTING.wanted(phase) != phase:
            bus.write(name, "Phase", PHASE_SETTING.wanted(phase))
            changes.append(f"{name}.Phase={PHASE_SETTING.wanted(phase)}")
    return changes
