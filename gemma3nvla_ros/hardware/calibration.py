"""LeRobot calibration files for the SO-101 follower: where they live, loading, validation, and the
check against what the servos hold in memory.

Format (LeRobot 0.4.4, written by ``lerobot-calibrate``)::

    {"shoulder_pan": {"id": 1, "drive_mode": 0, "homing_offset": 20, "range_min": 740, "range_max": 3400}, ...}

Default location, computed exactly as ``lerobot.utils.constants`` does (no lerobot import needed):
``$HF_LEROBOT_CALIBRATION`` or ``$HF_LEROBOT_HOME/calibration`` or ``$HF_HOME/lerobot/calibration``
(``HF_HOME`` defaulting to ``$XDG_CACHE_HOME/huggingface`` or ``~/.cache/huggingface``), then
``robots/so_follower/<id>.json`` (0.4.3+) or, for older installs, ``robots/so101_follower/<id>.json``.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from gemma3nvla_ros.hardware.sts3215 import MAX_TICK

# LeRobot motor names, in id order 1..6. They are also the ROS joint names (so101_new_calib.urdf).
SO101_MOTORS: dict[str, int] = {
    "shoulder_pan": 1,
    "shoulder_lift": 2,
    "elbow_flex": 3,
    "wrist_flex": 4,
    "wrist_roll": 5,
    "gripper": 6,
}

# A plausible SO-101 calibration; also config/calibration/so101_follower_example.json and what the
# simulated bus loads into servo memory by default.
EXAMPLE_CALIBRATION: dict[str, dict[str, int]] = {
    "shoulder_pan": {"id": 1, "drive_mode": 0, "homing_offset": 20, "range_min": 740, "range_max": 3400},
    "shoulder_lift": {"id": 2, "drive_mode": 0, "homing_offset": -1021, "range_min": 880, "range_max": 3260},
    "elbow_flex": {"id": 3, "drive_mode": 0, "homing_offset": 1112, "range_min": 870, "range_max": 3080},
    "wrist_flex": {"id": 4, "drive_mode": 0, "homing_offset": 64, "range_min": 850, "range_max": 3200},
    "wrist_roll": {"id": 5, "drive_mode": 0, "homing_offset": -1290, "range_min": 0, "range_max": 4095},
    "gripper": {"id": 6, "drive_mode": 0, "homing_offset": 1365, "range_min": 2020, "range_max": 3410},
}

ROBOT_DIRS = ("so_follower", "so101_follower")  # 0.4.3+ first, then the older name


class CalibrationError(RuntimeError):
    """The calibration is missing, malformed, or does not match the servos. The message says what to do."""


@dataclass(frozen=True)
class MotorCalibration:
    id: int
    drive_mode: int
    homing_offset: int
    range_min: int
    range_max: int


def calibrate_command(port: str = "<port>", robot_id: str = "<robot_id>") -> str:
    return (
        f"lerobot-calibrate --robot.type=so101_follower --robot.port={port} --robot.id={robot_id}"
    )


def hf_lerobot_calibration_dir(env: Mapping[str, str] | None = None) -> Path:
    """``lerobot.utils.constants.HF_LEROBOT_CALIBRATION`` for the given environment."""
    env = os.environ if env is None else env
    if env.get("HF_LEROBOT_CALIBRATION"):
        return Path(env["HF_LEROBOT_CALIBRATION"]).expanduser()
    if env.get("HF_LEROBOT_HOME"):
        home = Path(env["HF_LEROBOT_HOME"]).expanduser()
    else:
        hf_home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
        home = Path(os.path.expanduser(hf_home)) / "lerobot"
    return home / "calibration"


def default_calibration_candidates(robot_id: str, env: Mapping[str, str] | None = None) -> list[Path]:
    root = hf_lerobot_calibration_dir(env) / "robots"
    return [root / d / f"{robot_id}.json" for d in ROBOT_DIRS]


def resolve_calibration_path(
    robot_id: str, calibration_file: str = "", env: Mapping[str, str] | None = None
) -> Path:
    """The explicit ``calibration_file`` if given, else the first existing default location.

    Raises CalibrationError naming every place looked at and the command that creates the file.
    """
    if calibration_file:
        path = Path(calibration_file).expanduser()
        if not path.is_file():
            raise CalibrationError(
                f"Calibration file {path} (parameter calibration_file) does not exist. Point "
                f"calibration_file at the JSON that `{calibrate_command(robot_id=robot_id)}` wrote, or leave "
                "it empty to use LeRobot's default location for robot_id."
            )
        return path
    if not robot_id:
        raise CalibrationError(
            "No calibration: set robot_id (the --robot.id you calibrated with) or calibration_file."
        )
    candidates = default_calibration_candidates(robot_id, env)
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise CalibrationError(
        f"No calibration for robot_id '{robot_id}' (looked at {looked}). Calibrate the arm with "
        f"`{calibrate_command(robot_id=robot_id)}` or set calibration_file to an existing calibration JSON."
    )


def parse_calibration(
    data: object, expected: Mapping[str, int] = SO101_MOTORS, source: str = "calibration"
) -> dict[str, MotorCalibration]:
    """Validate a decoded calibration dict against the expected motors; all problems in one error."""
    problems: list[str] = []
    if not isinstance(data, dict):
        raise CalibrationError(f"{source}: expected a JSON object of motors, got {type(data).__name__}.")
    missing = [name for name in expected if name not in data]
    if missing:
        problems.append(f"missing motors: {', '.join(missing)}")
    unknown = [name for name in data if name not in expected]
    if unknown:
        problems.append(f"unknown motors: {', '.join(map(str, unknown))} (expected {', '.join(expected)})")
    result: dict[str, MotorCalibration] = {}
    for name, motor_id in expected.items():
        entry = data.get(name)
        if entry is None:
            continue
        if not isinstance(entry, dict):
            problems.append(f"{name}: expected an object, got {entry!r}")
            continue
        fields: dict[str, int] = {}
        for key in ("id", "drive_mode", "homing_offset", "range_min", "range_max"):
            value = entry.get(key)
            if isinstance(value, bool) or not isinstance(value, int):
                problems.append(f"{name}.{key}: expected an integer, got {value!r}")
            else:
                fields[key] = value
        if len(fields) < 5:
            continue
        cal = MotorCalibration(**fields)
        if cal.id != motor_id:
            problems.append(f"{name}.id is {cal.id}, the bridge expects motor id {motor_id}")
        if cal.drive_mode not in (0, 1):
            problems.append(f"{name}.drive_mode is {cal.drive_mode}, expected 0 or 1")
        if not -2047 <= cal.homing_offset <= 2047:
            problems.append(f"{name}.homing_offset {cal.homing_offset} is outside -2047..2047")
        for key in ("range_min", "range_max"):
            value = getattr(cal, key)
            if not 0 <= value <= MAX_TICK:
                problems.append(f"{name}.{key} {value} is outside 0..{MAX_TICK}")
        if cal.range_min >= cal.range_max:
            problems.append(f"{name}: range_min {cal.range_min} >= range_max {cal.range_max}")
        result[name] = cal
    if problems:
        raise CalibrationError(
            f"Invalid {source}: " + "; ".join(problems) + f". Recalibrate with `{calibrate_command()}`."
        )
    return result


def load_calibration(
    path: str | os.PathLike[str], expected: Mapping[str, int] = SO101_MOTORS
) -> dict[str, MotorCalibration]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise CalibrationError(f"Cannot read calibration file {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CalibrationError(f"Calibration file {path} is not valid JSON: {exc}") from exc
    return parse_calibration(data, expected, source=f"calibration file {path}")


def save_calibration(path: str | os.PathLike[str], calibration: Mapping[str, MotorCalibration]) -> None:
    """Write in LeRobot's layout (draccus dumps with indent=4)."""
    Path(path).write_text(json.dumps({k: asdict(v) for k, v in calibration.items()}, indent=4) + "\n")


