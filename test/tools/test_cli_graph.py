"""`gemma3nvla-ros topic|node|param|service` against real nodes of this package over DDS.

Rates are checked with generous bounds only (a shared CI box is no timing rig)."""
from __future__ import annotations

import math
import re
import textwrap
import time

import yaml

from .conftest import CAMERA_HEIGHT, CAMERA_WIDTH

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
IMAGE = "/cameras/wrist_cam/image_raw"


def _docs(text: str) -> list:
    """The messages `topic echo` printed (YAML documents separated by ---)."""
    return [d for d in yaml.safe_load_all(text) if d is not None]


def test_topic_list_shows_types(robot, cli):
    plain = cli("topic", "list")
    assert plain.returncode == 0, plain.stderr
    assert "/joint_states" in plain.stdout.splitlines()
    typed = cli("topic", "list", "-t")
    lines = typed.stdout.splitlines()
    assert "/joint_states [sensor_msgs/msg/JointState]" in lines
    assert f"{IMAGE} [sensor_msgs/msg/Image]" in lines
    assert "/joint_commands [sensor_msgs/msg/JointState]" in lines


def test_node_list_shows_nodes_hides_cli(robot, cli):
    out = cli("node", "list")
    assert out.returncode == 0, out.stderr
    names = out.stdout.split()
    assert "/so101_bridge" in names and "/wrist_cam" in names
    assert not any(n.startswith("/_") for n in names)  # the CLI's own node is hidden...
    everything = cli("node", "list", "-a").stdout.split()
    assert any(n.startswith("/_gemma3nvla_ros_cli_") for n in everything)  # ...but there
    assert cli("node", "list", "-c").stdout.strip() == str(len(names))


def test_echo_once_joint_state(robot, cli):
    out = cli("topic", "echo", "/joint_states", "--once")
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip().endswith("---")
    (msg,) = _docs(out.stdout)
    assert msg["name"] == JOINTS
    assert len(msg["position"]) == 6 and all(isinstance(p, float) for p in msg["position"])
    assert msg["header"]["stamp"]["sec"] > 0
    assert list(msg) == ["header", "name", "position", "velocity", "effort"]  # definition order
    field = cli("topic", "echo", "/joint_states", "sensor_msgs/msg/JointState", "--once", "--field", "name")
    assert _docs(field.stdout) == [JOINTS]


def test_echo_best_effort_camera_summarises_blob(robot, cli):
    # the camera publishes with sensor-data QoS (best effort): the automatic QoS must still receive it
    out = cli("topic", "echo", IMAGE, "--once", "--timeout", "10")
    assert out.returncode == 0, out.stderr
    (msg,) = _docs(out.stdout)
    assert msg["width"] == CAMERA_WIDTH and msg["encoding"] == "rgb8"
    assert msg["data"] == f"<{CAMERA_WIDTH * CAMERA_HEIGHT * 3} bytes>"
    assert f"data: '<{CAMERA_WIDTH * CAMERA_HEIGHT * 3} bytes>'" in out.stdout
    no_arr = cli("topic", "echo", IMAGE, "--once", "--no-arr", "--timeout", "10")
    assert _docs(no_arr.stdout)[0]["data"] == f"<array type: uint8, length: {CAMERA_WIDTH * CAMERA_HEIGHT * 3}>"


def test_hz_reports_the_bridge_rate(robot, cli):
    out = cli("topic", "hz", "/joint_states", "--duration", "2.5")
    assert out.returncode == 0, out.stderr
    rates = [float(m) for m in re.findall(r"average rate: ([0-9.]+)", out.stdout)]
    assert rates, out.stdout
    assert 50 < rates[-1] < 150, out.stdout  # configured 100 Hz
    assert re.search(r"min: [0-9.]+s max: [0-9.]+s std dev: [0-9.]+s window: \d+", out.stdout)


def test_pub_moves_the_simulated_arm(robot, cli):
    def elbow() -> float:
        out = cli("topic", "echo", "/joint_states", "--once", "--field", "position")
        return _docs(out.stdout)[0][JOINTS.index("elbow_flex")]

    start = elbow()
    target = 0.3 if start < 0.15 else 0.0
    pub = cli("topic", "pub", "/joint_commands", "sensor_msgs/msg/JointState",
              f"{{name: [elbow_flex], position: [{target}]}}", "--rate", "20", "--times", "20")
    assert pub.returncode == 0, pub.stderr
    assert "publisher: beginning loop" in pub.stdout and "publishing #1: sensor_msgs.msg.JointState(" in pub.stdout
    deadline = time.monotonic() + 10
    now = elbow()
    while abs(now - target) > 0.02 and time.monotonic() < deadline:
        now = elbow()
    assert abs(now - target) < 0.02, (start, now, target)


