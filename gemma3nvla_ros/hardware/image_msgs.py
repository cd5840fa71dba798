"""Filling sensor_msgs Image/CompressedImage/CameraInfo objects from numpy frames (what cv_bridge does,
for machines where it is missing or broken); the message instance is passed in, so this module imports
no ROS."""
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
