from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gemma3nvla_ros.hardware import calibration as calib
from gemma3nvla_ros.hardware.calibration import (
    EXAMPLE_CALIBRATION,
    CalibrationError,
    MotorCalibration,
    compare_with_servos,
    load_calibration,
    parse_calibration,
    resolve_calibration_path,
)

REPO = Path(__file__).resolve().parents[2]


def test_example_file_matches_builtin_example():
    path = REPO / "config" / "calibration" / "so101_follower_example.json"
    assert json.loads(path.read_text()) == EXAMPLE_CALIBRATION
    cal = load_calibration(path)
    assert list(cal) == list(calib.SO101_MOTORS)


def test_loads_with_lerobot_own_loader(tmp_path):
    """The file round-trips through LeRobot's own (draccus) loader."""
    import draccus
    from lerobot.motors import MotorCalibration as LeRobotCal

    path = tmp_path / "arm.json"
    calib.save_calibration(path, parse_calibration(EXAMPLE_CALIBRATION))
    with open(path) as f:
        theirs = draccus.load(dict[str, LeRobotCal], f)
    assert {k: vars(v) for k, v in theirs.items()} == EXAMPLE_CALIBRATION


@pytest.mark.parametrize(
    "mutate,needle",
    [
        (lambda d: d.pop("gripper"), "missing motors: gripper"),
        (lambda d: d.update(extra={"id": 7}), "unknown motors: extra"),
        (lambda d: d["elbow_flex"].update(range_min=3100), "range_min 3100 >= range_max 3080"),
        (lambda d: d["elbow_flex"].update(range_max=5000), "range_max 5000 is outside 0..4095"),
        (lambda d: d["elbow_flex"].update(range_min=-1), "range_min -1 is outside"),
        (lambda d: d["wrist_flex"].update(id=9), "wrist_flex.id is 9"),
        (lambda d: d["wrist_flex"].update(homing_offset=3000), "homing_offset 3000"),
        (lambda d: d["wrist_flex"].update(drive_mode=2), "drive_mode is 2"),
        (lambda d: d["wrist_flex"].update(range_min="10"), "wrist_flex.range_min: expected an integer"),
        (lambda d: d["wrist_flex"].pop("range_max"), "wrist_flex.range_max: expected an integer"),
    ],
)
def test_validation_errors_say_what(mutate, needle):
    data = json.loads(json.dumps(EXAMPLE_CALIBRATION))
    mutate(data)
    with pytest.raises(CalibrationError) as exc:
        parse_calibration(data)
    assert needle in str(exc.value)
    assert "lerobot-calibrate --robot.type=so101_follower" in str(exc.value)


def test_not_json_and_not_object(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(CalibrationError, match="not valid JSON"):
        load_calibration(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(CalibrationError, match="expected a JSON object"):
        load_calibration(bad)


def test_default_locations_follow_lerobot_constants(tmp_path):
    """Same directory as lerobot.utils.constants computes, for several environments."""
    envs = [
        {"HF_HOME": str(tmp_path / "hf")},
        {"HF_LEROBOT_HOME": str(tmp_path / "lr")},
        {"HF_LEROBOT_CALIBRATION": str(tmp_path / "cal")},
        {"XDG_CACHE_HOME": str(tmp_path / "xdg")},
        {"HOME": str(tmp_path / "home")},
    ]
    for extra in envs:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "XDG_CACHE"))}
        env.update(extra)
        theirs = subprocess.run(
            [sys.executable, "-c", "from lerobot.utils.constants import HF_LEROBOT_CALIBRATION as c; print(c)"],
            env=env, capture_output=True, text=True, check=True,
        ).stdout.strip()
        home = extra.get("HOME")
        mine = calib.hf_lerobot_calibration_dir(env)
        if home:  # expanduser reads HOME from the process env; compare the unexpanded rule
            mine = Path(str(mine).replace(os.path.expanduser("~"), home, 1))
        assert str(mine) == theirs, extra


def test_resolve_prefers_new_dir_then_old(tmp_path):
    env = {"HF_LEROBOT_CALIBRATION": str(tmp_path)}
    with pytest.raises(CalibrationError) as exc:
        resolve_calibration_path("arm1", env=env)
    assert "so_follower/arm1.json" in str(exc.value) and "so101_follower/arm1.json" in str(exc.value)
    assert "--robot.id=arm1" in str(exc.value)
    old = tmp_path / "robots" / "so101_follower" / "arm1.json"
    old.parent.mkdir(parents=True)
    old.write_text("{}")
    assert resolve_calibration_path("arm1", env=env) == old
    new = tmp_path / "robots" / "so_follower" / "arm1.json"
    new.parent.mkdir(parents=True)
    new.write_text("{}")
    assert resolve_calibration_path("arm1", env=env) == new
    assert resolve_calibration_path("arm1", str(old), env=env) == old
    with pytest.raises(CalibrationError, match="does not exist"):
        resolve_calibration_path("arm1", str(tmp_path / "nope.json"), env=env)
    with pytest.raises(CalibrationError, match="set robot_id"):
        resolve_calibration_path("", env=env)


def test_compare_with_servos_lists_each_difference():
    cal = parse_calibration(EXAMPLE_CALIBRATION)
    mem = dict(cal)
    assert compare_with_servos(cal, mem) == []
    c = cal["gripper"]
    mem["gripper"] = MotorCalibration(c.id, 0, c.homing_offset + 5, c.range_min, c.range_max - 1)
    diffs = compare_with_servos(cal, mem)
    assert diffs == [
        f"gripper.homing_offset: file {c.homing_offset}, servo {c.homing_offset + 5}",
        f"gripper.range_max: file {c.range_max}, servo {c.range_max - 1}",
    ]
    msg = calib.mismatch_message(diffs, "/x.json", "/dev/ttyACM0", "arm1")
    assert "--robot.port=/dev/ttyACM0 --robot.id=arm1" in msg and "Refusing to move" in msg
