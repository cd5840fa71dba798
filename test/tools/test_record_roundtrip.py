"""Demonstrations end to end, on the running stack: `gemma3nvla-ros launch so101_teleop mode:=sim` (the
simulated leader moves by itself and drives the simulated follower through so101_bridge; two synthetic
cameras), `gemma3nvla-ros bag record` for a few seconds, the bag read back with rosbags,
`gemma3nvla-ros bag-to-dataset` into a LeRobotDataset with video features, loaded with LeRobotDataset,
and `lerobot-train --policy.type=gemma3nvla` for a few steps on it (tiny local backbone, CPU)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from gemma3nvla_ros.control import units
from gemma3nvla_ros.hardware.calibration import EXAMPLE_CALIBRATION

from helpers_bridge import EXAMPLE_FILE

REPO = Path(__file__).resolve().parents[2]
TOPICS = ["/joint_states", "/joint_commands", "/cameras/wrist/image_raw", "/cameras/top/image_raw", "/so101_leader/task"]
TASK = "pick up the cube"
RECORD_S = 5.0
W, H = 128, 96


class Proc:
    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True).start()

    def wait_for(self, pattern: str, n: int = 1, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if sum(bool(re.search(pattern, line)) for line in self.lines) >= n:
                return True
            time.sleep(0.1)
        return sum(bool(re.search(pattern, line)) for line in self.lines) >= n

    def stop(self, timeout: float = 40.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __str__(self) -> str:
        return "".join(self.lines[-80:])


def _worktree_entry_points(directory: Path) -> Path:
    """This checkout's console scripts (setup.py) as an installed distribution's metadata, first on the
    path, so the launcher finds executables added since the environment was installed (so101_leader)."""
    scripts = re.findall(r'"([\w-]+ = gemma3nvla_ros[\w.]*:\w+)"', (REPO / "setup.py").read_text())
    info = directory / "gemma3nvla_ros-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gemma3nvla_ros\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[console_scripts]\n" + "\n".join(scripts) + "\n")
    return directory


@pytest.fixture(scope="module")
def recorded_bag(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("record")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(_worktree_entry_points(tmp / "entry")), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    launch = Proc([sys.executable, "-m", "gemma3nvla_ros.cli", "launch", "so101_teleop", "mode:=sim",
                   f"width:={W}", f"height:={H}", f"task:={TASK}"], env)
    recorder = None
    try:
        assert launch.wait_for(r"publishing joint_commands at 30 Hz", timeout=90), str(launch)
        assert launch.wait_for(r"SO-101 on .*torque on", timeout=60), str(launch)
        assert launch.wait_for(r"synthetic ->", n=2, timeout=60), str(launch)
        bag = tmp / "bag"
        recorder = Proc([sys.executable, "-m", "gemma3nvla_ros.cli", "bag", "record", *TOPICS, "-o", str(bag)], env)
        assert recorder.wait_for(r"subscribed to", n=len(TOPICS), timeout=60), str(recorder)
        time.sleep(RECORD_S)
        assert recorder.stop() == 0, str(recorder)
        assert launch.proc.poll() is None, str(launch)
    finally:
        if recorder is not None:
            recorder.stop()
        code = launch.stop()
    assert code == 0, str(launch)
    assert "first joint command accepted" in str(launch) or any("first joint command" in l for l in launch.lines)
    return bag


def _read(bag: Path) -> dict[str, list]:
    from rosbags.highlevel import AnyReader

    out: dict[str, list] = {t: [] for t in TOPICS}
    with AnyReader([bag]) as reader:
        for conn, stamp, raw in reader.messages():
            out[conn.topic].append((stamp, reader.deserialize(raw, conn.msgtype)))
    return out


def _t(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def test_bag_from_the_running_stack_reads_back(recorded_bag):
    msgs = _read(recorded_bag)
    counts = {t: len(v) for t, v in msgs.items()}
    assert counts["/joint_states"] >= 60 * RECORD_S, counts  # the bridge publishes at 100 Hz
    assert counts["/joint_commands"] >= 20 * RECORD_S, counts  # the leader at 30 Hz
    assert counts["/cameras/wrist/image_raw"] >= 20 * RECORD_S and counts["/cameras/top/image_raw"] >= 20 * RECORD_S, counts
    assert [m.data for _, m in msgs["/so101_leader/task"]] == [TASK]
    img = msgs["/cameras/top/image_raw"][-1][1]
    assert (img.width, img.height, img.encoding, len(img.data)) == (W, H, "rgb8", W * H * 3)
    # Teleoperation worked: the follower's joint states track the leader's commands.
    cmd_t = np.array([_t(m) for _, m in msgs["/joint_commands"]])
    cmd = np.array([m.position for _, m in msgs["/joint_commands"]])
    state_t = np.array([_t(m) for _, m in msgs["/joint_states"]])
    state = np.array([m.position for _, m in msgs["/joint_states"]])
    assert (np.ptp(cmd, axis=0) > 0.02).all(), "the simulated leader moves every joint"
    assert (np.ptp(state, axis=0) > 0.01).all(), "and the follower moves with it"
    late = state_t > state_t[0] + 1.0
    idx = np.searchsorted(cmd_t, state_t[late] - 0.15)  # the follower lags by a few cycles
    err = np.abs(state[late] - cmd[np.clip(idx, 0, len(cmd) - 1)])
    assert np.median(err) < 0.05, np.median(err, axis=0)


@pytest.fixture(scope="module")
def dataset_root(recorded_bag, tmp_path_factory):
    from gemma3nvla_ros.tools import bag_to_dataset

    root = tmp_path_factory.mktemp("converted") / "so101_teleop_sim"
    started = time.monotonic()
    assert bag_to_dataset.main([str(recorded_bag), "-o", str(root), "--calibration-file", EXAMPLE_FILE,
                                "--episode-gap", "0.5"]) == 0
    print(f"bag-to-dataset with video: {time.monotonic() - started:.1f} s")
    return root


def test_converted_dataset_loads_with_lerobot(recorded_bag, dataset_root):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("local/so101_teleop_sim", root=dataset_root, video_backend="pyav")
    assert ds.fps == 30 and ds.meta.total_episodes >= 1
    assert set(ds.meta.video_keys) == {"observation.images.wrist", "observation.images.top"}
    assert ds.meta.features["observation.images.top"]["shape"] == [H, W, 3] or tuple(
        ds.meta.features["observation.images.top"]["shape"]) == (H, W, 3)
    assert len(ds) >= 25 * (RECORD_S - 1)
    frame = ds[len(ds) // 2]
    assert frame["observation.state"].shape == (6,) and frame["action"].shape == (6,)
    assert frame["observation.images.top"].shape == (3, H, W)
    assert 0.0 <= float(frame["observation.images.top"].min()) and float(frame["observation.images.top"].max()) <= 1.0
    assert frame["task"] == TASK

    # Units: every frame's state is one of the recorded joint states, converted with control/units.py
    # (degrees, gripper 0..100, example calibration), taken in time order about every 1/30 s.
    conv = units.DatasetUnits(units.JointRanges.from_calibration(EXAMPLE_CALIBRATION, list(EXAMPLE_CALIBRATION)), "degrees")
    msgs = _read(recorded_bag)
    stamps = np.array([m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in msgs["/joint_states"]])
    expected_all = conv.ros_to_dataset(np.stack([np.array(m.position) for _, m in msgs["/joint_states"]]))
    states = np.stack([ds[i]["observation.state"].numpy() for i in range(len(ds))]).astype(np.float64)
    chosen, last = [], 0
    for i, state in enumerate(states):
        match = np.flatnonzero(np.abs(expected_all[last:] - state).max(axis=1) < 1e-3)
        assert match.size, f"frame {i}: state {state} is no recorded joint state in dataset units"
        last += int(match[0])
        chosen.append(stamps[last])
    spacing = np.diff(chosen) / 1e6
    assert 25.0 < spacing.mean() < 42.0, spacing
    assert ((states[:, 5] >= 0) & (states[:, 5] <= 100)).all()
    assert np.abs(states[:, :5]).max() < 60  # degrees, not radians or ticks


def test_lerobot_train_runs_on_the_converted_dataset(dataset_root, tmp_path):
    import importlib.metadata

    from gemma3nvla_ros.policy.local_backbone import tiny_config, write_backbone_dir

    from helpers_policy import lerobot_train_command

    try:
        importlib.metadata.distribution("lerobot_policy_gemma3nvla")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("install the plugin first: pip install -e plugins/lerobot_policy_gemma3nvla --no-deps")
    backbone = write_backbone_dir(tmp_path / "tiny_gemma3n", tiny_config())
    out = tmp_path / "train"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               WANDB_MODE="disabled", OMP_NUM_THREADS="2")
    cmd = [
        "--policy.type=gemma3nvla", f"--policy.vlm_model_name={backbone}",
        "--policy.load_vlm_weights=false", "--policy.resize_imgs_with_padding=[64,64]", "--policy.chunk_size=8",
        "--policy.n_action_steps=8", "--policy.num_vlm_layers=6", "--policy.num_expert_layers=3",
        "--policy.device=cpu", "--policy.push_to_hub=false", "--dataset.repo_id=local/so101_teleop_sim",
        f"--dataset.root={dataset_root}", "--dataset.video_backend=pyav", "--steps=2", "--batch_size=2",
        "--save_freq=2", "--log_freq=1", f"--output_dir={out}", "--wandb.enable=false", "--num_workers=0",
        "{eval_freq}=0", "--seed=1",
    ]
    proc = subprocess.run(lerobot_train_command(*cmd), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    log = proc.stdout + proc.stderr
    assert "step:2" in log and "loss:" in log
    ckpt = out / "checkpoints" / "last" / "pretrained_model"
    assert (ckpt / "model.safetensors").exists()
    import json

    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["input_features"]["observation.state"]["shape"] == [6]
    assert cfg["input_features"]["observation.images.top"]["shape"] == [3, H, W]
