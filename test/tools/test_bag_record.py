"""`gemma3nvla-ros bag record` against publishers in this process: a reliable JointState, a best-effort
camera Image (sensor-data QoS), a latched String published before recording starts. The bag reads back
with rosbags, message for message."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from helpers_ros import spin_for, spin_until

REPO = Path(__file__).resolve().parents[2]


def _record(out: Path, *topics: str, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gemma3nvla_ros.cli", "bag", "record", *topics, "-o", str(out), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=dict(os.environ),
    )


class Output:
    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(proc.stdout), daemon=True).start()

    def wait_for(self, text: str, n: int = 1, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(text in line for line in self.lines) >= n:
                return True
            time.sleep(0.05)
        return False

    def __str__(self) -> str:
        return "".join(self.lines)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_record_reads_back_with_rosbags(ros, listener, tmp_path, sig):
    import sensor_msgs.msg
    import std_msgs.msg
    from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data

    js_pub = listener.create_publisher(sensor_msgs.msg.JointState, "/joint_states", QoSProfile(depth=10))
    img_pub = listener.create_publisher(sensor_msgs.msg.Image, "/cameras/top/image_raw", qos_profile_sensor_data)
    task_pub = listener.create_publisher(std_msgs.msg.String, "/so101_leader/task",
                                         QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    task_pub.publish(std_msgs.msg.String(data="pick the red cube"))  # before the recorder exists

    out = tmp_path / "bag"
    proc = _record(out, "/joint_states", "/cameras/top/image_raw", "/so101_leader/task", "/never_published")
    log = Output(proc)
    assert log.wait_for("subscribed to", 3), str(log)
    spin_for(ros, listener, 1.0)  # let the subscriptions match
    sent = []
    for i in range(40):
        js = sensor_msgs.msg.JointState(name=["a", "b"], position=[float(i), -0.5 * i])
        js.header.stamp.sec, js.header.stamp.nanosec = 1000 + i, i
        js_pub.publish(js)
        if i % 4 == 0:
            img = sensor_msgs.msg.Image(height=2, width=3, encoding="rgb8", step=9)
            img.header.stamp.sec = 1000 + i
            img.data = bytes(range(i, i + 18))
            img_pub.publish(img)
        sent.append(i)
        spin_for(ros, listener, 0.02)
    spin_for(ros, listener, 0.5)
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == 0, str(log)
    text = str(log)
    assert f"stopped ({signal.Signals(sig).name})" in text
    assert "/never_published" in text and "never published" in text

    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import Reader

    import yaml

    meta = yaml.safe_load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 9 and meta["storage_identifier"] == "mcap" and (out / "bag.mcap").is_file()
    with Reader(out) as raw:
        topics = {c.topic: c for c in raw.connections}
        assert set(topics) == {"/joint_states", "/cameras/top/image_raw", "/so101_leader/task"}
        assert topics["/joint_states"].msgtype == "sensor_msgs/msg/JointState"
        assert topics["/joint_states"].digest.startswith("RIHS01_")
        assert "float64[] position" in topics["/joint_states"].msgdef.data
        assert topics["/cameras/top/image_raw"].ext.offered_qos_profiles[0].reliability.name == "BEST_EFFORT"
        assert topics["/so101_leader/task"].ext.offered_qos_profiles[0].durability.name == "TRANSIENT_LOCAL"
    with AnyReader([out]) as reader:  # reads the definitions from the bag itself
        got = {"js": [], "img": [], "task": []}
        last = 0
        for conn, stamp, data in reader.messages():
            assert stamp >= last  # reception times, in order
            last = stamp
            msg = reader.deserialize(data, conn.msgtype)
            got[{"/joint_states": "js", "/cameras/top/image_raw": "img", "/so101_leader/task": "task"}[conn.topic]].append(msg)
    assert [m.data for m in got["task"]] == ["pick the red cube"]
    assert [int(m.position[0]) for m in got["js"]] == sent  # reliable: every one, in order
    for m in got["js"]:
        i = int(m.position[0])
        assert list(m.name) == ["a", "b"] and m.position[1] == -0.5 * i
        assert (m.header.stamp.sec, m.header.stamp.nanosec) == (1000 + i, i)
    assert len(got["img"]) >= 8  # best effort on loopback: normally all 10
    for m in got["img"]:
        i = m.header.stamp.sec - 1000
        assert (m.height, m.width, m.encoding) == (2, 3, "rgb8")
        np.testing.assert_array_equal(m.data, np.arange(i, i + 18, dtype=np.uint8))


def test_existing_output_and_no_topics_are_refused(tmp_path):
    (tmp_path / "bag").mkdir()
    r = subprocess.run([sys.executable, "-m", "gemma3nvla_ros.cli", "bag", "record", "/x", "-o", str(tmp_path / "bag")],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "exists already" in r.stderr
    r = subprocess.run([sys.executable, "-m", "gemma3nvla_ros.cli", "bag", "record", "-o", str(tmp_path / "b2")],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "-a/--all" in r.stderr


def test_max_duration_and_all_topics(ros, listener, tmp_path):
    import std_msgs.msg
    from rclpy.qos import QoSProfile

    pub = listener.create_publisher(std_msgs.msg.String, "/chatter_for_bag", QoSProfile(depth=10))
    out = tmp_path / "all"
    proc = _record(out, extra=("--all", "--max-duration", "4", "--storage", "sqlite3"))
    log = Output(proc)
    assert spin_until(ros, listener, lambda: (pub.publish(std_msgs.msg.String(data="hi")) or True)
                      and log.wait_for("subscribed to /chatter_for_bag", timeout=0.05), 20.0), str(log)
    spin_for(ros, listener, 0.5, each=lambda: pub.publish(std_msgs.msg.String(data="hi")))
    assert proc.wait(timeout=30) == 0, str(log)
    assert "stopped (--max-duration 4 s)" in str(log)
    from rosbags.highlevel import AnyReader

    with AnyReader([out]) as reader:
        conns = [c for c in reader.connections if c.topic == "/chatter_for_bag"]
        assert conns and sum(c.msgcount for c in conns) > 0
        assert {c.topic for c in reader.connections} >= {"/chatter_for_bag", "/rosout"}


def test_message_definitions_from_the_ros_installation(tmp_path, monkeypatch):
    """Types rosbags does not ship are read from <prefix>/share/<pkg>/msg/*.msg, dependencies included."""
    from gemma3nvla_ros.tools.bag_record import _typestore, message_definition

    msg_dir = tmp_path / "share" / "my_robot_msgs" / "msg"
    msg_dir.mkdir(parents=True)
    (msg_dir / "Grip.msg").write_text("std_msgs/Header header\nmy_robot_msgs/Finger[] fingers\nfloat32 force\n")
    (msg_dir / "Finger.msg").write_text("uint8 CLOSED=0\nstring name\nfloat64 angle\n")
    monkeypatch.setenv("AMENT_PREFIX_PATH", f"/nonexistent:{tmp_path}")
    store = _typestore()
    msgdef, rihs01 = message_definition(store, "my_robot_msgs/msg/Grip")
    assert "my_robot_msgs/Finger[] fingers" in msgdef and "MSG: my_robot_msgs/Finger" in msgdef
    assert rihs01.startswith("RIHS01_")
    Grip, Finger = store.types["my_robot_msgs/msg/Grip"], store.types["my_robot_msgs/msg/Finger"]
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    msg = Grip(header=Header(stamp=Time(sec=1, nanosec=2), frame_id="g"), fingers=[Finger(name="a", angle=0.5)], force=2.0)
    back = store.deserialize_cdr(store.serialize_cdr(msg, "my_robot_msgs/msg/Grip"), "my_robot_msgs/msg/Grip")
    assert back.fingers[0].name == "a" and back.force == 2.0
    with pytest.raises(KeyError):
        message_definition(store, "nobody_msgs/msg/Missing")
    assert message_definition(store, "sensor_msgs/msg/JointState")[1] == store.hash_rihs01("sensor_msgs/msg/JointState")
