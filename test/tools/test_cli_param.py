"""`gemma3nvla-ros param|service` against real rclpy nodes: this package's, and small ones of the tests' own
where a node must refuse a value with a reason, or serve a service."""
from __future__ import annotations

import textwrap
import time

import pytest
import yaml

# Listen longer than the default 3.5 s: on a loaded 2-core machine Fast DDS may announce a node later.
LISTEN = ("--spin-time", "8")

# A node that refuses some values itself (an on-set callback with a reason) and declares a
# parameter with a description and a range, for `param set` refusals and `param describe`.
GUARD_NODE = textwrap.dedent("""
    import sys
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor, SetParametersResult

    rclpy.init(args=sys.argv)
    node = rclpy.create_node("param_guard")
    node.declare_parameter("speed", 1.0, ParameterDescriptor(
        description="max joint speed (rad/s)",
        floating_point_range=[FloatingPointRange(from_value=0.0, to_value=2.0, step=0.0)]))
    node.declare_parameter("mode", "slow")
    node.declare_parameter("label", "")

    def on_set(params):
        for p in params:
            if p.name == "mode" and p.value not in ("slow", "normal"):
                return SetParametersResult(successful=False, reason=f"mode {p.value!r} is not allowed")
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)
    print("READY", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
""")

SWITCH_SERVER = textwrap.dedent("""
    import sys
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from std_srvs.srv import SetBool

    rclpy.init(args=sys.argv)
    node = rclpy.create_node("switch")

    def on_set(request, response):
        response.success = True
        response.message = f"data={request.data}"
        return response

    node.create_service(SetBool, "~/enable", on_set)
    print("READY", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
""")


@pytest.fixture(scope="module")
def guard(start_process):
    node = start_process(GUARD_NODE, name="param_guard")
    node.wait_for("READY")
    return node


def test_param_list_get_set_dump(robot, cli):
    listed = cli("param", "list", *LISTEN, "/so101_bridge")
    assert listed.returncode == 0, listed.stderr
    names = [line.strip() for line in listed.stdout.splitlines()]
    assert {"publish_rate", "mode", "joint_names", "use_sim_time"} <= set(names)
    assert names == sorted(names) and all(line.startswith("  ") for line in listed.stdout.splitlines())

    assert cli("param", "get", "/so101_bridge", "publish_rate").stdout.strip() == "Double value is: 100.0"
    assert cli("param", "get", "so101_bridge", "mode").stdout.strip() == "String value is: sim"
    assert cli("param", "get", "so101_bridge", "mode", "--hide-type").stdout.strip() == "sim"

    ok = cli("param", "set", "/wrist_cam", "jpeg_quality", "70")
    assert ok.returncode == 0 and ok.stdout.strip() == "Set parameter successful", ok
    assert cli("param", "get", "/wrist_cam", "jpeg_quality").stdout.strip() == "Integer value is: 70"

    dumped = yaml.safe_load(cli("param", "dump", "/wrist_cam").stdout)
    params = dumped["/wrist_cam"]["ros__parameters"]
    assert params["width"] == robot.camera_width and params["jpeg_quality"] == 70 and params["source"] == "synthetic"


def test_param_list_without_node_lists_every_node(robot, guard, cli):
    out = cli("param", "list", *LISTEN)
    assert out.returncode == 0, out.stderr
    sections: dict[str, list[str]] = {}
    for line in out.stdout.splitlines():
        if line.startswith("  "):
            sections[list(sections)[-1]].append(line.strip())  # under the last heading
        else:
            sections[line.rstrip(":")] = []
    assert {"/so101_bridge", "/wrist_cam", "/param_guard"} <= set(sections), out.stdout
    assert not any(name.startswith("/_") for name in sections)  # not the CLI's own node
    assert "publish_rate" in sections["/so101_bridge"] and "jpeg_quality" in sections["/wrist_cam"]
    assert sections["/param_guard"] == ["label", "mode", "speed", "start_type_description_service",
                                        "use_sim_time"]
    typed = cli("param", "list", *LISTEN, "/param_guard", "--param-type")
    assert "  speed (type: double)" in typed.stdout.splitlines()


