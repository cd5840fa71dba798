"""What `ros2 param set/get` and `ros2 topic echo` on a ROS machine put on the wire, made by rosbags.

The requests are serialized with rosbags (an independent ROS 2 CDR implementation) exactly as
rmw_cyclonedds frames them (encapsulation header, 8-byte client guid, 8-byte sequence number, body),
written raw on the service's request topic, and the replies decoded with rosbags — so a mistake shared
by our serializer and our service layer cannot hide here.
"""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling helpers (importlib mode)
from msg_rosbags_ref import typestore  # noqa: E402

PARAM_NODE = """
import sys
from gemma3nvla_ros.ros import rclpy, Node
rclpy.init(args=sys.argv)
node = Node("policy_node")
node.declare_parameter("task", "idle")
node.declare_parameter("gain", 0.5)
print("params up", flush=True)
try:
    rclpy.spin(node)
except BaseException:
    pass
"""

STORE = typestore("jazzy")  # rosbags' Jazzy types plus the rcl_interfaces services
T = STORE.types


def _value(**fields):
    defaults = dict(
        type=0, bool_value=False, integer_value=0, double_value=0.0, string_value="",
        byte_array_value=np.array([], dtype=np.uint8), bool_array_value=np.array([], dtype=bool),
        integer_array_value=np.array([], dtype=np.int64), double_array_value=np.array([], dtype=np.float64),
        string_array_value=[],
    )
    defaults.update(fields)
    return T["rcl_interfaces/msg/ParameterValue"](**defaults)


def _call(rclpy, wait_until, service: str, srv: str, request) -> object:
    from gemma3nvla_ros.ros import Node
    from gemma3nvla_ros.runtime import dds

    node = Node("ros2cli_wire")
    part = node.context.participant()
    qos = dds.EndpointQos(reliable=True, depth=10)
    name = service.lstrip("/")
    writer = dds.RawWriter(part, f"rq/{name}Request", f"rcl_interfaces::srv::dds_::{srv}_Request_", qos, b"")
    reader = dds.RawReader(part, f"rr/{name}Reply", f"rcl_interfaces::srv::dds_::{srv}_Response_", qos, b"")
    body = bytes(STORE.serialize_cdr(request, f"rcl_interfaces/srv/{srv}_Request"))
    header = struct.pack("<Qq", 0xC0FFEE, 1)
    replies: list = []

    def step():
        writer.write(body[:4] + header + body[4:])
        rclpy.spin_once(node, timeout_sec=0.2)
        replies.extend(reader.take())

    assert wait_until(lambda: bool(replies), 30, step), f"no reply from {service}"
    data = bytes(replies[0][0])
    assert data[4:20] == header, "the reply must carry the request's guid and sequence number"
    return STORE.deserialize_cdr(data[:4] + data[20:], f"rcl_interfaces/srv/{srv}_Response")


@pytest.fixture
def param_node(proc):
    p = proc(PARAM_NODE, "--ros-args", "-r", "__ns:=/robot")
    p.wait_for("params up")
    return p


def test_ros2_param_set_and_get_from_rosbags_bytes(rclpy, wait_until, param_node) -> None:
    Param = T["rcl_interfaces/msg/Parameter"]
    request = T["rcl_interfaces/srv/SetParameters_Request"](parameters=[
        Param(name="task", value=_value(type=4, string_value="put the cube in the box")),
        Param(name="gain", value=_value(type=2, integer_value=3)),
    ])
    results = _call(rclpy, wait_until, "/robot/policy_node/set_parameters", "SetParameters", request).results
    assert results[0].successful
    assert not results[1].successful
    assert results[1].reason == "Wrong parameter type, expected 'Type.DOUBLE' got 'Type.INTEGER'"

    request = T["rcl_interfaces/srv/GetParameters_Request"](names=["task", "gain"])
    values = _call(rclpy, wait_until, "/robot/policy_node/get_parameters", "GetParameters", request).values
    assert (values[0].type, values[0].string_value) == (4, "put the cube in the box")
    assert (values[1].type, values[1].double_value) == (3, 0.5)


def test_ros2_param_list_from_rosbags_bytes(rclpy, wait_until, param_node) -> None:
    request = T["rcl_interfaces/srv/ListParameters_Request"](prefixes=[], depth=0)
    result = _call(rclpy, wait_until, "/robot/policy_node/list_parameters", "ListParameters", request).result
    assert {"task", "gain", "use_sim_time"} <= set(result.names)
