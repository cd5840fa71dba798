"""Camera sources with real OpenCV on video files the tests write, the synthetic source, and device
loss/recovery through ReconnectingSource."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from gemma3nvla_ros.hardware.camera_info import CameraInfoError, load_camera_info
from gemma3nvla_ros.hardware.cameras import (
    OpenCVSource,
    ReconnectingSource,
    SourceEnded,
    SourceError,
    SourceSpec,
    SyntheticSource,
    encode_jpeg,
    parse_source,
    to_encoding,
)


def write_video(path, n_frames=12, size=(160, 120), fps=30.0):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for i in range(n_frames):
        frame = np.full((size[1], size[0], 3), (i * 20) % 256, dtype=np.uint8)
        frame[:, :, 2] = 255 - frame[:, :, 0]  # red differs from blue: a swapped channel order shows
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture
def video(tmp_path):
    return write_video(tmp_path / "clip.avi")


def test_parse_source():
    assert parse_source("synthetic") == SourceSpec("synthetic", "")
    assert parse_source("0") == SourceSpec("device", 0)
    assert parse_source("/dev/video2") == SourceSpec("device", "/dev/video2")
    assert parse_source("device:/tmp/cam") == SourceSpec("device", "/tmp/cam")
    assert parse_source("file:/data/a.mp4") == SourceSpec("file", "/data/a.mp4")
    assert parse_source("file:///data/a.mp4") == SourceSpec("file", "/data/a.mp4")
    for bad in ("", "camera", "video.mp4"):
        with pytest.raises(ValueError):
            parse_source(bad)


def test_parse_source_takes_the_integer_ros_makes_of_source_0():
    assert parse_source(0) == SourceSpec("device", 0) == parse_source("0")
    assert parse_source(2) == SourceSpec("device", 2)
    for bad in (-1, True, 2.5, None):
        with pytest.raises(ValueError):
            parse_source(bad)
    assert not parse_source(0).paced and parse_source("synthetic").paced and parse_source("file:/a.mp4").paced


def test_synthetic_moves_and_has_requested_size():
    src = SyntheticSource(1280, 720, 30.0)
    src.open()
    a, b = src.read(), src.read()
    assert a.shape == (720, 1280, 3) and a.dtype == np.uint8 and a.flags["C_CONTIGUOUS"]
    assert not np.array_equal(a, b)
    assert not np.array_equal(a[8:, 300:], b[8:, 300:])  # the pattern itself moves, not only the counter


def test_file_source_reads_all_frames_then_loops(video):
    src = OpenCVSource(SourceSpec("file", str(video)), 160, 120, 30.0, loop=True)
    src.open()
    assert src.paced
    firsts = [int(src.read()[0, 0, 0]) for _ in range(13)]
    assert firsts[12] == pytest.approx(firsts[0], abs=3)  # frame 13 is frame 1 again
    assert len({round(v / 10) for v in firsts[:12]}) > 6  # distinct frames, in order
    src.close()


def test_file_source_without_loop_ends(video):
    src = OpenCVSource(SourceSpec("file", str(video)), 160, 120, 30.0, loop=False)
    src.open()
    for _ in range(12):
        src.read()
    with pytest.raises(SourceEnded):
        src.read()


def test_resize_when_source_size_differs_is_logged(video):
    logs = []
    src = OpenCVSource(SourceSpec("file", str(video)), 320, 240, 30.0, log=logs.append)
    src.open()
    assert src.read().shape == (240, 320, 3)
    assert logs and "delivers 160x120, not the requested 320x240" in logs[0]


def test_missing_file_cannot_open(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        OpenCVSource(SourceSpec("file", str(tmp_path / "none.avi")), 160, 120, 30.0).open()


def test_encodings_and_jpeg(video):
    src = OpenCVSource(SourceSpec("file", str(video)), 160, 120, 30.0)
    src.open()
    bgr = src.read()
    rgb = to_encoding(bgr, "rgb8")
    np.testing.assert_array_equal(rgb[..., 0], bgr[..., 2])
    assert to_encoding(bgr, "bgr8") is bgr
    with pytest.raises(ValueError):
        to_encoding(bgr, "mono8")
    decoded = cv2.imdecode(np.frombuffer(encode_jpeg(bgr), np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == bgr.shape


class ManualClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_device_loss_and_recovery_with_backoff(tmp_path):
    """A "device" path that stops delivering (end of stream), vanishes, and comes back."""
    path = write_video(tmp_path / "cam.avi", n_frames=3)
    clock, logs = ManualClock(), []
    src = ReconnectingSource(
        OpenCVSource(SourceSpec("device", str(path)), 160, 120, 30.0),
        initial_backoff_s=0.1, max_backoff_s=0.8, clock=clock, log=logs.append,
    )
    src.open()
    assert all(src.read() is not None for _ in range(3))
    path.unlink()
    assert src.read() is None and not src.connected and src.losses == 1
    assert "camera source lost" in logs[-1]
    backoffs = []
    for _ in range(5):
        clock.t = src.next_attempt
        assert src.read() is None  # device still gone
        backoffs.append(round(src.backoff_s, 3))
    assert backoffs == [0.2, 0.4, 0.8, 0.8, 0.8]  # exponential, capped
    assert src.seconds_until_retry() == pytest.approx(0.8)
    write_video(path, n_frames=3)
    clock.t = src.next_attempt - 0.01
    assert src.read() is None  # not yet time to retry
    clock.t = src.next_attempt
    assert src.read() is not None
    assert src.connected and src.reconnects == 1 and src.backoff_s == 0.1
    assert "reopened" in logs[-1]


def test_first_open_failure_propagates(tmp_path):
    src = ReconnectingSource(OpenCVSource(SourceSpec("device", str(tmp_path / "video9")), 160, 120, 30.0))
    with pytest.raises(SourceError, match="cannot open"):
        src.open()


def test_camera_info_yaml(tmp_path):
    good = tmp_path / "cam.yaml"
    good.write_text(
        "image_width: 640\nimage_height: 480\ncamera_name: front\n"
        "camera_matrix: {rows: 3, cols: 3, data: [500, 0, 320, 0, 500, 240, 0, 0, 1]}\n"
        "distortion_model: plumb_bob\n"
        "distortion_coefficients: {rows: 1, cols: 5, data: [0.1, -0.2, 0, 0, 0]}\n"
        "rectification_matrix: {rows: 3, cols: 3, data: [1, 0, 0, 0, 1, 0, 0, 0, 1]}\n"
        "projection_matrix: {rows: 3, cols: 4, data: [500, 0, 320, 0, 0, 500, 240, 0, 0, 0, 1, 0]}\n"
    )
    info = load_camera_info(f"file://{good}", 640, 480)
    assert info.k[0] == 500 and info.d[:2] == [0.1, -0.2] and info.calibrated
    with pytest.raises(CameraInfoError, match="is for 640x480"):
        load_camera_info(str(good), 1280, 720)
    with pytest.raises(CameraInfoError, match="cannot read"):
        load_camera_info(str(tmp_path / "nope.yaml"), 640, 480)
    with pytest.raises(CameraInfoError, match="only file://"):
        load_camera_info("package://x/cam.yaml", 640, 480)


def test_image_fill_matches_frame_layout():
    """Image fields as cv_bridge fills them; data as array('B') (rclpy's no-per-element-check path)."""
    import array
    from types import SimpleNamespace

    from gemma3nvla_ros.hardware.image_msgs import fill_image

    msg = SimpleNamespace(header=SimpleNamespace(stamp=None, frame_id=""))
    frame = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    fill_image(msg, frame[:, ::-1], "rgb8", "t", "cam")  # a non-contiguous view is copied correctly
    assert (msg.height, msg.width, msg.step, msg.encoding, msg.is_bigendian) == (4, 5, 15, "rgb8", 0)
    assert isinstance(msg.data, array.array) and msg.data.typecode == "B"
    assert bytes(msg.data) == np.ascontiguousarray(frame[:, ::-1]).tobytes()


class _RaisingSource:
    """A source whose read raises what OpenCV raises on a broken device (cv2.error), not SourceError."""

    paced, width, height, fps = False, 4, 4, 30.0

    def __init__(self):
        self.opens = 0
        self.fail = True

    def open(self):
        self.opens += 1

    def read(self):
        if self.fail:
            raise cv2.error("OpenCV(4.x) error: (-215:Assertion failed) !ssize.empty() in function 'resize'")
        return np.zeros((4, 4, 3), np.uint8)

    def close(self):
        pass


def test_unexpected_read_exception_is_a_loss_not_a_crash():
    """Anything a read raises (cv2.error from a half-unplugged device, a decoder error) is handled like
    a lost device: closed, reported, reopened with backoff. It must not escape and kill the capture thread."""
    clock, logs = ManualClock(), []
    inner = _RaisingSource()
    src = ReconnectingSource(inner, initial_backoff_s=0.1, clock=clock, log=logs.append)
    src.open()
    assert src.read() is None and not src.connected and src.losses == 1
    assert "resize" in src.last_error and "camera source lost" in logs[-1]
    inner.fail = False
    clock.t = src.next_attempt
    assert src.read() is not None and src.connected and src.reconnects == 1
