"""``lerobot-rollout`` (LeRobot >= 0.6), as a user runs it, deploys a gemma3nvla checkpoint, sync and rtc.

Everything below the policy is LeRobot's own code on simulated hardware:

* Robot: LeRobot's ``so101_follower`` (its feetech bus code, feetech-servo-sdk) on our byte-level servo
  simulator's pty (:class:`PtySimBus`, in this process, so the test reads the goals LeRobot wrote), with a
  calibration file in ``$HF_LEROBOT_CALIBRATION`` that matches servo memory (no prompt).
* Cameras: LeRobot's ``opencv`` camera type, ``index_or_path`` = a named pipe into which the test streams
  YUV4MPEG2 video (OpenCV decodes it with FFmpeg, as it would a file). Not a plain video file: LeRobot's
  OpenCV reader reads a file as fast as it decodes, with no pacing, and its read thread dies at the end of
  the file (then ``read_latest`` fails after 0.5 s), so a file cannot serve a rollout of several seconds;
  a pipe is paced by its writer, like a live camera. LeRobot 0.6.1's robots also require each camera's
  width, height and fps, which its OpenCV camera then ``set()``s on the capture and fails when that is
  refused, as it always is for a non-device: the test's ``sitecustomize`` checks them against the stream
  instead (the one change to LeRobot's behaviour, made from outside; frames are still size-checked).
* Policy: an untrained tiny gemma3nvla checkpoint (``ensure_demo_checkpoint``: the contract's state, action
  and two cameras at the streamed size; tiny local backbone, nothing downloaded), loaded by LeRobot through
  the ``lerobot_policy_gemma3nvla`` plugin.

What the policy did is observed from outside LeRobot: a ``sitecustomize`` on the subprocess' path wraps
``Gemma3nVLAPolicy.predict_action_chunk`` and appends each call (its RTC arguments and the chunk it returned)
to a file. The assertions are what a user relies on: exit code 0, no error in the output, the policy ran
several times (guided by the previous chunk's leftover with ``rtc``), and every goal the servos received is
one of the policy's actions, unnormalized by the checkpoint's postprocessor (LeRobot's), in ticks.
"""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from gemma3nvla_ros import compat
from gemma3nvla_ros.hardware.calibration import EXAMPLE_CALIBRATION, SO101_MOTORS
from gemma3nvla_ros.hardware.sim_bus import PtySimBus
from gemma3nvla_ros.hardware.sim_servo import make_so101_bus

pytestmark = pytest.mark.skipif(
    not compat.LEROBOT_06,
    reason=f"lerobot-rollout appeared in LeRobot 0.6 (found {compat.LEROBOT_VERSION}): run it in the Python 3.12 venv",
)

REPO = Path(__file__).resolve().parents[2]
ROBOT_ID = "sim_follower"
FPS = 10  # control rate: a 2-core CI machine runs the loop, two camera readers and the model
FRAME_H, FRAME_W = 48, 64  # streamed camera frames; the checkpoint's image features
CAMERAS = ("wrist", "top")  # the contract's observation.images.<name>
TASK = "pick up the cube"

SITECUSTOMIZE = '''
import functools, json, os, time
from pathlib import Path

import cv2
from lerobot.cameras.opencv.camera_opencv import OpenCVCamera

from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

# The spy: every predict_action_chunk call, appended to a file.
_original = Gemma3nVLAPolicy.predict_action_chunk
_path = os.environ["GEMMA3NVLA_TEST_SPY"]

@functools.wraps(_original)
def predict_action_chunk(self, batch, *args, **kwargs):
    out = _original(self, batch, *args, **kwargs)
    leftover = kwargs.get("prev_chunk_left_over")
    record = {"t": time.monotonic(), "inference_delay": kwargs.get("inference_delay"),
              "leftover": None if leftover is None else leftover.float().cpu().tolist(),
              "actions": out[0].float().cpu().tolist()}
    with open(_path, "a") as f:
        f.write(json.dumps(record) + "\\n")
    return out

Gemma3nVLAPolicy.predict_action_chunk = predict_action_chunk

# LeRobot 0.6.1's robots require a camera's width, height and fps, and its OpenCV camera then set()s them
# on the capture and fails when set() returns False, which it always does for a stream that is not a
# device (every file backend). For such a stream (our pipe) the size and rate are checked instead of set:
# the frames must still be what the config says (LeRobot also checks every frame's size).
_device_fps = OpenCVCamera._validate_fps
_device_size = OpenCVCamera._validate_width_and_height

def _is_stream(camera):
    return isinstance(camera.index_or_path, (str, Path)) and not str(camera.index_or_path).startswith("/dev/")

def _validate_fps(self):
    if not _is_stream(self):
        return _device_fps(self)
    actual = self.videocapture.get(cv2.CAP_PROP_FPS)
    if abs(actual - self.fps) > 1e-3 * self.fps:
        raise RuntimeError(f"{self}: the stream runs at {actual} fps, not {self.fps}")

def _validate_width_and_height(self):
    if not _is_stream(self):
        return _device_size(self)
    actual = (round(self.videocapture.get(cv2.CAP_PROP_FRAME_WIDTH)),
              round(self.videocapture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    if actual != (self.capture_width, self.capture_height):
        raise RuntimeError(f"{self}: the stream is {actual}, not {(self.capture_width, self.capture_height)}")

OpenCVCamera._validate_fps = _validate_fps
OpenCVCamera._validate_width_and_height = _validate_width_and_height
'''


