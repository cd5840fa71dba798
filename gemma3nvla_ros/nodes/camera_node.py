"""camera_node: one camera → ``/cameras/<name>/image_raw`` (sensor_msgs/Image, sensor-data QoS).

Also ``/cameras/<name>/image_raw/compressed`` (JPEG, when publish_compressed), ``/cameras/<name>/camera_info``
and ``/diagnostics``. Capture runs on a thread of its own; devices pace themselves (the thread blocks
in the read), files and the synthetic source are paced by a timer on the node clock (use_sim_time
works). Frames are stamped with the node clock right after the read returns.

Parameters: source (synthetic | 0 | /dev/video2 | device:/path | file:/path.mp4), name (default: the
node name), width, height, fps, encoding (rgb8|bgr8), frame_id (default <name>_optical_frame), loop,
publish_compressed, jpeg_quality, camera_info_url ("" = uncalibrated CameraInfo with zero K).
"""
from __future__ import annotations

import sys
import threading
import time

import diagnostic_msgs.msg
import sensor_msgs.msg
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data

from gemma3nvla_ros.hardware import diagnostics as diag
from gemma3nvla_ros.hardware.camera_info import CameraInfoData, CameraInfoError, load_camera_info
from gemma3nvla_ros.hardware.cameras import (
    ENCODINGS,
    ReconnectingSource,
    SourceEnded,
    SourceError,
    encode_jpeg,
    make_source,
    parse_source,
    to_encoding,
)
from gemma3nvla_ros.hardware.image_msgs import fill_camera_info, fill_compressed, fill_image
from gemma3nvla_ros.nodes.run import run_node


class StartupError(RuntimeError):
    pass


def _load_cv_bridge():
    """cv_bridge where ROS provides it. It fails to import on Jazzy with numpy 2 (and other ways), and
    is not on PyPI at all, so any exception means: use the plain conversion."""
    try:
        from cv_bridge import CvBridge

        return CvBridge(), ""
    except Exception as exc:  # noqa: BLE001 - any import-time failure must fall back
        return None, f"{type(exc).__name__}: {exc}"


class CameraNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("camera", **kwargs)
        source = self.declare_parameter("source", "synthetic").value
        self.cam_name = self.declare_parameter("name", "").value or self.get_name()
        self.width = int(self.declare_parameter("width", 640).value)
        self.height = int(self.declare_parameter("height", 480).value)
        self.fps = float(self.declare_parameter("fps", 30.0).value)
        self.encoding = self.declare_parameter("encoding", "rgb8").value
        self.frame_id = self.declare_parameter("frame_id", "").value or f"{self.cam_name}_optical_frame"
        self.loop = bool(self.declare_parameter("loop", True).value)
        self.publish_compressed = bool(self.declare_parameter("publish_compressed", False).value)
        self.jpeg_quality = int(self.declare_parameter("jpeg_quality", 90).value)
        camera_info_url = self.declare_parameter("camera_info_url", "").value
        self._source_text = source
        self._camera_info_url = camera_info_url

        self.frames = 0
        self.late_ticks = 0
        self.ended = False
        self._rate_window: list[int] = []
        self._running = True
        self._tick = threading.Event()
        self._thread: threading.Thread | None = None
        self.source: ReconnectingSource | None = None

    def start(self) -> None:
        log = self.get_logger()
        if self.encoding not in ENCODINGS:
            raise StartupError(f"encoding must be one of {ENCODINGS}, not {self.encoding!r}")
        if self.width <= 0 or self.height <= 0 or self.fps <= 0:
            raise StartupError("width, height and fps must be > 0")
        try:
            spec = parse_source(self._source_text)
        except ValueError as exc:
            raise StartupError(str(exc)) from exc
        self.spec = spec
        try:
            self.info = (
                load_camera_info(self._camera_info_url, self.width, self.height)
                if self._camera_info_url
                else CameraInfoData(self.width, self.height)
            )
        except CameraInfoError as exc:
            raise StartupError(str(exc)) from exc
        self.source = ReconnectingSource(
            make_source(spec, self.width, self.height, self.fps, loop=self.loop, log=log.info), log=log.warn
        )
        try:
            self.source.open()
        except SourceError as exc:
            raise StartupError(
                f"cannot open camera source '{self._source_text}': {exc}. Check the device exists "
                "(v4l2-ctl --list-devices), is not used by another process, or that the file path is right."
            ) from exc
        self._cv_bridge, why = _load_cv_bridge()
        log.debug(f"image conversion: {'cv_bridge' if self._cv_bridge else 'numpy (' + why + ')'}")

        base = f"/cameras/{self.cam_name}"
        self.image_pub = self.create_publisher(sensor_msgs.msg.Image, f"{base}/image_raw", qos_profile_sensor_data)
        self.info_pub = self.create_publisher(sensor_msgs.msg.CameraInfo, f"{base}/camera_info", qos_profile_sensor_data)
        self.jpeg_pub = (
            self.create_publisher(sensor_msgs.msg.CompressedImage, f"{base}/image_raw/compressed", qos_profile_sensor_data)
            if self.publish_compressed
            else None
        )
        self.diag_pub = self.create_publisher(diagnostic_msgs.msg.DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
        if self.source.source.paced:
            self.create_timer(1.0 / self.fps, self._on_tick)
        self.create_timer(1.0, self._on_diagnostics)
        self._thread = threading.Thread(target=self._capture_loop, name=f"capture-{self.cam_name}", daemon=True)
        self._thread.start()
        log.info(f"{spec} -> {base}/image_raw {self.width}x{self.height} {self.encoding} @ {self.fps:g} fps")

    def _on_tick(self) -> None:
        if self._tick.is_set():
            self.late_ticks += 1  # capture thread still busy with the previous frame
        self._tick.set()

    def _capture_loop(self) -> None:
        assert self.source is not None
        paced = self.source.source.paced
        while self._running:
            if paced:
                if not self._tick.wait(timeout=0.5):
                    continue
                self._tick.clear()
            elif not self.source.connected:
                # Reconnect backoff of a lost device: not a control path, a plain wait is fine.
                time.sleep(min(0.5, max(0.01, self.source.seconds_until_retry())))
            try:
                frame = self.source.read()
            except SourceEnded:
                self.ended = True
                self.get_logger().info(f"end of {self.spec}; loop is false, no more frames")
                return
            if frame is None or not self._running:
                continue
            try:
                self._publish(frame)
            except Exception as exc:  # noqa: BLE001 - one bad frame must not end the capture thread
                if self._running:
                    self.get_logger().error(f"publishing a frame failed: {type(exc).__name__}: {exc}",
                                            throttle_duration_sec=5.0)

    def _publish(self, frame_bgr) -> None:
        now = self.get_clock().now()
        stamp = now.to_msg()
        out = to_encoding(frame_bgr, self.encoding)
        msg = None
        if self._cv_bridge is not None:
            try:
                msg = self._cv_bridge.cv2_to_imgmsg(out, encoding=self.encoding)
                msg.header.stamp, msg.header.frame_id = stamp, self.frame_id
            except Exception as exc:  # noqa: BLE001 - e.g. a numpy-1 cv_bridge that imported but fails on use
                self.get_logger().warn(
                    f"cv_bridge conversion failed ({type(exc).__name__}: {exc}); using the numpy conversion"
                )
                self._cv_bridge, msg = None, None
        if msg is None:
            msg = fill_image(sensor_msgs.msg.Image(), out, self.encoding, stamp, self.frame_id)
        self.image_pub.publish(msg)
        self.info_pub.publish(fill_camera_info(sensor_msgs.msg.CameraInfo(), self.info, stamp, self.frame_id))
        if self.jpeg_pub is not None:
            jpeg = encode_jpeg(frame_bgr, self.jpeg_quality)
            self.jpeg_pub.publish(fill_compressed(sensor_msgs.msg.CompressedImage(), jpeg, self.encoding, stamp, self.frame_id))
        self.frames += 1
        self._rate_window.append(now.nanoseconds)
        del self._rate_window[:-60]

    def _on_diagnostics(self) -> None:
        assert self.source is not None
        window = list(self._rate_window)  # node-clock stamps (ns) of the last published frames
        span = (window[-1] - window[0]) * 1e-9 if len(window) > 1 else 0.0
        status = diag.camera_status(
            node=self.get_name(),
            camera=self.cam_name,
            source=str(self.spec),
            connected=self.source.connected,
            ended=self.ended,
            last_error=self.source.last_error,
            configured_fps=self.fps,
            measured_fps=(len(window) - 1) / span if span > 0 else 0.0,
            frames=self.frames,
            values={
                "resolution": f"{self.width}x{self.height}",
                "encoding": self.encoding,
                "late_ticks": self.late_ticks,
                "losses": self.source.losses,
                "reconnects": self.source.reconnects,
            },
        )
        self.diag_pub.publish(diag.to_diagnostic_array([status], self.get_clock().now().to_msg(), diagnostic_msgs.msg))

    def close(self) -> None:
        self._running = False
        self._tick.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self.source is not None:
            self.source.close()


def main(args: list[str] | None = None) -> int:
    return run_node(CameraNode, (StartupError,), args)


if __name__ == "__main__":
    sys.exit(main())
