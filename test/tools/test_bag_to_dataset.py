"""`gemma3nvla-ros bag-to-dataset` on synthetic bags written with rosbags (no ROS): known poses come out
in the dataset units of control/units.py, episodes split where streams pause, the task comes from the
recording or the option, and what cannot be converted is refused with what to do."""
from __future__ import annotations

import math

import numpy as np
import pytest

from gemma3nvla_ros.contract import Contract, default_contract_path
from gemma3nvla_ros.control import units
from gemma3nvla_ros.hardware.calibration import EXAMPLE_CALIBRATION
from gemma3nvla_ros.tools import bag_to_dataset

from helpers_bridge import EXAMPLE_FILE
from helpers_record import SyntheticBag

FPS = 30


def _convert(bags, out, *extra) -> int:
    return bag_to_dataset.main([*map(str, bags), "-o", str(out), "--calibration-file", EXAMPLE_FILE, *extra])


def _load(root):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset(f"local/{root.name}", root=root, video_backend="pyav")


def _units(mode="degrees"):
    contract = Contract.load(default_contract_path())
    return units.DatasetUnits(units.JointRanges.from_calibration(EXAMPLE_CALIBRATION, contract.joints), mode)


def test_known_poses_come_out_in_dataset_units(tmp_path):
    sb = SyntheticBag(duration_s=3.0)
    bag = sb.write(tmp_path / "bag")
    assert _convert([bag], tmp_path / "ds", "--no-video") == 0
    ds = _load(tmp_path / "ds")
    assert ds.fps == FPS and ds.meta.total_episodes == 1 and ds.meta.robot_type == "so101_follower"
    assert ds.meta.features["observation.state"]["names"][0] == "shoulder_pan.pos"
    assert ds.meta.features["observation.images.top"]["dtype"] == "image"
    n = len(ds)
    assert n == 3 * FPS - 1  # from the last camera's first frame to the last command, every 1/30 s
    conv = _units()
    for i in (0, 15, 29, 30, 31, 59, 60, n - 1):
        frame = ds[i]
        t = i / FPS + 1e-6  # the grid starts 1 us after the first stamps (the second camera's offset)
        np.testing.assert_allclose(frame["observation.state"].numpy(), conv.ros_to_dataset(sb.pose(t)), atol=1e-4)
        cmd_t = math.floor(t * sb.command_hz) / sb.command_hz  # the last command at or before the frame
        np.testing.assert_allclose(frame["action"].numpy(), conv.ros_to_dataset(sb.command(cmd_t)), atol=1e-4)
        assert frame["task"] == "pick up the cube"
        for c, key in enumerate(("observation.images.wrist", "observation.images.top")):
            img = (frame[key].numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)
            np.testing.assert_array_equal(img, sb.image(c, i))  # nearest previous frame, RGB order kept
    # By hand for one pose: 0.3 rad on the elbow is 17.19 degrees; the gripper at +0.2 rad from the middle
    # of its 2020..3410 range is (1390 / 2 + 0.2 * 4095 / 2 pi) / 1390 * 100 = 59.38.
    state0 = ds[0]["observation.state"].numpy()
    assert state0[2] == pytest.approx(math.degrees(0.3), abs=1e-4)
    assert state0[5] == pytest.approx((695 + 0.2 * 4095 / (2 * math.pi)) / 1390 * 100, abs=1e-4)


def test_range_units_compressed_cameras_and_task_option(tmp_path):
    sb = SyntheticBag(duration_s=2.0, compressed=True, task=None)
    bag = sb.write(tmp_path / "bag")
    assert _convert([bag], tmp_path / "ds", "--no-video", "--units", "range_m100_100", "--task", "wave") == 0
    ds = _load(tmp_path / "ds")
    frame = ds[40]
    np.testing.assert_allclose(frame["observation.state"].numpy(),
                               _units("range_m100_100").ros_to_dataset(sb.pose(40 / FPS + 1e-6)), atol=1e-4)
    assert frame["task"] == "wave"
    img = (frame["observation.images.wrist"].numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(img, sb.image(0, 40))


def test_episodes_split_at_pauses_and_by_duration_and_per_bag(tmp_path):
    paused = SyntheticBag(duration_s=5.0, pauses=[(2.0, 3.0)]).write(tmp_path / "paused")
    plain = SyntheticBag(duration_s=2.5).write(tmp_path / "plain")
    assert _convert([paused, plain], tmp_path / "ds", "--no-video", "--episode-gap", "0.5") == 0
    ds = _load(tmp_path / "ds")
    lengths = [ep["length"] for ep in ds.meta.episodes]
    assert len(lengths) == 3 and lengths[0] == 2 * FPS - 1  # before the pause
    assert abs(lengths[1] - 2 * FPS) <= 1 and abs(lengths[2] - 2.5 * FPS) <= 1
    assert _convert([plain], tmp_path / "cut", "--no-video", "--episode-duration", "1.0", "--min-episode", "0.4") == 0
    assert [ep["length"] for ep in _load(tmp_path / "cut").meta.episodes] == [31, 31, 14]


@pytest.mark.parametrize(
    "make, args, needle",
    [
        (dict(task=None), (), "--task"),
        (dict(cameras={"observation.images.top": "/cameras/top/image_raw"}), (), "--skip-camera observation.images.wrist"),
        (dict(), ("--action-topic", "/nope"), "no joint commands on /nope"),
        (dict(), ("--min-episode", "10"), "no episode found"),
    ],
)
def test_refusals_say_what_to_do(tmp_path, capsys, make, args, needle):
    bag = SyntheticBag(duration_s=1.5, **make).write(tmp_path / "bag")
    assert _convert([bag], tmp_path / "ds", "--no-video", *args) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_calibration_and_existing_output_are_required(tmp_path, capsys):
    bag = SyntheticBag(duration_s=1.5).write(tmp_path / "bag")
    assert bag_to_dataset.main([str(bag), "-o", str(tmp_path / "ds")]) == 2
    assert "--robot-id" in capsys.readouterr().err
    (tmp_path / "exists").mkdir()
    assert _convert([bag], tmp_path / "exists") == 2
    assert "exists already" in capsys.readouterr().err
    # A camera left out on purpose is fine.
    bag2 = SyntheticBag(duration_s=1.5, cameras={"observation.images.top": "/cameras/top/image_raw"}).write(tmp_path / "b2")
    assert _convert([bag2], tmp_path / "ds2", "--no-video", "--skip-camera", "wrist") == 0
    assert list(_load(tmp_path / "ds2").meta.camera_keys) == ["observation.images.top"]