class Y4MPipeCamera:
    """Streams a moving test pattern as YUV4MPEG2 video into a named pipe at ``fps``, from a thread, to
    whoever opens the pipe for reading (LeRobot's OpenCV camera); stops when the reader goes away."""

    def __init__(self, path: Path, fps: float, height: int, width: int, seed: int) -> None:
        os.mkfifo(path)
        self.path, self.fps, self.height, self.width = path, fps, height, width
        self.frames_written = 0
        self._rng = np.random.default_rng(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"y4m-{path.name}", daemon=True)
        self._thread.start()

    def _frame(self, i: int) -> bytes:
        import cv2

        bgr = np.empty((self.height, self.width, 3), np.uint8)
        bgr[:] = self._rng.integers(0, 255, 3, dtype=np.uint8)
        bgr[:, (i * 3) % self.width] = 255  # a moving bar: the stream is live, not one still frame
        return b"FRAME\n" + cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420).tobytes()

    def _run(self) -> None:
        fd = -1
        while fd < 0 and not self._stop.is_set():
            try:  # non-blocking: no reader yet is ENXIO, and the thread stays stoppable
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
                time.sleep(0.02)
        if fd < 0:
            return
        os.set_blocking(fd, True)
        try:
            os.write(fd, f"YUV4MPEG2 W{self.width} H{self.height} F{int(self.fps)}:1 Ip A1:1 C420jpeg\n".encode())
            start = time.monotonic()
            while not self._stop.is_set():
                os.write(fd, self._frame(self.frames_written))
                self.frames_written += 1
                time.sleep(max(0.0, start + self.frames_written / self.fps - time.monotonic()))
        except BrokenPipeError:
            pass  # the camera disconnected
        finally:
            os.close(fd)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from gemma3nvla_ros.contract import Contract, default_contract_path
    from gemma3nvla_ros.policy.demo_checkpoint import ensure_demo_checkpoint

    contract = Contract.load(default_contract_path())
    assert set(contract.cameras) == {f"observation.images.{name}" for name in CAMERAS}
    return ensure_demo_checkpoint(tmp_path_factory.mktemp("ckpt"), contract, image_size=32,
                                  camera_shape=(FRAME_H, FRAME_W))


def _rollout_command(checkpoint: Path, cameras: dict[str, Path], *extra: str) -> list[str]:
    exe = Path(sys.executable).parent / "lerobot-rollout"  # this environment's LeRobot, not PATH's
    if not exe.exists():
        pytest.fail(f"lerobot-rollout not found next to the interpreter ({exe})")
    cams = ", ".join(f"{name}: {{type: opencv, index_or_path: {path}, width: {FRAME_W}, height: {FRAME_H}, fps: {FPS}}}"
                     for name, path in cameras.items())
    return [
        str(exe), "--strategy.type=base", f"--policy.path={checkpoint}",
        "--robot.type=so101_follower", "--robot.port={port}", f"--robot.id={ROBOT_ID}",
        f"--robot.cameras={{{cams}}}", f"--task={TASK}", f"--fps={FPS}", "--play_sounds=false",
        "--return_to_initial_position=false", *extra,
    ]


