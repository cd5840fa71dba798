"""YAML <-> message conversion on the generated message classes (pure, no DDS)."""
from __future__ import annotations

import array

import numpy as np
import pytest
import yaml

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from gemma3nvla_ros.tools import msg_yaml
from gemma3nvla_ros.tools.msg_yaml import MessageYamlError


def test_joint_state_yaml_reads_like_ros2_echo():
    msg = JointState(name=["a", "b"], position=[0.5, -1.0])
    msg.header.stamp.sec, msg.header.frame_id = 7, "base"
    assert msg_yaml.message_to_yaml(msg) == (
        "header:\n  stamp:\n    sec: 7\n    nanosec: 0\n  frame_id: base\n"
        "name:\n- a\n- b\nposition:\n- 0.5\n- -1.0\nvelocity: []\neffort: []\n")


def test_byte_blobs_are_summarised_short_ones_printed():
    big = Image(height=2, width=100, encoding="rgb8", step=300, data=bytes(600))
    d = msg_yaml.message_to_dict(big)
    assert d["data"] == "<600 bytes>"
    assert "data: '<600 bytes>'" in msg_yaml.message_to_yaml(big)
    assert msg_yaml.message_to_dict(big, truncate_length=None)["data"] == [0] * 600  # --full-length
    small = Image(data=bytes([1, 2, 3]))
    assert msg_yaml.message_to_dict(small)["data"] == [1, 2, 3]


def test_long_sequences_and_strings_truncated_with_ellipsis():
    msg = JointState(name=["x" * 10], position=list(range(200)))
    d = msg_yaml.message_to_dict(msg, truncate_length=5)
    assert d["position"] == [0.0, 1.0, 2.0, 3.0, 4.0, "..."]
    assert d["name"] == ["xxxxx..."]


def test_no_arr_and_no_str_placeholders_as_ros2():
    info = CameraInfo(k=np.arange(9.0), distortion_model="plumb_bob")
    assert msg_yaml.message_to_dict(info)["k"] == [float(i) for i in range(9)]  # numpy -> plain floats
    d = msg_yaml.message_to_dict(JointState(name=["a"], position=[1.0]), no_arr=True)
    assert d["position"] == "<sequence type: double, length: 1>"
    assert d["name"] == "<sequence type: string, length: 1>"
    assert msg_yaml.message_to_dict(info, no_arr=True)["k"] == "<array type: double[9]>"
    assert msg_yaml.message_to_dict(info, no_str=True)["distortion_model"] == "<string length: <9>>"
    yaml.safe_load(msg_yaml.message_to_yaml(info, no_arr=True, no_str=True))  # placeholders stay valid YAML


def test_sequences_of_messages():
    msg = DiagnosticArray(status=[DiagnosticStatus(level=b"\x01", name="bus", values=[KeyValue(key="k", value="v")])])
    d = msg_yaml.message_to_dict(msg)
    assert d["status"] == [{"level": 1, "name": "bus", "message": "", "hardware_id": "",
                            "values": [{"key": "k", "value": "v"}]}]
    assert msg_yaml.message_to_dict(msg, no_arr=True)["status"] == (
        "<sequence type: diagnostic_msgs/msg/DiagnosticStatus, length: 1>")


def test_field_path():
    msg = JointState(name=["a"])
    msg.header.stamp.sec = 3
    value, spec = msg_yaml.get_field(msg, "header.stamp")
    assert msg_yaml.field_to_yaml(value, spec) == "sec: 3\nnanosec: 0\n"
    value, spec = msg_yaml.get_field(msg, "header.stamp.sec")
    assert msg_yaml.field_to_yaml(value, spec) == "3\n"
    value, spec = msg_yaml.get_field(msg, "")
    assert spec is None and msg_yaml.field_to_yaml(value, spec) == msg_yaml.message_to_yaml(msg)
    with pytest.raises(MessageYamlError, match="'nope' is not a field of std_msgs/msg/Header"):
        msg_yaml.get_field(msg, "header.nope")
    with pytest.raises(MessageYamlError):
        msg_yaml.get_field(msg, "name.x")


