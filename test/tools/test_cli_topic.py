"""`gemma3nvla-ros topic|node` against this package's real nodes (rclpy, Fast DDS on loopback).

Rates are checked with generous bounds only (a shared CI box is no timing rig)."""
from __future__ import annotations

import math
import re
import signal
import subprocess
import threading
import time

import pytest
import yaml

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
IMAGE = "/cameras/wrist_cam/image_raw"


# Listen longer than the default 3.5 s: on a loaded 2-core machine Fast DDS may announce a node later.
LISTEN = ("--spin-time", "8")


def _docs(text: str) -> list:
    """The messages `topic echo` printed (YAML documents separated by ---)."""
    return [d for d in yaml.safe_load_all(text) if d is not None]


def _read_until(proc: subprocess.Popen, marker: str, timeout: float = 20.0) -> str:
    """Lines from a running CLI's stdout up to and including the first starting with ``marker``
    (the CLI is killed if that takes longer than ``timeout``, so a silent one cannot hang the test)."""
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    text = ""
    try:
        for line in proc.stdout:
            text += line
            if line.startswith(marker):
                return text
    finally:
        watchdog.cancel()
    raise AssertionError(f"{marker!r} not printed: {text!r}")


def test_topic_list_shows_types(robot, cli):
    typed = cli("topic", "list", *LISTEN, "-t")
    assert typed.returncode == 0, typed.stderr
    lines = typed.stdout.splitlines()
    assert "/joint_states [sensor_msgs/msg/JointState]" in lines
    assert f"{IMAGE} [sensor_msgs/msg/Image]" in lines
    assert "/joint_commands [sensor_msgs/msg/JointState]" in lines
    plain = cli("topic", "list", *LISTEN)
    assert "/joint_states" in plain.stdout.splitlines()
    assert not any(n.startswith("/_") or "/_" in n for n in plain.stdout.split())  # hidden topics hidden
    assert int(cli("topic", "list", *LISTEN, "-c").stdout) == len(plain.stdout.splitlines())


def test_node_list_shows_nodes_hides_cli(robot, cli):
    out = cli("node", "list", *LISTEN)
    assert out.returncode == 0, out.stderr
    names = out.stdout.split()
    assert "/so101_bridge" in names and "/wrist_cam" in names
    assert names == sorted(names)
    assert not any(n.startswith("/_") for n in names)  # the CLI's own node is hidden...
    everything = cli("node", "list", *LISTEN, "-a").stdout.split()
    assert any(n.startswith("/_gemma3nvla_ros_cli_") for n in everything)  # ...but there
    assert cli("node", "list", *LISTEN, "-c").stdout.strip() == str(len(names))


def test_echo_once_joint_state(robot, cli):
    out = cli("topic", "echo", "/joint_states", "--once")
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip().endswith("---")
    (msg,) = _docs(out.stdout)
    assert list(msg) == ["header", "name", "position", "velocity", "effort"]  # definition order
    assert msg["name"] == JOINTS
    assert len(msg["position"]) == 6 and all(isinstance(p, float) for p in msg["position"])
    assert msg["header"]["stamp"]["sec"] > 0
    field = cli("topic", "echo", "/joint_states", "sensor_msgs/msg/JointState", "--once", "--field", "name")
    assert _docs(field.stdout) == [JOINTS]
    stamp = cli("topic", "echo", "joint_states", "--once", "--field", "header.stamp")
    assert list(_docs(stamp.stdout)[0]) == ["sec", "nanosec"]


def test_echo_best_effort_camera_summarises_blob(robot, cli):
    # the camera publishes with sensor-data QoS (best effort): the QoS echo picks must still receive it
    size = robot.camera_width * robot.camera_height * 3
    out = cli("topic", "echo", IMAGE, "--once", "--timeout", "15")
    assert out.returncode == 0, out.stderr
    (msg,) = _docs(out.stdout)
    assert msg["width"] == robot.camera_width and msg["encoding"] == "rgb8"
    assert f"data: '<{size} bytes>'" in out.stdout
    no_arr = cli("topic", "echo", IMAGE, "--once", "--no-arr", "--timeout", "15")
    assert _docs(no_arr.stdout)[0]["data"] == f"<sequence type: uint8, length: {size}>"  # as ros2 prints it
    # asking for reliable delivery from a best-effort publisher is incompatible: nothing arrives
    strict = cli("topic", "echo", IMAGE, "--once", "--qos-reliability", "reliable", "--timeout", "3")
    assert strict.returncode == 1 and "no message" in strict.stderr


def test_echo_field_typo_fails_before_subscribing(robot, cli):
    out = cli("topic", "echo", "/joint_states", "sensor_msgs/msg/JointState", "--field", "header.stmp")
    assert out.returncode == 1
    assert "Invalid field 'header.stmp'" in out.stderr and "std_msgs/msg/Header" in out.stderr