def test_param_set_wrong_type_refused_with_reason(robot, cli):
    # `1` parses as an integer (as in ros2 param set): rclpy refuses it for the DOUBLE parameter
    out = cli("param", "set", "/so101_bridge", "command_timeout", "1")
    assert out.returncode == 1
    assert out.stderr.strip() == ("Setting parameter failed: Wrong parameter type, "
                                  "expected 'Type.DOUBLE' got 'Type.INTEGER'")
    assert cli("param", "get", "/so101_bridge", "command_timeout").stdout.strip() == "Double value is: 0.5"
    read_only = cli("param", "set", "/so101_bridge", "publish_rate", "50.0")
    assert read_only.returncode == 1 and "read-only" in read_only.stderr.lower()
    undeclared = cli("param", "get", "/so101_bridge", "no_such_param")
    assert undeclared.returncode == 1 and "not declared" in undeclared.stderr


def test_param_set_refused_by_the_node_with_its_reason(guard, cli):
    refused = cli("param", "set", "/param_guard", "mode", "fast")
    assert refused.returncode == 1
    assert refused.stderr.strip() == "Setting parameter failed: mode 'fast' is not allowed"
    assert cli("param", "get", "/param_guard", "mode").stdout.strip() == "String value is: slow"
    out_of_range = cli("param", "set", "/param_guard", "speed", "3.5")
    assert out_of_range.returncode == 1 and out_of_range.stderr.startswith("Setting parameter failed: ")
    accepted = cli("param", "set", "/param_guard", "mode", "normal")
    assert accepted.returncode == 0 and accepted.stdout.strip() == "Set parameter successful"
    assert cli("param", "get", "/param_guard", "mode").stdout.strip() == "String value is: normal"
    quoted = cli("param", "set", "/param_guard", "label", "'5'")  # YAML quotes make a string, as in ros2
    assert quoted.returncode == 0, quoted.stderr
    assert cli("param", "get", "/param_guard", "label").stdout.strip() == "String value is: 5"


def test_param_describe(guard, cli):
    out = cli("param", "describe", "/param_guard", "speed", "start_type_description_service")
    assert out.returncode == 0, out.stderr
    assert out.stdout == textwrap.dedent("""\
        Parameter name: speed
          Type: double
          Description: max joint speed (rad/s)
          Constraints:
            Min value: 0.0
            Max value: 2.0
        Parameter name: start_type_description_service
          Type: boolean
          Description: If enabled, start the ~/get_type_description service.
          Constraints:
            Read only: true
        """)
    missing = cli("param", "describe", "/param_guard", "no_such_param")
    assert missing.returncode == 1 and "not declared" in missing.stderr


def test_param_on_missing_node_times_out_clearly(cli):
    t0 = time.monotonic()
    out = cli("param", "get", "/no_such_node", "x", "--timeout", "1")
    assert out.returncode == 1
    assert "Node not found: /no_such_node" in out.stderr
    assert time.monotonic() - t0 < 15


def test_service_call(start_process, cli):
    server = start_process(SWITCH_SERVER, name="switch")
    server.wait_for("READY")
    out = cli("service", "call", "/switch/enable", "std_srvs/srv/SetBool", "{data: true}")
    assert out.returncode == 0, out.stderr
    assert "requester: making request: std_srvs.srv.SetBool_Request(data=True)" in out.stdout
    assert "response:\nstd_srvs.srv.SetBool_Response(success=True, message='data=True')" in out.stdout
    bad = cli("service", "call", "/switch/enable", "std_srvs/srv/SetBool", "{data: 1}")
    assert bad.returncode == 1 and "expected true or false" in bad.stderr
