"""Camera calibration files (camera_calibration_parsers YAML, as written by ROS camera_calibration) and
the CameraInfo content derived from them, no ROS. An uncalibrated camera gets all-zero K/P, which is
what camera_info_manager publishes when it has no calibration."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml


class CameraInfoError(ValueError):
    pass


@dataclass
class CameraInfoData:
    width: int
    height: int
    distortion_model: str = "plumb_bob"
    d: list[float] = field(default_factory=list)
    k: list[float] = field(default_factory=lambda: [0.0] * 9)
    r: list[float] = field(default_factory=lambda: [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0])
    p: list[float] = field(default_factory=lambda: [0.0] * 12)
    calibrated: bool = False


def url_to_path(url: str) -> Path:
    """``file:///abs/path.yaml`` or a plain path. (package:// needs ament; not supported here.)"""
    if url.startswith("file://"):
        return Path(url[len("file://") :])
    if "://" in url:
        raise CameraInfoError(f"camera_info_url {url!r}: only file:// URLs and plain paths are supported")
    return Path(url).expanduser()


def _matrix(data: dict, key: str, n: int) -> list[float]:
    entry = data.get(key)
    if entry is None:
        raise CameraInfoError(f"camera calibration has no {key}")
    values = entry.get("data") if isinstance(entry, dict) else entry
    if not isinstance(values, list) or (n and len(values) != n):
        raise CameraInfoError(f"camera calibration {key} must have {n} values")
    return [float(v) for v in values]


def load_camera_info(url: str, width: int, height: int) -> CameraInfoData:
    path = url_to_path(url)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise CameraInfoError(f"cannot read camera calibration {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise CameraInfoError(f"camera calibration {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise CameraInfoError(f"camera calibration {path} is not a mapping")
    info = CameraInfoData(
        width=int(data.get("image_width", width)),
        height=int(data.get("image_height", height)),
        distortion_model=str(data.get("distortion_model", "plumb_bob")),
        d=_matrix(data, "distortion_coefficients", 0),
        k=_matrix(data, "camera_matrix", 9),
        r=_matrix(data, "rectification_matrix", 9),
        p=_matrix(data, "projection_matrix", 12),
        calibrated=True,
    )
    if (info.width, info.height) != (width, height):
        raise CameraInfoError(
            f"camera calibration {path} is for {info.width}x{info.height}, the camera publishes "
            f"{width}x{height}: recalibrate at this size or change width/height"
        )
    return info
