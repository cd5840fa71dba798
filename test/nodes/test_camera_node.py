"""camera_node as a real process over DDS: from a video file the test writes with cv2.VideoWriter, the
synthetic source, and a named pipe the test feeds MJPEG through (a device whose read blocks when it
stops sending). Parameters are set at run time through the node's own parameter services."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers_ros import spin_for, spin_until

CAMERA = "gemma3nvla_ros.nodes.camera_node"


def _write_video(path, n=30, size=(320, 240), fps=30.0):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for i in range(n):
        frame = np.zeros((size[1], size[0], 3), np.uint8)
        frame[..., 2] = 200  # red in BGR: rgb8 output must carry it in channel 0
        frame[:, (i * 8) % size[0] :, 1] = 120
        writer.write(frame)
    writer.release()
    return path


def test_publishes_images_from_file_at_about_fps(ros, listener, start_node, tmp_path):
    from rclpy.qos import qos_profile_sensor_data
    import sensor_msgs.msg

    video = _write_video(tmp_path / "clip.avi")
    images, infos, jpegs = [], [], []
    listener.create_subscription(sensor_msgs.msg.Image, "/cameras/wrist/image_raw", images.append, qos_profile_sensor_data)
    listener.create_subscription(sensor_msgs.msg.CameraInfo, "/cameras/wrist/camera_info", infos.append, qos_profile_sensor_data)
    listener.create_subscription(sensor_msgs.msg.CompressedImage, "/cameras/wrist/image_raw/compressed", jpegs.append, qos_profile_sensor_data)
    proc = start_node(
        CAMERA, "-r", "__node:=wrist", "-p", f"source:=file:{video}", "-p", "width:=320", "-p", "height:=240",
        "-p", "fps:=20.0", "-p", "publish_compressed:=true", name="camera",
    )
    assert spin_until(ros, listener, lambda: len(images) >= 40, 30.0), f"{len(images)} images\n{proc.output}"
    img = images[-1]
    assert (img.width, img.height, img.encoding, img.step) == (320, 240, "rgb8", 960)
    assert img.header.frame_id == "wrist_optical_frame"
    pixels = np.frombuffer(bytes(img.data), np.uint8).reshape(240, 320, 3)
    assert pixels[..., 0].mean() > 150 and pixels[..., 2].mean() < 50  # red arrived as R in rgb8
    stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in images]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))  # strictly increasing
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    assert 8.0 < rate < 30.0, rate  # configured 20 fps; a generous sanity bound, timings are in benchmarks
    assert infos and (infos[-1].width, infos[-1].height) == (320, 240)
    assert jpegs and jpegs[-1].format.startswith("rgb8; jpeg")
    assert cv2.imdecode(np.frombuffer(bytes(jpegs[-1].data), np.uint8), cv2.IMREAD_COLOR).shape == (240, 320, 3)


def test_synthetic_source_frames_differ(ros, listener, start_node):
    from rclpy.qos import qos_profile_sensor_data
    import sensor_msgs.msg

    images = []
    listener.create_subscription(sensor_msgs.msg.Image, "/cameras/front/image_raw", images.append, qos_profile_sensor_data)
    proc = start_node(CAMERA, "-p", "name:=front", "-p", "encoding:=bgr8", "-p", "width:=160", "-p", "height:=120", name="camera")
    assert spin_until(ros, listener, lambda: len(images) >= 3, 30.0), proc.output
    assert images[-1].encoding == "bgr8" and bytes(images[-1].data) != bytes(images[-2].data)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["-p", "source:=file:/nonexistent/clip.avi"], "cannot open camera source 'file:/nonexistent/clip.avi'"),
        (["-p", "source:=/dev/video_does_not_exist"], "cannot open camera source '/dev/video_does_not_exist'"),
        (["-p", "source:=webcam"], "camera source 'webcam' not understood"),
        (["-p", "encoding:=mono8"], "encoding must be one of"),
        (["-p", "source:=2.5"], "camera source must be a string or a device index, not float 2.5"),
        (["-p", "source:=-1"], "camera device index must be 0 or more"),
        (["-p", "jpeg_quality:=0"], "parameter jpeg_quality refused"),
        (["-p", "fps:=30"], "fps refused"),
        (["-p", "name:=cam-1"], "cannot be part of a topic name"),
    ],
)
def test_unusable_source_exits_nonzero_with_reason(start_node, args, needle):
    proc = start_node(CAMERA, *args, name="camera")
    assert proc.wait_exit() == 2
    assert needle in proc.output and "Traceback" not in proc.output


@pytest.mark.skipif(Path("/dev/video0").exists(), reason="this machine has a camera at index 0")
def test_device_index_zero_without_a_camera_exits_2_with_the_reason(start_node):
    """README: `-p source:=0`. ROS types the 0 as an integer; it is the device index, not a crash."""
    proc = start_node(CAMERA, "-p", "source:=0", name="camera")
    assert proc.wait_exit() == 2
    assert "cannot open camera source '0' (device index 0 is /dev/video0)" in proc.output
    assert "Traceback" not in proc.output


def test_device_loss_is_retried_and_reported(ros, listener, start_node, tmp_path):
    """A "device" whose stream ends (as an unplugged camera's does): the node reports it on
    /diagnostics, reopens it with backoff and keeps publishing — it does not exit."""
    import diagnostic_msgs.msg
    import sensor_msgs.msg
    from rclpy.qos import QoSProfile, qos_profile_sensor_data

    video = _write_video(tmp_path / "cam.avi", n=5)
    images, diags = [], []
    listener.create_subscription(sensor_msgs.msg.Image, "/cameras/usb/image_raw", images.append, qos_profile_sensor_data)
    listener.create_subscription(diagnostic_msgs.msg.DiagnosticArray, "/diagnostics", diags.append, QoSProfile(depth=50))
    proc = start_node(CAMERA, "-p", "name:=usb", "-p", f"source:=device:{video}", "-p", "width:=320", "-p", "height:=240", name="camera")

    def reconnects() -> int:
        for array in reversed(diags):
            for status in array.status:
                if status.name.endswith("camera usb"):
                    return int({kv.key: kv.value for kv in status.values}["reconnects"])
        return 0

    assert spin_until(ros, listener, lambda: reconnects() >= 2 and len(images) > 10, 30.0), proc.output
    assert "camera source lost" in proc.output
    assert proc.proc.poll() is None


class _BrokenCvBridge:
    """A cv_bridge that imported fine but fails on use (numpy-1 build under numpy 2, ABI mismatch)."""

    def cv2_to_imgmsg(self, *_args, **_kwargs):
        raise AttributeError("_ARRAY_API not found")


def test_cv_bridge_failing_at_conversion_falls_back_to_numpy(ros, listener):
    from gemma3nvla_ros.nodes.camera_node import CameraNode
    import sensor_msgs.msg
    from rclpy.parameter import Parameter
    from rclpy.qos import qos_profile_sensor_data

    name = f"cvb{listener.get_name()[-5:]}"
    got = []
    listener.create_subscription(sensor_msgs.msg.Image, f"/cameras/{name}/image_raw", got.append, qos_profile_sensor_data)
    node = CameraNode(parameter_overrides=[
        Parameter("name", value=name), Parameter("width", value=32), Parameter("height", value=24),
        Parameter("fps", value=1.0),
    ])
    try:
        node.start()
        node._cv_bridge = _BrokenCvBridge()
        frame = np.zeros((24, 32, 3), np.uint8)
        frame[..., 2] = 200  # red in BGR
        deadline_ok = spin_until(ros, listener, lambda: (node._publish(frame), bool(got))[1], 10.0)
        assert deadline_ok and node._cv_bridge is None
        msg = got[-1]
        assert (msg.encoding, msg.width, msg.height) == ("rgb8", 32, 24)
        assert bytes(msg.data[:3]) == b"\xc8\x00\x00"
    finally:
        node.close()
        node.destroy_node()


def _set_parameters(ros, node, target: str, **values) -> list:
    """SetParameters on ``/<target>/set_parameters``, as `ros2 param set` does: one result per value."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    client = node.create_client(SetParameters, f"/{target}/set_parameters")
    try:
        assert client.wait_for_service(timeout_sec=30.0), f"no /{target}/set_parameters"
        request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        future = client.call_async(request)
        assert spin_until(ros, node, future.done, 30.0)
        return list(future.result().results)
    finally:
        node.destroy_client(client)


def _subscribe(listener, msg_type, topic: str) -> list:
    from rclpy.qos import qos_profile_sensor_data

    got: list = []
    listener.create_subscription(msg_type, topic, got.append, qos_profile_sensor_data)
    return got


def test_compressed_output_and_jpeg_quality_change_at_run_time(ros, listener, start_node):
    import sensor_msgs.msg

    topic = "/cameras/dyn/image_raw/compressed"
    images = _subscribe(listener, sensor_msgs.msg.Image, "/cameras/dyn/image_raw")
    jpegs = _subscribe(listener, sensor_msgs.msg.CompressedImage, topic)
    proc = start_node(CAMERA, "-r", "__node:=dyn", "-p", "width:=320", "-p", "height:=240", "-p", "fps:=10.0",
                      "-p", "jpeg_quality:=95", name="camera")
    assert spin_until(ros, listener, lambda: len(images) >= 3, 30.0), proc.output
    assert not jpegs and listener.count_publishers(topic) == 0

    (result,) = _set_parameters(ros, listener, "dyn", publish_compressed=True)
    assert result.successful, result.reason
    assert spin_until(ros, listener, lambda: len(jpegs) >= 3, 20.0), proc.output
    fine = len(jpegs[-1].data)

    (result,) = _set_parameters(ros, listener, "dyn", jpeg_quality=10)
    assert result.successful, result.reason
    assert spin_until(ros, listener, lambda: len(jpegs[-1].data) < 0.5 * fine, 20.0), (fine, len(jpegs[-1].data))

    (result,) = _set_parameters(ros, listener, "dyn", publish_compressed=False)
    assert result.successful, result.reason
    assert spin_until(ros, listener, lambda: listener.count_publishers(topic) == 0, 20.0)
    spin_for(ros, listener, 0.5)  # frames already on the wire
    jpegs.clear()
    seen = len(images)
    spin_for(ros, listener, 1.5)
    assert not jpegs and len(images) > seen  # the raw stream goes on without the compressed one
    assert "publish_compressed set to False" in proc.output


def test_bad_and_read_only_parameter_sets_are_refused_with_the_reason(ros, listener, start_node):
    from rcl_interfaces.srv import DescribeParameters, GetParameters
    import sensor_msgs.msg

    images = _subscribe(listener, sensor_msgs.msg.Image, "/cameras/ro/image_raw")
    proc = start_node(CAMERA, "-r", "__node:=ro", "-p", "width:=64", "-p", "height:=48", "-p", "fps:=10.0", name="camera")
    assert spin_until(ros, listener, lambda: bool(images), 30.0), proc.output
    refused = {
        "jpeg_quality": (0, "out of range"),
        "fps": (0.0, "out of range"),
        "publish_compressed": ("yes", "Wrong parameter type"),
        "width": (320, "read-only"),
        "source": ("file:/tmp/other.mp4", "read-only"),
        "encoding": ("bgr8", "read-only"),
    }
    for name, (value, needle) in refused.items():
        (result,) = _set_parameters(ros, listener, "ro", **{name: value})
        assert not result.successful and needle in result.reason, (name, result.reason)

    get = listener.create_client(GetParameters, "/ro/get_parameters")
    describe = listener.create_client(DescribeParameters, "/ro/describe_parameters")
    names = ["jpeg_quality", "fps", "width", "source", "publish_compressed"]
    got = get.call_async(GetParameters.Request(names=names))
    described = describe.call_async(DescribeParameters.Request(names=names))
    assert spin_until(ros, listener, lambda: got.done() and described.done(), 30.0)
    values = got.result().values
    assert (values[0].integer_value, values[1].double_value, values[2].integer_value) == (90, 10.0, 64)
    by_name = {d.name: d for d in described.result().descriptors}
    assert all(d.description for d in by_name.values())
    assert by_name["width"].read_only and by_name["source"].read_only and by_name["source"].dynamic_typing
    assert not by_name["fps"].read_only and not by_name["jpeg_quality"].read_only  # synthetic: re-paced
    quality = by_name["jpeg_quality"].integer_range[0]
    assert (quality.from_value, quality.to_value) == (1, 100)


def test_fps_re_paces_a_synthetic_source_at_run_time(ros, listener, start_node):
    import sensor_msgs.msg

    images = _subscribe(listener, sensor_msgs.msg.Image, "/cameras/pace/image_raw")
    proc = start_node(CAMERA, "-r", "__node:=pace", "-p", "width:=64", "-p", "height:=48", "-p", "fps:=3.0", name="camera")
    assert spin_until(ros, listener, lambda: bool(images), 30.0), proc.output

    def rate_over(seconds: float) -> float:
        images.clear()
        spin_for(ros, listener, seconds)
        stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in images]
        return (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0

    slow = rate_over(2.5)
    (result,) = _set_parameters(ros, listener, "pace", fps=30.0)
    assert result.successful, result.reason
    spin_for(ros, listener, 0.5)
    fast = rate_over(2.5)
    assert slow < 5.0 and fast > 12.0, (slow, fast)  # configured 3 then 30: generous bounds, not a timing test


def test_fps_of_a_device_is_read_only(ros):
    """A device's fps is requested when it opens; a set must be refused, not accepted and ignored."""
    from gemma3nvla_ros.nodes.camera_node import CameraNode
    from rclpy.parameter import Parameter

    for source, read_only in (("device:/dev/none", True), (0, True), ("synthetic", False)):
        node = CameraNode(parameter_overrides=[Parameter("source", value=source)])
        try:
            assert node.describe_parameter("fps").read_only is read_only
            (result,) = node.set_parameters([Parameter("fps", value=10.0)])
            assert result.successful is not read_only, (source, result.reason)
            assert node.fps == (30.0 if read_only else 10.0)
        finally:
            node.destroy_node()


class _MjpegPipe:
    """A named pipe fed with JPEG frames, as an MJPEG camera stream: OpenCV (FFmpeg) reads it as a device
    and its read blocks, without an error, while nothing is written — a wedged camera. ``paused`` stops
    the frames; the pipe stays open."""

    def __init__(self, path: Path, fps: float) -> None:
        os.mkfifo(path)
        self.path, self.period = path, 1.0 / fps
        # Read-write and non-blocking: never waits for the reader, never blocks the test when nobody reads
        # (a frame under PIPE_BUF bytes is written whole or not at all: dropped, as a camera drops).
        self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self.paused = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(self.period):
            if self.paused.is_set():
                continue
            frame = np.zeros((120, 160, 3), np.uint8)
            frame[:, (i * 8) % 160 :, 1] = 120
            jpeg = cv2.imencode(".jpg", frame, [int(cv2.IMWRITE_JPEG_QUALITY), 50])[1].tobytes()
            assert len(jpeg) < 4096  # PIPE_BUF: atomic
            try:
                os.write(self._fd, jpeg)
            except BlockingIOError:
                pass
            i += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        os.close(self._fd)


@pytest.mark.skipif(not cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG), reason="OpenCV without FFmpeg")
def test_a_stalled_source_goes_warn_then_error_and_back_to_ok(ros, listener, start_node, tmp_path, monkeypatch):
    import diagnostic_msgs.msg
    from rclpy.qos import QoSProfile

    levels: list[tuple[int, dict[str, str], str]] = []

    def on_diag(array) -> None:
        for status in array.status:
            if status.name.endswith("camera stall"):
                levels.append((status.level[0], {kv.key: kv.value for kv in status.values}, status.message))

    listener.create_subscription(diagnostic_msgs.msg.DiagnosticArray, "/diagnostics", on_diag, QoSProfile(depth=50))
    # Tell FFmpeg the pipe is MJPEG and not to buffer seconds of it to guess (OpenCV's own option variable).
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "input_format;mjpeg|probesize;32|analyzeduration;0")
    pipe = _MjpegPipe(tmp_path / "cam.mjpeg", fps=6.0)
    # 3 fps configured: WARN after 1.0 s without a frame (3 periods), ERROR after 3.3 s (10 periods); the
    # 1 Hz diagnostics cannot step over the 2.3 s WARN band.
    proc = start_node(CAMERA, "-p", "name:=stall", "-p", f"source:=device:{pipe.path}", "-p", "width:=160",
                      "-p", "height:=120", "-p", "fps:=3.0", name="camera")
    try:
        def last_level() -> int | None:
            return levels[-1][0] if levels else None

        def frames() -> int:
            return int(levels[-1][1]["frames"]) if levels else 0

        assert spin_until(ros, listener, lambda: last_level() == 0 and frames() >= 5, 30.0), (levels, proc.output)
        pipe.paused.set()
        start = len(levels)
        assert spin_until(ros, listener, lambda: last_level() == 2, 20.0), (levels[start:], proc.output)
        during = [level for level, _, _ in levels[start:]]
        assert 1 in during and during.index(1) < during.index(2), during  # WARN first, then ERROR
        _, values, message = levels[-1]
        assert "no frame for" in message and float(values["seconds_since_last_frame"]) > 3.3
        assert float(values["measured_fps"]) < 1.5, values  # the rate shows the stall, not the old window
        assert proc.proc.poll() is None

        pipe.paused.clear()
        assert spin_until(ros, listener, lambda: last_level() == 0, 20.0), (levels[-3:], proc.output)
        assert float(levels[-1][1]["seconds_since_last_frame"]) < 1.0
        log = proc.output
        assert "[WARN]" in log and "camera stall: no frame for" in log
        assert "[ERROR]" in log and "camera stall: frames again" in log
        assert log.count("camera stall: no frame for") == 2  # once per transition, not once per second
    finally:
        proc.stop()
        pipe.close()
