"""Camera sources (no ROS): V4L2 devices and video files through OpenCV, and a synthetic pattern.

Sources deliver BGR uint8 frames (OpenCV's native order) at the requested size; :func:`to_encoding`
turns them into rgb8/bgr8 for the message. :class:`ReconnectingSource` wraps a source with
exponential-backoff reopening so a camera that disappears (USB unplugged) comes back by itself.

Source strings (the camera_node ``source`` parameter):
``synthetic`` | ``0`` (device index; the integer 0 too, as ``-p source:=0`` gives it) | ``/dev/video2`` or
``device:/path`` (device path) | ``file:/path/to/video.mp4`` (a video file, looped with ``loop``).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

Frame = NDArray[np.uint8]
Log = Callable[[str], None]

ENCODINGS = ("rgb8", "bgr8")


class SourceError(RuntimeError):
    """The source cannot be opened or a read failed (device gone, file unreadable)."""


class SourceEnded(SourceError):
    """A video file without ``loop`` has no more frames."""


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # "device" | "file" | "synthetic"
    target: int | str

    def __str__(self) -> str:
        return self.kind if self.kind == "synthetic" else f"{self.kind}:{self.target}"

    @property
    def paced(self) -> bool:
        """Files and the synthetic pattern are paced by the caller at fps; a device paces itself."""
        return self.kind != "device"


def parse_source(value: str | int) -> SourceSpec:
    """``value`` is the parameter as ROS typed it: ``-p source:=0`` arrives as the integer 0."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(
            f"camera source must be a string or a device index, not {type(value).__name__} {value!r} "
            "(use synthetic, 0, /dev/video2 or file:/path)"
        )
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"camera device index must be 0 or more, not {value}")
        return SourceSpec("device", value)
    s = value.strip()
    if not s:
        raise ValueError("camera source is empty (use synthetic, a device index, /dev/videoN or file:/path)")
    if s == "synthetic":
        return SourceSpec("synthetic", "")
    if s.isdigit():
        return SourceSpec("device", int(s))
    if s.startswith("file:"):
        path = s[len("file:") :]
        if path.startswith("//"):
            path = path[2:]  # file:///abs/path
        return SourceSpec("file", path)
    if s.startswith("device:"):
        return SourceSpec("device", s[len("device:") :])
    if s.startswith("/dev/"):
        return SourceSpec("device", s)
    raise ValueError(
        f"camera source {s!r} not understood: use synthetic, a device index (0), a device path "
        "(/dev/video2 or device:/path), or file:/path/to/video.mp4"
    )


class CameraSource(Protocol):
    paced: bool  # True: the caller paces reads at fps (files, synthetic); False: read() blocks (devices)
    width: int
    height: int
    fps: float

    def open(self) -> None: ...
    def read(self) -> Frame: ...
    def close(self) -> None: ...