@dataclass
class Rollout:
    proc: subprocess.CompletedProcess
    calls: list[dict]  # the policy's predict_action_chunk calls, in order (SITECUSTOMIZE's records)
    goals: dict[int, list[tuple[float, int]]]  # motor id -> (time, goal ticks) as the servos received them
    frames_streamed: list[int]  # per camera


def _run_rollout(tmp_path: Path, checkpoint: Path, *extra: str, timeout_s: float = 240.0) -> Rollout:
    """Runs lerobot-rollout against a fresh simulated arm and two streamed cameras."""
    calibration = tmp_path / "calibration" / "robots" / "so_follower" / f"{ROBOT_ID}.json"
    calibration.parent.mkdir(parents=True)
    calibration.write_text(json.dumps(EXAMPLE_CALIBRATION))  # what servo memory holds: nothing to calibrate
    spy_dir = tmp_path / "spy"
    spy_dir.mkdir()
    (spy_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
    calls_file = tmp_path / "calls.jsonl"
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", HF_LEROBOT_HOME=str(tmp_path / "lerobot_home"),
        HF_LEROBOT_CALIBRATION=str(tmp_path / "calibration"), GEMMA3NVLA_TEST_SPY=str(calls_file),
        PYTHONPATH=os.pathsep.join([str(spy_dir), str(REPO), os.environ.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS="1",  # one torch thread: faster than two on a loaded 2-core machine
    )
    cameras = {name: tmp_path / f"{name}.y4m" for name in CAMERAS}
    streams = [Y4MPipeCamera(path, FPS, FRAME_H, FRAME_W, seed=i) for i, path in enumerate(cameras.values())]
    try:
        with PtySimBus(make_so101_bus(calibration=EXAMPLE_CALIBRATION)) as sim:
            cmd = [a.replace("{port}", sim.port) for a in _rollout_command(checkpoint, cameras, *extra)]
            proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=timeout_s)
            goals = {sid: list(sim.bus.servo(sid).goal_history) for sid in SO101_MOTORS.values()}
    finally:
        for stream in streams:
            stream.stop()
    calls = [json.loads(line) for line in calls_file.read_text().splitlines()] if calls_file.exists() else []
    return Rollout(proc, calls, goals, [s.frames_written for s in streams])


def _check_ran_cleanly(run: Rollout) -> str:
    proc = run.proc
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"lerobot-rollout exited with {proc.returncode}:\n{output[-6000:]}"
    bad = [line for line in output.splitlines()
           if line.startswith(("ERROR", "CRITICAL")) or "Traceback" in line or "Exception" in line]
    assert not bad, "errors in lerobot-rollout's output:\n" + "\n".join(bad[:20])
    assert "Rollout finished" in output, output[-3000:]
    assert min(run.frames_streamed) > FPS, f"the cameras were hardly read: {run.frames_streamed} frames"
    return output


def _goal_vectors(goals: dict[int, list[tuple[float, int]]]) -> np.ndarray:
    """[n, 6] goal ticks in joint order, one row per sync write (LeRobot writes all six every tick)."""
    per_motor = [[g for _, g in goals[SO101_MOTORS[name]]] for name in SO101_MOTORS]
    n = {len(history) for history in per_motor}
    assert len(n) == 1, f"motors received different numbers of goals: {n}"
    return np.array(per_motor, dtype=np.int64).T.reshape(-1, len(SO101_MOTORS))


def _expected_ticks(checkpoint: Path, calls: list[dict]) -> np.ndarray:
    """Every action the policy returned, through the checkpoint's own postprocessor (LeRobot's unnormalizer),
    then to goal ticks with the arm's calibration as LeRobot's bus does: [n, 6] float ticks."""
    import torch
    from lerobot.processor import PolicyProcessorPipeline
    from lerobot.processor.converters import policy_action_to_transition, transition_to_policy_action

    from gemma3nvla_ros.contract import Contract, default_contract_path

    post = PolicyProcessorPipeline.from_pretrained(
        checkpoint, config_filename="policy_postprocessor.json",
        to_transition=policy_action_to_transition, to_output=transition_to_policy_action,
    )
    actions = np.concatenate([post(torch.tensor(c["actions"])).numpy() for c in calls])
    contract = Contract.load(default_contract_path())
    assert list(SO101_MOTORS) == list(contract.joints)
    return contract.dataset_units(EXAMPLE_CALIBRATION).dataset_to_ticks(actions)


def _rest_pose_ticks() -> np.ndarray:
    return np.array([(EXAMPLE_CALIBRATION[name]["range_min"] + EXAMPLE_CALIBRATION[name]["range_max"]) / 2
                     for name in SO101_MOTORS])


def _check_goals_came_from_the_policy(checkpoint: Path, calls: list[dict], goals) -> tuple[np.ndarray, np.ndarray]:
    """Every goal the servos received is one of the policy's actions (within the one tick LeRobot's int()
    truncation takes); returns (written goals, the policy's actions in ticks)."""
    written = _goal_vectors(goals)
    assert len(written) >= 2 * FPS, f"only {len(written)} goals reached the servos"
    expected = _expected_ticks(checkpoint, calls)
    distance = np.abs(written[:, None, :] - expected[None, :, :]).max(axis=-1)  # [written, expected]
    nearest = distance.min(axis=1)
    assert (nearest <= 1.0 + 1e-6).all(), (
        f"{int((nearest > 1.0 + 1e-6).sum())} of {len(written)} goals are none of the policy's actions "
        f"(nearest off by up to {nearest.max():.1f} ticks)"
    )
    assert np.abs(written - _rest_pose_ticks()).max() > 20, "the arm never left its rest pose"
    return written, expected


def test_lerobot_rollout_sync_drives_the_so101_with_gemma3nvla(tmp_path, checkpoint):
    # n_action_steps (a --policy.* override on the saved config, as a user would pass it): a new chunk
    # every 10 ticks, so a short run still runs the policy several times.
    steps = 10
    run = _run_rollout(tmp_path, checkpoint, "--inference.type=sync", "--duration=5",
                       f"--policy.n_action_steps={steps}")
    _check_ran_cleanly(run)
    calls = run.calls
    assert len(calls) >= 3, f"the policy ran {len(calls)} times"
    assert all(c["leftover"] is None for c in calls)
    written, expected = _check_goals_came_from_the_policy(checkpoint, calls, run.goals)
    # select_action plays each chunk's first n_action_steps in order, one per tick: goal k is step k % 10
    # of chunk k // 10.
    chunk = len(calls[0]["actions"])
    k = np.arange(len(written))
    assert k[-1] // steps < len(calls)
    in_order = expected[(k // steps) * chunk + k % steps]
    assert np.abs(written - in_order).max() <= 1.0 + 1e-6


def test_lerobot_rollout_rtc_drives_the_so101_with_gemma3nvla(tmp_path, checkpoint):
    horizon = 10
    run = _run_rollout(
        tmp_path, checkpoint, "--inference.type=rtc", "--duration=6",
        # A new chunk once 10 of its 50 actions have run (LeRobot's default, 30, waits 20 ticks: 2 s here).
        "--inference.queue_threshold=40",
        f"--inference.rtc.execution_horizon={horizon}", "--inference.rtc.max_guidance_weight=10.0",
        "--inference.rtc.prefix_attention_schedule=LINEAR",
    )
    output = _check_ran_cleanly(run)
    calls = run.calls
    assert "RTC inference thread started" in output
    assert len(calls) >= 3, f"the policy ran {len(calls)} times"
    # After the first chunk, each one gets the previous chunk's unexecuted actions (LeRobot cuts or pads
    # them to the execution horizon) and the inference delay in ticks.
    assert calls[0]["leftover"] is None
    guided = calls[1:]
    assert all(c["leftover"] is not None for c in guided)
    assert all(isinstance(c["inference_delay"], int) and c["inference_delay"] >= 0 for c in guided)
    assert any(c["inference_delay"] > 0 for c in guided)
    for c in guided:
        new, leftover, delay = np.array(c["actions"]), np.array(c["leftover"]), c["inference_delay"]
        assert leftover.shape == (horizon, len(SO101_MOTORS))
        # The guidance took hold (normalized units; independent chunks of this model differ by ~1 per value):
        # the steps executed while the chunk was computed are the leftover's, the horizon follows it,
        # the chunk's unguided tail does not.
        assert np.abs(new[:delay] - leftover[:delay]).max(initial=0.0) < 0.05
        near = np.abs(new[:horizon] - leftover).mean()
        far = np.abs(new[horizon:2 * horizon] - leftover).mean()
        assert near < far / 3, (near, far)
    _check_goals_came_from_the_policy(checkpoint, calls, run.goals)