def test_hz_reports_the_bridge_rate(robot, cli):
    out = cli("topic", "hz", "/joint_states", "--duration", "3.5")
    assert out.returncode == 0, out.stderr
    rates = [float(m) for m in re.findall(r"average rate: ([0-9.]+)", out.stdout)]
    assert rates, out.stdout
    assert 50 < rates[-1] < 150, out.stdout  # configured 100 Hz
    assert re.search(r"min: [0-9.]+s max: [0-9.]+s std dev: [0-9.]+s window: \d+", out.stdout)


def test_pub_moves_the_simulated_arm(robot, cli):
    def elbow() -> float:
        out = cli("topic", "echo", "/joint_states", "--once", "--field", "position")
        assert out.returncode == 0, out.stderr
        return _docs(out.stdout)[0][JOINTS.index("elbow_flex")]

    start = elbow()
    target = 0.3 if start < 0.15 else 0.0
    # `header: auto` stamps each message now: the bridge drops commands stamped too long ago
    pub = cli("topic", "pub", "/joint_commands", "sensor_msgs/msg/JointState",
              f"{{header: auto, name: [elbow_flex], position: [{target}]}}", "--rate", "20", "--times", "20")
    assert pub.returncode == 0, pub.stderr
    assert "publisher: beginning loop" in pub.stdout and "publishing #1: sensor_msgs.msg.JointState(" in pub.stdout
    stamps = [int(s) for s in re.findall(r"stamp=builtin_interfaces\.msg\.Time\(sec=(\d+)", pub.stdout)]
    assert len(stamps) == 20 and stamps[0] > 0
    deadline = time.monotonic() + 15
    now = elbow()
    while abs(now - target) > 0.02 and time.monotonic() < deadline:
        now = elbow()
    assert abs(now - target) < 0.02, (start, now, target)
    assert "rejected joint command" not in robot.bridge.output


def test_pub_refuses_bad_input_without_waiting(cli):
    out = cli("topic", "pub", "/joint_commands", "sensor_msgs/msg/JointState", "{nme: [a]}", "--once", timeout=15)
    assert out.returncode == 1
    assert "no field 'nme'" in out.stderr
    for bad in ("sensor_msgs/msg/NoSuch", "no_such_pkg/msg/X", "sensor_msgs/srv/JointState", "JointState"):
        bad_type = cli("topic", "pub", "/x", bad, "{}", "--once", timeout=15)
        assert bad_type.returncode == 1 and "is invalid" in bad_type.stderr, (bad, bad_type.stderr)


def test_echo_unknown_topic_fails_clearly(cli):
    out = cli("topic", "echo", "/not_there", "--spin-time", "0.5")
    assert out.returncode == 1
    assert "Could not determine the type" in out.stderr


@pytest.mark.parametrize("args,marker", [
    (("topic", "echo", "/joint_states"), "---"),
    (("topic", "hz", "/joint_states"), "average rate:"),
    (("topic", "pub", "/chatter", "std_msgs/msg/String", "{data: hi}", "-r", "10"), "publishing #2:"),
], ids=["echo", "hz", "pub"])
def test_ctrl_c_ends_cleanly(robot, cli_popen, args, marker):
    p = cli_popen(*args)
    _read_until(p, marker)
    p.send_signal(signal.SIGINT)
    assert p.wait(15) == 0
    err = p.stderr.read()
    assert "Traceback" not in err, err


def test_broken_pipe_ends_quietly(robot, cli_popen):
    p = cli_popen("topic", "echo", "/joint_states")  # as `... | head`
    _read_until(p, "---")
    p.stdout.close()  # the reader goes away; the next write fails
    assert p.wait(15) == 0
    assert p.stderr.read() == ""


def test_hz_stats_math():
    from gemma3nvla_ros.tools.topic_verbs import RateStats
    stats = RateStats(window=3)
    for t in (0.0, 0.1, 0.2, 0.4, 0.5):
        stats.add(t)
    rate, lo, hi, std, n = stats.stats()
    assert n == 3  # only the last 3 periods: 0.1, 0.2, 0.1
    assert math.isclose(rate, 1 / (0.4 / 3)) and math.isclose(lo, 0.1) and math.isclose(hi, 0.2)
    assert math.isclose(std, math.sqrt(((0.1 - 0.4 / 3) ** 2 * 2 + (0.2 - 0.4 / 3) ** 2) / 3))


def test_view_writes_the_cameras_frame_to_a_file(robot, cli, tmp_path):
    import cv2

    out = tmp_path / "wrist.png"
    result = cli("view", "/cameras/wrist_cam/image_raw", "--once", "--out", str(out))
    assert result.returncode == 0, result.stderr
    frame = cv2.imread(str(out))
    assert frame is not None and frame.shape == (robot.camera_height, robot.camera_width, 3)
    assert frame.std() > 0  # the synthetic pattern, not a blank


def test_view_of_a_non_image_topic_fails_clearly(robot, cli, tmp_path):
    result = cli("view", "/joint_states", "--once", "--out", str(tmp_path / "x.jpg"), "--timeout", "3")
    assert result.returncode == 1 and "no image topic /joint_states" in result.stderr