def compare_with_servos(
    calibration: Mapping[str, MotorCalibration], servo_memory: Mapping[str, MotorCalibration]
) -> list[str]:
    """Differences between the file and the servos' Homing_Offset / Min / Max_Position_Limit,
    as LeRobot's ``FeetechMotorsBus.is_calibrated`` checks them. Empty list = consistent."""
    diffs = []
    for name, cal in calibration.items():
        mem = servo_memory.get(name)
        if mem is None:
            diffs.append(f"{name}: not read from the servo")
            continue
        for key in ("homing_offset", "range_min", "range_max"):
            a, b = getattr(cal, key), getattr(mem, key)
            if a != b:
                diffs.append(f"{name}.{key}: file {a}, servo {b}")
    return diffs


def mismatch_message(diffs: list[str], path: Path | str, port: str, robot_id: str) -> str:
    return (
        f"Calibration file {path} does not match the servo memory on {port}: " + "; ".join(diffs) + ". "
        "Refusing to move. Either the file belongs to another arm (check robot_id / calibration_file), "
        "or the arm was recalibrated since. Fix: run "
        f"`{calibrate_command(port, robot_id)}` (press ENTER to write this file to the motors if it is the "
        "right one, or 'c' to recalibrate), or restart the bridge with "
        "write_calibration_to_motors:=true to write the file to the motors."
    )
