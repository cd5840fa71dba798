"""Publish/subscribe across processes and within one, names and remapping."""
from __future__ import annotations


ECHO = """
import sys
from gemma3nvla_ros.ros import rclpy, Node, sensor_msgs
rclpy.init(args=sys.argv)
node = Node("echo")
pub = node.create_publisher(sensor_msgs.msg.JointState, "pong", 10)
node.create_subscription(sensor_msgs.msg.JointState, "ping", pub.publish, 10)
print("echo up", flush=True)
try:
    rclpy.spin(node)
except BaseException:
    pass
"""


def test_jointstate_round_trip_between_processes(rclpy, proc, wait_until):
    from gemma3nvla_ros.ros import Node, sensor_msgs
    p = proc(ECHO)
    p.wait_for("echo up")
    node = Node("pinger")
    got = []
    node.create_subscription(sensor_msgs.msg.JointState, "/pong", got.append, 10)
    pub = node.create_publisher(sensor_msgs.msg.JointState, "/ping", 10)
    msg = sensor_msgs.msg.JointState(name=["shoulder_pan", "gripper"], position=[0.5, -1.25], velocity=[1.0, 2.0])
    msg.header.frame_id = "base"
    msg.header.stamp.sec = 42

    def step():
        pub.publish(msg)
        rclpy.spin_once(node, timeout_sec=0.1)

    assert wait_until(lambda: bool(got), 20, step), p.lines
    assert got[0] == msg
    node.destroy_node()


IMAGE_PUB = """
import sys
import numpy as np
from gemma3nvla_ros.ros import rclpy, Node, sensor_msgs, qos_profile_sensor_data
rclpy.init(args=sys.argv)
node = Node("camera")
pub = node.create_publisher(sensor_msgs.msg.Image, "/cameras/front/image_raw", qos_profile_sensor_data)
frame = (np.arange(720 * 1280 * 3, dtype=np.uint32) % 251).astype(np.uint8)
def tick():
    img = sensor_msgs.msg.Image(height=720, width=1280, encoding="rgb8", step=1280 * 3, data=frame.tobytes())
    img.header.stamp = node.get_clock().now().to_msg()
    pub.publish(img)
node.create_timer(0.1, tick)
print("camera up", flush=True)
try:
    rclpy.spin(node)
except BaseException:
    pass
"""


def test_720p_image_between_processes(rclpy, proc, wait_until):
    import numpy as np

    from gemma3nvla_ros.ros import Node, qos_profile_sensor_data, sensor_msgs
    p = proc(IMAGE_PUB)
    p.wait_for("camera up")
    node = Node("viewer")
    got = []
    node.create_subscription(sensor_msgs.msg.Image, "/cameras/front/image_raw", got.append, qos_profile_sensor_data)
    assert wait_until(lambda: len(got) >= 2, 20, lambda: rclpy.spin_once(node, timeout_sec=0.1)), p.lines
    img = got[-1]
    assert (img.height, img.width, img.encoding, img.step) == (720, 1280, "rgb8", 3840)
    expected = (np.arange(720 * 1280 * 3, dtype=np.uint32) % 251).astype(np.uint8)
    assert np.array_equal(np.frombuffer(bytes(img.data), dtype=np.uint8), expected)


def test_publish_subscribe_within_one_process(rclpy, wait_until):
    from gemma3nvla_ros.ros import Node, std_msgs
    a, b = Node("a"), Node("b", namespace="/robot")
    got = []
    b.create_subscription(std_msgs.msg.String, "/robot/chatter", got.append, 10)
    pub = a.create_publisher(std_msgs.msg.String, "robot/chatter", 10)  # relative to '/'
    ex_nodes = [a, b]
    from gemma3nvla_ros.ros import SingleThreadedExecutor
    ex = SingleThreadedExecutor()
    for n in ex_nodes:
        ex.add_node(n)

    def step():
        pub.publish(std_msgs.msg.String(data="hello"))
        ex.spin_once(timeout_sec=0.1)

    assert wait_until(lambda: bool(got), 15, step)
    assert got[0].data == "hello"
    assert pub.get_subscription_count() >= 1
    ex.shutdown()


def test_names_namespaces_and_remaps(rclpy):
    from gemma3nvla_ros.ros import Node, std_msgs
    node = Node("talker", namespace="ns", cli_args=["--ros-args", "-r", "__node:=renamed", "-r", "__ns:=/robot",
                                                     "-r", "chatter:=talk", "-r", "/abs:=/elsewhere"])
    assert node.get_name() == "renamed"
    assert node.get_namespace() == "/robot"
    assert node.get_fully_qualified_name() == "/robot/renamed"
    assert node.create_publisher(std_msgs.msg.String, "chatter", 1).topic_name == "/robot/talk"
    assert node.create_publisher(std_msgs.msg.String, "~/private", 1).topic_name == "/robot/renamed/private"
    assert node.create_publisher(std_msgs.msg.String, "/abs", 1).topic_name == "/elsewhere"
    assert node.create_publisher(std_msgs.msg.String, "other", 1).topic_name == "/robot/other"