class SyntheticSource:
    """A moving test pattern: a precomputed wide image scrolled a few pixels per frame (a view, so
    1280x720@30 costs one copy per frame) plus a frame counter block, so consecutive frames differ."""

    paced = True

    def __init__(self, width: int, height: int, fps: float, speed_px: int = 8) -> None:
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.speed_px = speed_px
        self._period = 256
        self._wide: Frame | None = None
        self._index = 0

    def open(self) -> None:
        w, h, p = self.width, self.height, self._period
        x = np.arange(w + p, dtype=np.int32)
        y = np.arange(h, dtype=np.int32)[:, None]
        wide = np.empty((h, w + p, 3), dtype=np.uint8)
        wide[..., 0] = (x[None, :] % p).astype(np.uint8)
        wide[..., 1] = ((y * 255) // max(1, h - 1)).astype(np.uint8)
        wide[..., 2] = (((x[None, :] // 32) + (y // 32)) % 2 * 200).astype(np.uint8)
        self._wide = wide
        self._index = 0

    def read(self) -> Frame:
        if self._wide is None:
            raise SourceError("synthetic source not open")
        offset = (self._index * self.speed_px) % self._period
        frame = np.ascontiguousarray(self._wide[:, offset : offset + self.width])
        # Frame counter in the top-left corner: 32 bits as 8x8 blocks of black/white.
        for bit in range(min(32, self.width // 8)):
            frame[0:8, bit * 8 : bit * 8 + 8] = 255 if (self._index >> bit) & 1 else 0
        self._index += 1
        return frame

    def close(self) -> None:
        self._wide = None


class OpenCVSource:
    """cv2.VideoCapture on a V4L2 device (index or path) or a video file."""

    def __init__(
        self,
        spec: SourceSpec,
        width: int,
        height: int,
        fps: float,
        *,
        loop: bool = True,
        log: Log | None = None,
    ) -> None:
        if spec.kind not in ("device", "file"):
            raise ValueError(f"OpenCVSource needs a device or file source, not {spec}")
        self.spec = spec
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.loop = loop
        self.paced = spec.paced  # a file would otherwise play as fast as it decodes
        self._log = log or (lambda _msg: None)
        self._cap = None
        self._resize = False
        self._logged_resize = False

    def open(self) -> None:
        import cv2

        self.close()
        target = self.spec.target
        if self.spec.kind == "file":
            import os

            if not os.path.isfile(str(target)):
                raise SourceError(f"video file {target} does not exist")
            cap = cv2.VideoCapture(str(target))
        else:
            cap = cv2.VideoCapture(target, cv2.CAP_V4L2) if hasattr(cv2, "CAP_V4L2") else cv2.VideoCapture(target)
            if not cap.isOpened():
                # Not a V4L2 node (another OS, a GStreamer/FFmpeg URL or a stream): any backend.
                cap.release()
                cap = cv2.VideoCapture(target)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.spec} with OpenCV")
        if self.spec.kind == "device":
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            cap.set(cv2.CAP_PROP_FPS, self.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a queue of old ones
        got_w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        got_h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self._resize = (got_w, got_h) != (self.width, self.height)
        if self._resize and not self._logged_resize:
            self._log(
                f"{self.spec} delivers {got_w}x{got_h}, not the requested {self.width}x{self.height}; "
                "frames are resized (costs CPU; pick a size the camera supports to avoid it)"
            )
            self._logged_resize = True
        self._cap = cap

    def read(self) -> Frame:
        import cv2

        if self._cap is None:
            raise SourceError(f"{self.spec} is not open")
        ok, frame = self._cap.read()
        if not ok and self.spec.kind == "file":
            if not self.loop:
                raise SourceEnded(f"end of video file {self.spec.target}")
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._cap.read()
        if not ok or frame is None:
            raise SourceError(f"read from {self.spec} failed")
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        if self._resize or frame.shape[1] != self.width or frame.shape[0] != self.height:
            frame = cv2.resize(frame, (self.width, self.height), interpolation=cv2.INTER_AREA)
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
        self._cap = None


def make_source(spec: SourceSpec, width: int, height: int, fps: float, *, loop: bool = True, log: Log | None = None) -> CameraSource:
    if spec.kind == "synthetic":
        return SyntheticSource(width, height, fps)
    return OpenCVSource(spec, width, height, fps, loop=loop, log=log)


def to_encoding(frame_bgr: Frame, encoding: str) -> Frame:
    if encoding == "bgr8":
        return frame_bgr
    if encoding == "rgb8":
        return np.ascontiguousarray(frame_bgr[..., ::-1])
    raise ValueError(f"encoding must be one of {ENCODINGS}, not {encoding!r}")


def encode_jpeg(frame_bgr: Frame, quality: int = 90) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", frame_bgr, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise SourceError("JPEG encoding failed")
    return buf.tobytes()


class ReconnectingSource:
    """Wraps a source: a failed read closes it and reopening is retried with exponential backoff.

    :meth:`read` never raises for device loss; it returns None while disconnected. ``clock`` is
    injectable (seconds) so the backoff is testable; :meth:`seconds_until_retry` lets a capture
    thread sleep until the next attempt instead of spinning.
    """

    def __init__(
        self,
        source: CameraSource,
        *,
        initial_backoff_s: float = 0.1,
        max_backoff_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        log: Log | None = None,
    ) -> None:
        self.source = source
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.clock = clock
        self._log = log or (lambda _msg: None)
        self.connected = False
        self.backoff_s = initial_backoff_s
        self.next_attempt = 0.0
        self.losses = 0
        self.reconnects = 0
        self.failed_attempts = 0
        self.last_error = ""

    def open(self) -> None:
        """First open: errors propagate (a source that cannot be opened at start is fatal)."""
        self.source.open()
        self.connected = True

    def seconds_until_retry(self) -> float:
        return 0.0 if self.connected else max(0.0, self.next_attempt - self.clock())

    def read(self) -> Frame | None:
        if not self.connected:
            if self.clock() < self.next_attempt:
                return None
            try:
                self.source.open()
            except Exception as exc:  # noqa: BLE001 - as in read(): keep retrying, never die
                self.failed_attempts += 1
                self.last_error = str(exc)
                self.backoff_s = min(self.max_backoff_s, self.backoff_s * 2.0)
                self.next_attempt = self.clock() + self.backoff_s
                return None
            self.connected = True
            self.reconnects += 1
            self.backoff_s = self.initial_backoff_s
            self._log(f"camera source reopened after {self.failed_attempts} failed attempt(s)")
        try:
            return self.source.read()
        except SourceEnded:
            raise
        except Exception as exc:  # noqa: BLE001 - SourceError, but also cv2.error / decoder errors of a
            # half-unplugged device: any of them would otherwise kill the capture thread for good.
            self.source.close()
            self.connected = False
            self.losses += 1
            self.failed_attempts = 0
            self.last_error = str(exc)
            self.backoff_s = self.initial_backoff_s
            self.next_attempt = self.clock() + self.backoff_s
            self._log(f"camera source lost ({exc}); retrying with backoff up to {self.max_backoff_s:.1f} s")
            return None

    def close(self) -> None:
        self.source.close()
        self.connected = False