def test_pub_refuses_bad_yaml_without_waiting(cli):
    out = cli("topic", "pub", "/joint_commands", "sensor_msgs/msg/JointState", "{nme: [a]}", "--once", timeout=15)
    assert out.returncode == 1
    assert "no field 'nme'" in out.stderr
    bad_type = cli("topic", "pub", "/x", "sensor_msgs/msg/NoSuch", "{}", "--once", timeout=15)
    assert bad_type.returncode == 1 and "NoSuch" in bad_type.stderr


def test_echo_unknown_topic_fails_clearly(cli):
    out = cli("topic", "echo", "/not_there", "--spin-time", "0.5")
    assert out.returncode == 1
    assert "Could not determine the type" in out.stderr


def test_param_list_get_set_dump(robot, cli):
    listed = cli("param", "list", "/so101_bridge")
    assert listed.returncode == 0, listed.stderr
    names = [line.strip() for line in listed.stdout.splitlines()]
    assert {"publish_rate", "mode", "joint_names", "use_sim_time"} <= set(names)
    assert all(line.startswith("  ") for line in listed.stdout.splitlines())

    assert cli("param", "get", "/so101_bridge", "publish_rate").stdout.strip() == "Double value is: 100.0"
    assert cli("param", "get", "so101_bridge", "mode").stdout.strip() == "String value is: sim"

    ok = cli("param", "set", "/wrist_cam", "jpeg_quality", "70")
    assert ok.returncode == 0 and ok.stdout.strip() == "Set parameter successful", ok
    assert cli("param", "get", "/wrist_cam", "jpeg_quality").stdout.strip() == "Integer value is: 70"

    dumped = yaml.safe_load(cli("param", "dump", "/wrist_cam").stdout)
    params = dumped["/wrist_cam"]["ros__parameters"]
    assert params["width"] == CAMERA_WIDTH and params["jpeg_quality"] == 70 and params["source"] == "synthetic"


def test_param_set_refused_with_reason(robot, cli):
    # `100` parses as an integer (as in ros2 param set): the DOUBLE parameter refuses it
    out = cli("param", "set", "/so101_bridge", "publish_rate", "100")
    assert out.returncode == 1
    assert out.stderr.strip() == ("Setting parameter failed: Wrong parameter type, "
                                  "expected 'Type.DOUBLE' got 'Type.INTEGER'")
    assert cli("param", "get", "/so101_bridge", "publish_rate").stdout.strip() == "Double value is: 100.0"
    undeclared = cli("param", "get", "/so101_bridge", "no_such_param")
    assert undeclared.returncode == 1 and "not declared" in undeclared.stderr


def test_param_on_missing_node_times_out_clearly(cli):
    t0 = time.monotonic()
    out = cli("param", "get", "/no_such_node", "x", "--timeout", "1")
    assert out.returncode == 1
    assert "Node not found: /no_such_node" in out.stderr
    assert time.monotonic() - t0 < 15


SERVER = textwrap.dedent("""
    import sys
    from gemma3nvla_ros.ros import rclpy, Node, std_srvs
    rclpy.init(args=sys.argv)
    node = Node("switch")
    def on_set(request, response):
        response.success = True
        response.message = f"data={request.data}"
        return response
    node.create_service(std_srvs.srv.SetBool, "~/enable", on_set)
    print("READY", flush=True)
    try:
        rclpy.spin(node)
    except BaseException:
        pass
""")


def test_service_call(cli, tmp_path):
    import os
    import subprocess
    import sys

    from .conftest import REPO
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True, cwd=REPO,
                              env=dict(os.environ))
    try:
        assert server.stdout.readline().strip() == "READY"
        out = cli("service", "call", "/switch/enable", "std_srvs/srv/SetBool", "{data: true}")
        assert out.returncode == 0, out.stderr
        assert "requester: making request: std_srvs.srv.SetBool_Request(data=True)" in out.stdout
        assert "response:\nstd_srvs.srv.SetBool_Response(success=True, message='data=True')" in out.stdout
    finally:
        server.terminate()
        server.wait(10)


def test_hz_stats_math():
    from gemma3nvla_ros.tools.topic_verbs import RateStats
    stats = RateStats(window=3)
    for t in (0.0, 0.1, 0.2, 0.4, 0.5):
        stats.add(t)
    rate, lo, hi, std, n = stats.stats()
    assert n == 3  # only the last 3 periods: 0.1, 0.2, 0.1
    assert math.isclose(rate, 1 / (0.4 / 3)) and math.isclose(lo, 0.1) and math.isclose(hi, 0.2)
    assert math.isclose(std, math.sqrt(((0.1 - 0.4 / 3) ** 2 * 2 + (0.2 - 0.4 / 3) ** 2) / 3))