def test_global_remap_from_init_args():
    from gemma3nvla_ros.ros import Node, std_msgs
    from gemma3nvla_ros.runtime import rclpy_api
    rclpy_api.init(args=["prog", "--ros-args", "-r", "joint_states:=/arm/joint_states", "-r", "other_node:__ns:=/x"])
    try:
        node = Node("bridge")
        assert node.get_namespace() == "/"
        assert node.create_publisher(std_msgs.msg.String, "joint_states", 1).topic_name == "/arm/joint_states"
    finally:
        rclpy_api.try_shutdown()


PLAIN_CYCLONE = """
# Another DDS program that knows nothing of our runtime: cyclonedds-python's own IdlStruct
# serializer and sertype (which, unlike ours, carries XTypes type information), like a foreign peer.
import os, sys, time
from dataclasses import dataclass
from cyclonedds.domain import DomainParticipant
from cyclonedds.topic import Topic
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.idl import IdlStruct
from cyclonedds.core import Qos, Policy
from cyclonedds.util import duration

@dataclass
class String_(IdlStruct, typename="std_msgs::msg::dds_::String_"):
    data: str

dp = DomainParticipant(int(os.environ["ROS_DOMAIN_ID"]))
qos = Qos(Policy.Reliability.Reliable(duration(seconds=1)), Policy.History.KeepLast(10))
w = DataWriter(dp, Topic(dp, "rt/from_plain", String_), qos=qos)
r = DataReader(dp, Topic(dp, "rt/to_plain", String_), qos=qos)
print("plain up", flush=True)
deadline = time.time() + 30
while time.time() < deadline:
    w.write(String_(data="hello from plain cyclone"))
    for s in r.take(N=10):
        print("PLAIN GOT " + s.data, flush=True)
    time.sleep(0.05)
"""


def test_interoperates_with_a_plain_cyclonedds_program(rclpy, proc, wait_until):
    from gemma3nvla_ros.ros import Node, std_msgs
    p = proc(PLAIN_CYCLONE)
    p.wait_for("plain up")
    node = Node("interop")
    got = []
    node.create_subscription(std_msgs.msg.String, "/from_plain", got.append, 10)
    pub = node.create_publisher(std_msgs.msg.String, "/to_plain", 10)

    def step():
        pub.publish(std_msgs.msg.String(data="hello from the runtime"))
        rclpy.spin_once(node, timeout_sec=0.05)

    assert wait_until(lambda: bool(got) and any("PLAIN GOT" in line for line in p.lines), 20, step), p.lines
    assert got[0].data == "hello from plain cyclone"
    assert "PLAIN GOT hello from the runtime" in p.lines


def test_log_lines_are_published_on_rosout(rclpy, wait_until):
    from gemma3nvla_ros.ros import DurabilityPolicy, Node, QoSProfile, rcl_interfaces
    node = Node("chatty")
    listener = Node("console", enable_rosout=False)
    got = []
    listener.create_subscription(rcl_interfaces.msg.Log, "/rosout", got.append,
                                 QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    node.get_logger().warn("gripper overheating")

    def mine():
        return [m for m in got if m.name == "chatty" and m.msg == "gripper overheating"]

    assert wait_until(lambda: bool(mine()), 10, lambda: rclpy.spin_once(listener, timeout_sec=0.05))
    m = mine()[0]
    assert m.level == 30 and m.function == "test_log_lines_are_published_on_rosout" and m.line > 0


def test_destroyed_nodes_and_endpoints_are_released(rclpy):
    """destroy_node()/destroy_subscription() must not leave the node reachable from process-wide
    state (the type-mismatch watcher kept a closure over every node ever created)."""
    import gc
    import weakref
    from gemma3nvla_ros.runtime.discovery import monitor_for
    from gemma3nvla_ros.runtime.interfaces import std_msgs
    refs = []
    for i in range(3):
        node = rclpy.create_node(f"released_{i}")
        node.create_subscription(std_msgs.msg.String, "/released_topic", lambda m: None, 10)
        node.create_publisher(std_msgs.msg.String, "/released_topic", 10)
        node.destroy_node()
        refs.append(weakref.ref(node))
        del node
    gc.collect()
    assert [r() for r in refs] == [None, None, None]
    mon = monitor_for(rclpy.get_default_context().participant())
    assert mon is None or "rt/released_topic" not in mon._local
