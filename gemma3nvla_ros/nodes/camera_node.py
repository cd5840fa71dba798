"""camera_node: one camera → ``/cameras/<name>/image_raw`` (sensor_msgs/Image, sensor-data QoS).

Also ``/cameras/<name>/image_raw/compressed`` (JPEG, when publish_compressed), ``/cameras/<name>/camera_info``
and ``/diagnostics``. Capture runs on a thread of its own; devices pace themselves (the thread blocks
in the read), files and the synthetic source are paced by a timer on the node clock (use_sim_time
works). Frames are stamped with the node clock right after the read returns.

Parameters (hardware/camera_params.py describes each; ``ros2 param describe`` shows it): source
(synthetic | 0 | /dev/video2 | device:/path | file:/path.mp4), name (default: the node name), width,
height, fps, encoding (rgb8|bgr8), frame_id (default <name>_optical_frame), loop, publish_compressed,
jpeg_quality, camera_info_url ("" = uncalibrated CameraInfo with zero K). Changeable at run time:
publish_compressed, jpeg_quality, and fps of files and the synthetic source; the others are read-only.

Health on /diagnostics includes the seconds since the last frame on a monotonic clock: a source whose
read blocks without an error is WARN, then ERROR (thresholds in hardware/diagnostics.py), and the log
says so on each change.
"""
from __future__ import annotations

import sys
import threading
import time

import diagnostic_msgs.msg
import sensor_msgs.msg
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, qos_profile_sensor_data

from gemma3nvla_ros.hardware import camera_params
from gemma3nvla_ros.hardware import diagnostics as diag
from gemma3nvla_ros.hardware.camera_info import CameraInfoData, CameraInfoError, load_camera_info
from gemma3nvla_ros.hardware.cameras import (
    ReconnectingSource,
    SourceEnded,
    SourceError,
    encode_jpeg,
    make_source,
    parse_source,
    to_encoding,
)
from gemma3nvla_ros.hardware.frame_timing import FrameTiming, rate_window_s
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


def _descriptor(spec: camera_params.ParamSpec, read_only: bool) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(
        description=spec.description,
        additional_constraints=spec.constraints,
        read_only=read_only,
        dynamic_typing=spec.any_type,
    )
    if not spec.any_type:
        descriptor.type = Parameter.Type.from_parameter_value(spec.default).value
    if spec.int_range:
        descriptor.integer_range = [IntegerRange(from_value=spec.int_range[0], to_value=spec.int_range[1], step=1)]
    if spec.float_range:
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=spec.float_range[0], to_value=spec.float_range[1], step=0.0)
        ]
    return descriptor


class CameraNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("camera", **kwargs)
        source = self._declare(camera_params.SOURCE, read_only=True)
        paced = camera_params.source_paced(source)
        values = {
            spec.name: self._declare(spec, camera_params.read_only(spec, paced))
            for spec in camera_params.PARAMS
            if spec is not camera_params.SOURCE
        }
        self._source_value = source
        self.cam_name = values["name"] or self.get_name()
        self.width, self.height = values["width"], values["height"]
        self.fps: float = values["fps"]
        self.encoding: str = values["encoding"]
        self.frame_id = values["frame_id"] or f"{self.cam_name}_optical_frame"
        self.loop: bool = values["loop"]
        self.publish_compressed: bool = values["publish_compressed"]
        self.jpeg_quality: int = values["jpeg_quality"]
        self._camera_info_url: str = values["camera_info_url"]

        self.frames = 0
        self.late_ticks = 0
        self.ended = False
        self._timing = FrameTiming(time.monotonic())
        self._stale_level = diag.OK
        self._running = True
        self._tick = threading.Event()
        self._thread: threading.Thread | None = None
        self._pace_timer = None
        self._topic_base: str | None = None  # set once started: publishers exist
        self._jpeg_lock = threading.Lock()  # the capture thread publishes JPEG; a param set may remove it
        self.jpeg_pub = None
        self.source: ReconnectingSource | None = None
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def _declare(self, spec: camera_params.ParamSpec, read_only: bool) -> camera_params.Value:
        """Declare with its descriptor; a value of the wrong type or out of range is a StartupError
        (exit 2 with the reason), not a traceback."""
        try:
            return self.declare_parameter(spec.name, spec.default, _descriptor(spec, read_only)).value
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            raise StartupError(f"parameter {spec.name} refused ({exc}): it must be {spec.expects}") from exc

    def start(self) -> None:
        log = self.get_logger()
        for param in camera_params.PARAMS:  # what descriptors cannot say: encoding, name, source
            reason = camera_params.check(param.name, self.get_parameter(param.name).value)
            if reason:
                raise StartupError(reason)
        spec = self.spec = parse_source(self._source_value)
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
            index = isinstance(spec.target, int)
            which = f" (device index {spec.target} is /dev/video{spec.target})" if index else ""
            raise StartupError(
                f"cannot open camera source '{self._source_value}'{which}: {exc}. Check the device exists "
                "(v4l2-ctl --list-devices), is not used by another process, or that the file path is right."
            ) from exc
        self._cv_bridge, why = _load_cv_bridge()
        log.debug(f"image conversion: {'cv_bridge' if self._cv_bridge else 'numpy (' + why + ')'}")

        base = self._topic_base = f"/cameras/{self.cam_name}"
        self.image_pub = self.create_publisher(sensor_msgs.msg.Image, f"{base}/image_raw", qos_profile_sensor_data)
        self.info_pub = self.create_publisher(sensor_msgs.msg.CameraInfo, f"{base}/camera_info", qos_profile_sensor_data)
        self._set_compressed(self.publish_compressed)
        self.diag_pub = self.create_publisher(diagnostic_msgs.msg.DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
        if self.source.source.paced:
            self._pace_timer = self.create_timer(1.0 / self.fps, self._on_tick)
        self.create_timer(1.0, self._on_diagnostics)
        self._timing = FrameTiming(time.monotonic())  # from now: opening the source is not a stall
        self._thread = threading.Thread(target=self._capture_loop, name=f"capture-{self.cam_name}", daemon=True)
        self._thread.start()
        log.info(f"{spec} -> {base}/image_raw {self.width}x{self.height} {self.encoding} @ {self.fps:g} fps")

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate every value first, then apply them all: a set is refused with the reason, or takes
        effect. Read-only parameters never get here (rclpy refuses them by their descriptor)."""
        for param in params:
            reason = camera_params.check(param.name, param.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        for param in params:
            self._apply(param.name, param.value)
        return SetParametersResult(successful=True)

    def _apply(self, name: str, value) -> None:
        if name == "jpeg_quality":
            self.jpeg_quality = value  # read by the capture thread for the next frame
        elif name == "publish_compressed":
            self._set_compressed(value)
        elif name == "fps":
            self._set_fps(value)
        else:
            return
        self.get_logger().info(f"{name} set to {value}")

    def _set_compressed(self, on: bool) -> None:
        """Create or remove the JPEG publisher (before start: only remember it)."""
        with self._jpeg_lock:
            self.publish_compressed = on
            if self._topic_base is None:
                return
            if on and self.jpeg_pub is None:
                self.jpeg_pub = self.create_publisher(
                    sensor_msgs.msg.CompressedImage, f"{self._topic_base}/image_raw/compressed", qos_profile_sensor_data
                )
            elif not on and self.jpeg_pub is not None:
                self.destroy_publisher(self.jpeg_pub)
                self.jpeg_pub = None

    def _set_fps(self, fps: float) -> None:
        """Re-pace a file or the synthetic source (read-only for devices, so only those get here)."""
        self.fps = fps
        if self._pace_timer is not None:
            self._pace_timer.timer_period_ns = round(1e9 / fps)
            self._pace_timer.reset()  # the new period counts from now, not after one more old period

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
        with self._jpeg_lock:
            if self.jpeg_pub is not None:
                jpeg = encode_jpeg(frame_bgr, self.jpeg_quality)
                self.jpeg_pub.publish(
                    fill_compressed(sensor_msgs.msg.CompressedImage(), jpeg, self.encoding, stamp, self.frame_id)
                )
        self.frames += 1
        self._timing.record(time.monotonic())

    def _on_diagnostics(self) -> None:
        assert self.source is not None
        now = time.monotonic()
        since = self._timing.seconds_since_last(now)
        gap = self._timing.take_longest_gap()
        self._log_staleness(since, gap)
        status = diag.camera_status(
            node=self.get_name(),
            camera=self.cam_name,
            source=str(self.spec),
            connected=self.source.connected,
            ended=self.ended,
            last_error=self.source.last_error,
            configured_fps=self.fps,
            measured_fps=self._timing.fps(now, rate_window_s(self.fps)),
            seconds_since_last_frame=since,
            frames=self.frames,
            values={
                "resolution": f"{self.width}x{self.height}",
                "encoding": self.encoding,
                "longest_gap_s": f"{gap:.2f}",  # since the previous message: stalls between samples
                "late_ticks": self.late_ticks,
                "losses": self.source.losses,
                "reconnects": self.source.reconnects,
            },
        )
        self.diag_pub.publish(diag.to_diagnostic_array([status], self.get_clock().now().to_msg(), diagnostic_msgs.msg))

    def _log_staleness(self, since: float, gap: float) -> None:
        """Log once when frames stop (WARN, then ERROR) and once when they come back."""
        if self.ended:
            return  # a file that ended without loop is expected to stay silent
        level = diag.staleness_level(since, self.fps)
        previous, self._stale_level = self._stale_level, level
        if level == previous:
            return
        log = self.get_logger()
        if level == diag.OK:
            log.info(f"camera {self.cam_name}: frames again, after {gap:.1f} s without one")
        elif level == diag.WARN:
            log.warn(f"camera {self.cam_name}: {diag.stale_message(since, self.fps)}")
        else:
            log.error(f"camera {self.cam_name}: {diag.stale_message(since, self.fps)}")

    def close(self) -> None:
        self._running = False
        self._tick.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            if self._thread.is_alive():
                # Still blocked in a read: releasing the capture under it can crash the process. The OS
                # releases the device when the process exits.
                self.get_logger().warn("capture thread still blocked in a read; leaving the source to the OS")
                return
        if self.source is not None:
            self.source.close()


def main(args: list[str] | None = None) -> int:
    return run_node(CameraNode, (StartupError,), args)


if __name__ == "__main__":
    sys.exit(main())