def test_fill_nested_and_sequences_of_messages():
    values = msg_yaml.parse_yaml_values(
        "{joint_names: [a, b], points: [{positions: [1, 2.5], time_from_start: {sec: 1, nanosec: 5}}, {}]}")
    msg = msg_yaml.fill_message(JointTrajectory, values)
    assert msg.joint_names == ["a", "b"]
    assert len(msg.points) == 2
    assert msg.points[0].positions == array.array("d", [1.0, 2.5])  # ints accepted for float fields
    assert msg.points[0].time_from_start.sec == 1 and msg.points[0].time_from_start.nanosec == 5
    assert msg.points[1].positions == array.array("d")


def test_fill_bytes_and_fixed_arrays():
    msg = msg_yaml.fill_message(DiagnosticStatus, {"level": 2})
    assert msg.level == b"\x02"
    assert msg_yaml.fill_message(Image, {"data": [1, 2, 3]}).data == array.array("B", [1, 2, 3])
    assert list(msg_yaml.fill_message(CameraInfo, {"k": list(range(9))}).k) == [float(i) for i in range(9)]
    with pytest.raises(MessageYamlError, match="CameraInfo.k"):
        msg_yaml.fill_message(CameraInfo, {"k": [1.0, 2.0]})  # wrong length for double[9]
    with pytest.raises(MessageYamlError, match="level"):
        msg_yaml.fill_message(DiagnosticStatus, {"level": 256})


def test_fill_round_trips_through_dict():
    d = {"header": {"stamp": {"sec": 1, "nanosec": 2}, "frame_id": "f"}, "name": ["j"], "position": [0.25],
         "velocity": [], "effort": [1.5]}
    assert msg_yaml.message_to_dict(msg_yaml.fill_message(JointState, d)) == d


@pytest.mark.parametrize("values,needle", [
    ({"nme": ["a"]}, "no field 'nme'"),
    ({"position": ["a"]}, "expected a number"),
    ({"position": 1.0}, "expected a list"),
    ({"header": {"stamp": {"sec": 1.5}}}, "expected an integer"),
    ({"header": {"stamp": {"nanosec": -1}}}, "header.stamp.nanosec"),
    ({"header": 3}, "expected a mapping"),
])
def test_fill_errors_name_the_field(values, needle):
    with pytest.raises(MessageYamlError, match=needle):
        msg_yaml.fill_message(JointState, values)


def test_bool_and_strings():
    assert msg_yaml.fill_message(SetBool.Request, {"data": True}).data is True
    with pytest.raises(MessageYamlError, match="std_srvs/srv/SetBool_Request.data: expected true or false"):
        msg_yaml.fill_message(SetBool.Request, {"data": 1})
    assert msg_yaml.fill_message(JointState, {"header": {"frame_id": 12}}).header.frame_id == "12"


def test_now_and_auto_stamps():
    now = lambda: (42, 7)  # noqa: E731
    msg = msg_yaml.fill_message(JointState, {"header": "auto"}, now)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (42, 7)
    msg = msg_yaml.fill_message(JointState, {"header": {"stamp": "now", "frame_id": "x"}}, now)
    assert msg.header.stamp.sec == 42 and msg.header.frame_id == "x"
    with pytest.raises(MessageYamlError):
        msg_yaml.fill_message(JointState, {"header": "now"}, now)


def test_parse_yaml_values():
    assert msg_yaml.parse_yaml_values("") == {}
    assert msg_yaml.parse_yaml_values("{data: 1}") == {"data": 1}
    assert msg_yaml.parse_yaml_values("data: 1") == {"data": 1}
    with pytest.raises(MessageYamlError, match="dictionary"):
        msg_yaml.parse_yaml_values("[1, 2]")
    with pytest.raises(MessageYamlError, match="not valid YAML"):
        msg_yaml.parse_yaml_values("{a: [")
