"""camera_node's parameters as plain data: every one described, which change at run time, and the
checks (with the reason a value is refused)."""
from __future__ import annotations

import pytest

from gemma3nvla_ros.hardware import camera_params as cp


def test_every_parameter_is_described_and_typed():
    assert [p.name for p in cp.PARAMS] == [
        "source", "name", "width", "height", "fps", "encoding", "frame_id", "loop", "publish_compressed",
        "jpeg_quality", "camera_info_url",
    ]
    for spec in cp.PARAMS:
        assert spec.description and spec.expects, spec.name
        assert cp.check(spec.name, spec.default) == "", spec.name  # defaults pass their own checks


def test_only_what_is_applied_at_run_time_is_writable():
    def writable(paced: bool) -> set[str]:
        return {p.name for p in cp.PARAMS if not cp.read_only(p, paced)}

    assert writable(paced=True) == {"fps", "publish_compressed", "jpeg_quality"}
    assert writable(paced=False) == {"publish_compressed", "jpeg_quality"}  # a device's fps is set at open
    assert cp.source_paced("synthetic") and cp.source_paced("file:/a.mp4")
    assert not cp.source_paced(0) and not cp.source_paced("/dev/video2") and not cp.source_paced("webcam")


@pytest.mark.parametrize(
    "name,value,needle",
    [
        ("jpeg_quality", 0, "jpeg_quality must be within 1..100, not 0"),
        ("jpeg_quality", 101, "within 1..100"),
        ("jpeg_quality", "high", "jpeg_quality must be an integer"),
        ("jpeg_quality", True, "must be an integer"),  # bool is an int to Python, not to ROS
        ("fps", 0.0, "fps must be within 0.1..240"),
        ("fps", float("nan"), "fps must be within"),
        ("fps", 30, "(write 30.0)"),
        ("publish_compressed", 1, "must be a boolean"),
        ("encoding", "mono8", "encoding must be one of"),
        ("name", "cam-1", "cannot be part of a topic name"),
        ("source", -1, "device index must be 0 or more"),
        ("source", 2.5, "must be a string or a device index"),
        ("source", True, "must be a string or a device index"),
        ("source", "webcam", "not understood"),
    ],
)
def test_bad_values_are_refused_with_the_reason(name, value, needle):
    assert needle in cp.check(name, value)


@pytest.mark.parametrize(
    "name,value",
    [("jpeg_quality", 1), ("jpeg_quality", 100), ("fps", 0.1), ("fps", 240.0), ("source", 0), ("source", "0"),
     ("name", "wrist_2"), ("name", ""), ("use_sim_time", "anything: not ours to judge")],
)
def test_good_values_pass(name, value):
    assert cp.check(name, value) == ""
