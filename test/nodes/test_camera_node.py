"""camera_node as a real process over DDS, from a video file the test writes with cv2.VideoWriter."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from helpers_ros import spin_until

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
    ],
)
def test_unusable_source_exits_nonzero_with_reason(start_node, args, needle):
    proc = start_node(CAMERA, *args, name="camera")
    assert proc.wait_exit() == 2
    assert needle in proc.output


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
