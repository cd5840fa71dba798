"""Parameters: rclpy semantics, overrides from -p/--params-file, ROS-format YAML, the wire services."""
from __future__ import annotations

import pytest

PARAMS_YAML = """
/**:
  ros__parameters:
    use_sim_time: false
    shared: 1
policy_node:
  ros__parameters:
    task: "pick the cube"
    chunk:
      size: 50
      threshold: 0.5
/robot/camera_node:
  ros__parameters:
    fps: 30
    devices: [0, 2]
/**/bridge:
  ros__parameters:
    port: /dev/ttyACM0
"""


def test_declare_get_set_like_rclpy(rclpy):
    from gemma3nvla_ros.ros import Node, Parameter, SetParametersResult
    from gemma3nvla_ros.runtime.parameter import ParameterNotDeclaredException
    node = Node("params")
    p = node.declare_parameter("gain", 1.5)
    assert (p.name, p.value, p.type_) == ("gain", 1.5, Parameter.Type.DOUBLE)
    assert node.get_parameter("use_sim_time").value is False
    assert node.has_parameter("gain") and not node.has_parameter("nope")
    with pytest.raises(ParameterNotDeclaredException):
        node.get_parameter("nope")
    assert node.get_parameter_or("nope", Parameter("nope", value=3)).value == 3
    (res,) = node.set_parameters([Parameter("gain", value=2)])
    assert not res.successful
    assert res.reason == "Wrong parameter type, expected 'Type.DOUBLE' got 'Type.INTEGER'"
    assert isinstance(res, SetParametersResult)
    seen = []

    def guard(params):
        seen.extend(p.name for p in params)
        bad = [p for p in params if p.name == "gain" and p.value < 0]
        return SetParametersResult(successful=not bad, reason="gain must be >= 0" if bad else "")

    node.add_on_set_parameters_callback(guard)
    assert node.set_parameters([Parameter("gain", value=-1.0)])[0].reason == "gain must be >= 0"
    assert node.get_parameter("gain").value == 1.5
    assert node.set_parameters([Parameter("gain", value=3.0)])[0].successful
    assert node.get_parameter("gain").value == 3.0 and seen == ["gain", "gain"]
    node.remove_on_set_parameters_callback(guard)
    with pytest.raises(ParameterNotDeclaredException):
        node.set_parameters([Parameter("nope", value=1)])
    out = node.declare_parameters("chunk", [("size", 50), ("strategy", "latest")])
    assert [q.name for q in out] == ["chunk.size", "chunk.strategy"]
    assert [q.value for q in node.get_parameters(["chunk.size", "chunk.strategy"])] == [50, "latest"]


def test_declaring_only_a_name_is_dynamically_typed_like_rclpy(rclpy):
    # rclpy: `declare_parameter(name)` / a 1-tuple sets descriptor.dynamic_typing (what `ros2 param describe` shows)
    from gemma3nvla_ros.ros import Node, Parameter
    node = Node("dyn_params")
    node.declare_parameter("anything")
    node.declare_parameters("", [("other",)])
    assert node.describe_parameter("anything").dynamic_typing
    assert node.describe_parameter("other").dynamic_typing
    assert not node.describe_parameter("use_sim_time").dynamic_typing
    assert node.set_parameters([Parameter("anything", value=1)])[0].successful
    assert node.set_parameters([Parameter("anything", value="text")])[0].successful
    node.destroy_node()


def test_read_only_and_ranges(rclpy):
    from gemma3nvla_ros.ros import Node, Parameter, ParameterDescriptor, rcl_interfaces
    node = Node("ro")
    node.declare_parameter("port", "/dev/ttyACM0", ParameterDescriptor(read_only=True))
    res = node.set_parameters([Parameter("port", value="/dev/null")])[0]
    assert not res.successful and "read-only" in res.reason
    d = ParameterDescriptor(floating_point_range=[rcl_interfaces.msg.FloatingPointRange(from_value=0.0, to_value=1.0, step=0.0)])
    node.declare_parameter("alpha", 0.5, d)
    assert not node.set_parameters([Parameter("alpha", value=1.5)])[0].successful
    assert node.set_parameters([Parameter("alpha", value=1.0)])[0].successful


def test_params_yaml_resolution(tmp_path):
    from gemma3nvla_ros.runtime.arguments import parse_ros_args
    from gemma3nvla_ros.runtime.params_file import node_key_matches, overrides_for_node, parse_params_yaml
    f = tmp_path / "p.yaml"
    f.write_text(PARAMS_YAML)
    keys = [k for k, _ in parse_params_yaml(PARAMS_YAML)]
    assert keys == ["/**", "policy_node", "/robot/camera_node", "/**/bridge"]
    args = parse_ros_args(["--ros-args", "--params-file", str(f), "-p", "policy_node:task:=stack", "-p", "shared:=2"])
    pol = overrides_for_node(args, "policy_node", "/policy_node")
    assert pol == {"use_sim_time": False, "shared": 2, "task": "stack", "chunk.size": 50, "chunk.threshold": 0.5}
    cam = overrides_for_node(args, "camera_node", "/robot/camera_node")
    assert cam["fps"] == 30 and cam["devices"] == [0, 2] and "task" not in cam
    file_only = parse_ros_args(["--ros-args", "--params-file", str(f)])
    assert overrides_for_node(file_only, "policy_node", "/other_ns/policy_node").get("task") is None
    assert node_key_matches("/**/bridge", "/a/b/bridge") and node_key_matches("/**/bridge", "/bridge")
    assert node_key_matches("/robot/*", "/robot/x") and not node_key_matches("/robot/*", "/robot/x/y")


