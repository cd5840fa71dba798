"""Filling sensor_msgs Image/CompressedImage/CameraInfo objects from numpy frames and reading frames back
(what cv_bridge does, for machines where it is missing or broken); message instances are passed in
(duck-typed), so this module imports no ROS."""
from __future__ import annotations

import array
from typing import Any

import numpy as np

from gemma3nvla_ros.hardware.camera_info import CameraInfoData


def fill_image(msg: Any, frame: np.ndarray, encoding: str, stamp: Any, frame_id: str) -> Any:
    """What cv_bridge.cv2_to_imgmsg does for 8-bit 3-channel frames."""
    height, width = frame.shape[:2]
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height = int(height)
    msg.width = int(width)
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(frame.strides[0]) if frame.flags["C_CONTIGUOUS"] else int(width * frame.shape[2])
    msg.data = _byte_array(np.ascontiguousarray(frame).reshape(-1))
    return msg


def _byte_array(buffer: Any) -> array.array:
    """``array('B')`` from a bytes-like object in one copy. Generated rclpy messages validate a list
    or ``bytes`` element by element in Python (~0.1 s for a 720p frame); an ``array('B')`` is taken
    as is — the same thing cv_bridge does."""
    out = array.array("B")
    out.frombytes(buffer)
    return out


def fill_compressed(msg: Any, jpeg: bytes, encoding: str, stamp: Any, frame_id: str) -> Any:
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.format = f"{encoding}; jpeg compressed bgr8"  # image_transport's compressed format string
    msg.data = _byte_array(jpeg)
    return msg


def fill_camera_info(msg: Any, info: CameraInfoData, stamp: Any, frame_id: str) -> Any:
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.width = info.width
    msg.height = info.height
    msg.distortion_model = info.distortion_model
    msg.d = [float(v) for v in info.d]
    msg.k = np.asarray(info.k, dtype=np.float64)
    msg.r = np.asarray(info.r, dtype=np.float64)
    msg.p = np.asarray(info.p, dtype=np.float64)
    return msg


# --- messages -> frames ---------------------------------------------------------------------------------
RAW_ENCODINGS = ("rgb8", "bgr8", "mono8")
_CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1}


def image_to_rgb(msg: Any) -> np.ndarray:
    """HxWx3 uint8 RGB (C-contiguous, writable, not sharing the message's buffer) from a sensor_msgs/Image
    (rgb8, bgr8, mono8; rows may be padded: ``step`` >= width * channels) or a sensor_msgs/CompressedImage
    (anything cv2.imdecode reads: JPEG, PNG). ValueError for other encodings or inconsistent sizes."""
    if hasattr(msg, "format") and not hasattr(msg, "encoding"):
        return _compressed_to_rgb(msg)
    encoding = str(msg.encoding)
    if encoding not in _CHANNELS:
        raise ValueError(f"image encoding {encoding!r} is not supported; publish one of {list(RAW_ENCODINGS)}")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    channels = _CHANNELS[encoding]
    row = width * channels
    if height <= 0 or width <= 0:
        raise ValueError(f"{encoding} image has size {width}x{height}")
    if step < row:
        raise ValueError(f"{encoding} image {width}x{height}: step {step} is less than width * {channels} = {row}")
    data = _as_uint8(msg.data)
    if data.size != step * height:
        raise ValueError(
            f"{encoding} image {width}x{height} with step {step} needs {step * height} bytes, message has {data.size}"
        )
    pixels = data.reshape(height, step)[:, :row].reshape(height, width, channels)  # drop the row padding
    if encoding == "rgb8":
        return pixels.copy()  # a view would pin (and alias) the message's buffer
    if encoding == "bgr8":
        return np.ascontiguousarray(pixels[..., ::-1])
    return np.repeat(pixels, 3, axis=2)  # mono8: gray in all three channels, as cv2.COLOR_GRAY2RGB


def _compressed_to_rgb(msg: Any) -> np.ndarray:
    import cv2

    fmt = str(msg.format)
    if "compresseddepth" in fmt.lower():
        raise ValueError(f"compressed image format {fmt!r} is a depth image; the policy needs color frames")
    data = _as_uint8(msg.data)
    if data.size == 0:
        raise ValueError(f"compressed image ({fmt!r}) has no data")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)  # always 8-bit BGR, whatever was encoded
    if bgr is None:
        raise ValueError(f"compressed image ({fmt!r}, {data.size} bytes) could not be decoded")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _as_uint8(data: Any) -> np.ndarray:
    try:
        return np.frombuffer(data, dtype=np.uint8)  # bytes, array('B'), memoryview: no copy
    except TypeError:
        return np.asarray(data, dtype=np.uint8).reshape(-1)  # a list of ints
