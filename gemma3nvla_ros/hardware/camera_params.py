"""camera_node's parameters as plain data (no ROS): default, meaning, range, whether a change at run time
is applied, and the check a value must pass. The node turns each into an rcl_interfaces
ParameterDescriptor and runs :func:`check` at start and on every ``ros2 param set``, so a value is either
refused with a reason or takes effect: never "successful" and ignored."""
from __future__ import annotations

import re
from dataclasses import dataclass

from gemma3nvla_ros.hardware.cameras import ENCODINGS, parse_source

Value = bool | int | float | str


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Value
    description: str
    dynamic: bool = False  # applied at run time; otherwise read_only (fixed when the node starts)
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None
    constraints: str = ""
    any_type: bool = False  # ROS types "-p source:=0" as an integer: declared with dynamic typing

    @property
    def type_name(self) -> str:
        return _TYPE_NAMES[type(self.default)]

    @property
    def expects(self) -> str:
        """What a value must be, for messages: "an integer within 1..100"."""
        if self.any_type:
            return self.constraints
        text = self.type_name
        if self.int_range:
            text += f" within {self.int_range[0]}..{self.int_range[1]}"
        if self.float_range:
            text += f" within {self.float_range[0]:g}..{self.float_range[1]:g}, written with a decimal point"
        return f"{text}, {self.constraints}" if self.constraints else text


_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a floating-point number", str: "a string"}

JPEG_QUALITY_RANGE = (1, 100)  # cv2.IMWRITE_JPEG_QUALITY
FPS_RANGE = (0.1, 240.0)
SIZE_RANGE = (1, 8192)
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")  # one token of a ROS topic name: /cameras/<name>/image_raw

SOURCE = ParamSpec(
    "source", "synthetic",
    "synthetic (moving test pattern) | device index (0) | /dev/videoN or device:/path | file:/path/video.mp4",
    constraints="a string, or an integer device index >= 0", any_type=True,
)
FPS = ParamSpec(
    "fps", 30.0,
    "frames per second. Files and synthetic: the publish pace, changeable at run time. "
    "Devices: requested when the device is opened, so read-only",
    dynamic=True, float_range=FPS_RANGE,
)
PARAMS: tuple[ParamSpec, ...] = (
    SOURCE,
    ParamSpec("name", "", "camera name in /cameras/<name>/...; empty: the node name",
              constraints="letters, digits and _, starting with a letter"),
    ParamSpec("width", 640, "image width requested from the source (resized if it delivers another)",
              int_range=SIZE_RANGE),
    ParamSpec("height", 480, "image height requested from the source (resized if it delivers another)",
              int_range=SIZE_RANGE),
    FPS,
    ParamSpec("encoding", "rgb8", "image_raw encoding", constraints=" | ".join(ENCODINGS)),
    ParamSpec("frame_id", "", "header.frame_id; empty: <name>_optical_frame"),
    ParamSpec("loop", True, "replay a video file from the start when it ends"),
    ParamSpec("publish_compressed", False,
              "publish JPEG on .../image_raw/compressed; at run time, true creates the publisher, "
              "false removes it", dynamic=True),
    ParamSpec("jpeg_quality", 90, "JPEG quality of .../image_raw/compressed; applies from the next frame",
              dynamic=True, int_range=JPEG_QUALITY_RANGE),
    ParamSpec("camera_info_url", "", "file:///path.yaml or a path (camera_calibration format); empty: "
              "uncalibrated CameraInfo (zero K)"),
)
BY_NAME = {p.name: p for p in PARAMS}


def read_only(spec: ParamSpec, source_paced: bool) -> bool:
    """fps paces a file or the synthetic pattern (a timer, re-paced at once) but is only *requested* from a
    device when it is opened: changing it there would need a reopen, so it is read-only for devices."""
    if spec is FPS:
        return not source_paced
    return not spec.dynamic


def source_paced(value: object) -> bool:
    """Whether ``source`` names a paced source; False when it does not parse (the start reports why)."""
    try:
        return parse_source(value).paced  # type: ignore[arg-type]
    except ValueError:
        return False


def check(name: str, value: object) -> str:
    """Why ``value`` is refused for parameter ``name``; "" when it is fine (or the name is not ours:
    other parts of the node, such as use_sim_time, judge their own). Types and ranges are in the
    descriptors too (ROS refuses those first); checked here as well so start and run time agree."""
    spec = BY_NAME.get(name)
    if spec is None:
        return ""
    if name == "source":
        try:
            parse_source(value)  # type: ignore[arg-type]
        except ValueError as exc:
            return str(exc)
        return ""
    reason = _check_type(spec, value)
    if reason:
        return reason
    if spec.int_range and not spec.int_range[0] <= value <= spec.int_range[1]:  # type: ignore[operator]
        return f"{name} must be within {spec.int_range[0]}..{spec.int_range[1]}, not {value}"
    if spec.float_range and not spec.float_range[0] <= value <= spec.float_range[1]:  # type: ignore[operator]
        return f"{name} must be within {spec.float_range[0]:g}..{spec.float_range[1]:g}, not {value}"
    if name == "encoding" and value not in ENCODINGS:
        return f"encoding must be one of {ENCODINGS}, not {value!r}"
    if name == "name" and value and not _NAME.fullmatch(str(value)):
        return f"name {value!r} cannot be part of a topic name: use letters, digits and _, starting with a letter"
    return ""


def _check_type(spec: ParamSpec, value: object) -> str:
    # bool is an int in Python, and ROS keeps integer and double apart: compare exact types.
    if type(value) is type(spec.default):
        return ""
    hint = f" (write {float(value)!r})" if type(spec.default) is float and type(value) is int else ""
    return f"{spec.name} must be {spec.type_name}, not {value!r}{hint}"