def test_overrides_reach_declared_parameters(tmp_path):
    from gemma3nvla_ros.ros import Node
    from gemma3nvla_ros.runtime import rclpy_api
    from gemma3nvla_ros.runtime.parameter import InvalidParameterTypeException
    f = tmp_path / "p.yaml"
    f.write_text(PARAMS_YAML)
    rclpy_api.init(args=["--ros-args", "--params-file", str(f), "-p", "policy_node:fps:=15"])
    try:
        node = Node("policy_node")
        assert node.declare_parameter("task", "").value == "pick the cube"
        assert node.declare_parameter("chunk.size", 10).value == 50
        assert node.declare_parameter("fps", 30).value == 15
        assert node.declare_parameter("task2", "x", ignore_override=True).value == "x"
        with pytest.raises(InvalidParameterTypeException):
            node.declare_parameter("shared", 1.0)  # override is an int: rclpy refuses, too
        auto = Node("camera_node", namespace="/robot", automatically_declare_parameters_from_overrides=True)
        assert auto.get_parameter("devices").value == [0, 2]
        free = Node("free", allow_undeclared_parameters=True)
        assert free.get_parameter("anything").type_.name == "NOT_SET"
    finally:
        rclpy_api.try_shutdown()


PARAM_NODE = """
import sys
from gemma3nvla_ros.ros import rclpy, Node, SetParametersResult
rclpy.init(args=sys.argv)
node = Node("policy_node")
node.declare_parameter("task", "idle")
node.declare_parameter("gain", 0.5)
def check(params):
    for p in params:
        if p.name == "task" and not p.value.strip():
            return SetParametersResult(successful=False, reason="task must not be empty")
    return SetParametersResult(successful=True)
node.add_on_set_parameters_callback(check)
print("params up", flush=True)
try:
    rclpy.spin(node)
except BaseException:
    pass
"""


def test_parameter_services_over_the_wire(rclpy, proc):
    from gemma3nvla_ros.ros import Node, Parameter, rcl_interfaces
    p = proc(PARAM_NODE, "--ros-args", "-r", "__ns:=/robot")
    p.wait_for("params up")
    node = Node("ros2_param_cli")
    srv = rcl_interfaces.srv

    def call(kind, name, request):
        client = node.create_client(kind, f"/robot/policy_node/{name}")
        assert client.wait_for_service(timeout_sec=20.0), p.lines
        return client.call(request, timeout_sec=10.0)

    listed = call(srv.ListParameters, "list_parameters", srv.ListParameters.Request())
    assert {"task", "gain", "use_sim_time"} <= set(listed.result.names)
    got = call(srv.GetParameters, "get_parameters", srv.GetParameters.Request(names=["task", "gain"]))
    assert got.values[0].string_value == "idle" and got.values[1].double_value == 0.5
    types = call(srv.GetParameterTypes, "get_parameter_types", srv.GetParameterTypes.Request(names=["gain", "nope"]))
    assert list(types.types) == [3, 0]
    res = call(srv.SetParameters, "set_parameters", srv.SetParameters.Request(parameters=[
        Parameter("task", value="stack the cubes").to_parameter_msg(),
        Parameter("gain", value=2).to_parameter_msg(),
        Parameter("unknown", value=1).to_parameter_msg(),
        Parameter("task", value="  ").to_parameter_msg(),
    ])).results
    assert res[0].successful
    assert not res[1].successful and res[1].reason == "Wrong parameter type, expected 'Type.DOUBLE' got 'Type.INTEGER'"
    assert not res[2].successful and "undeclared" in res[2].reason
    assert not res[3].successful and res[3].reason == "task must not be empty"
    got = call(srv.GetParameters, "get_parameters", srv.GetParameters.Request(names=["task"]))
    assert got.values[0].string_value == "stack the cubes"
    desc = call(srv.DescribeParameters, "describe_parameters", srv.DescribeParameters.Request(names=["gain"]))
    assert desc.descriptors[0].name == "gain" and desc.descriptors[0].type == 3
    atomic = call(srv.SetParametersAtomically, "set_parameters_atomically", srv.SetParametersAtomically.Request(
        parameters=[Parameter("gain", value=1.0).to_parameter_msg(), Parameter("nope", value=1).to_parameter_msg()]))
    assert not atomic.result.successful


def test_parameter_events_are_published(rclpy, wait_until):
    from gemma3nvla_ros.ros import Node, Parameter, QoSProfile, rcl_interfaces
    node = Node("evented")
    watcher = Node("event_watcher")
    events = []
    watcher.create_subscription(rcl_interfaces.msg.ParameterEvent, "/parameter_events", events.append,
                                QoSProfile(depth=100))
    assert wait_until(lambda: watcher.count_publishers("/parameter_events") >= 2)
    node.declare_parameter("speed", 1.0)
    node.set_parameters([Parameter("speed", value=2.0)])

    def seen(kind):
        return [p for e in events if e.node == "/evented" for p in getattr(e, kind) if p.name == "speed"]

    assert wait_until(lambda: seen("new_parameters") and seen("changed_parameters"), 10,
                      lambda: rclpy.spin_once(watcher, timeout_sec=0.05))
    assert seen("changed_parameters")[0].value.double_value == 2.0
