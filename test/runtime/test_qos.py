"""QoS: the rmw_cyclonedds mapping and the DDS semantics ROS relies on."""
from __future__ import annotations

import pytest


def test_presets_and_enums_have_ros_values():
    from gemma3nvla_ros.ros import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                                    qos_profile_sensor_data, qos_profile_system_default)
    assert (HistoryPolicy.KEEP_LAST, HistoryPolicy.KEEP_ALL) == (1, 2)
    assert (ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT) == (1, 2)
    assert (DurabilityPolicy.TRANSIENT_LOCAL, DurabilityPolicy.VOLATILE) == (1, 2)
    s = qos_profile_sensor_data
    assert (s.history, s.depth, s.reliability, s.durability) == (1, 5, 2, 2)
    d = qos_profile_system_default
    assert (d.history, d.reliability, d.durability) == (0, 0, 0)
    q = QoSProfile(depth=10)
    assert (q.history, q.depth, q.reliability, q.durability) == (1, 10, 1, 2)
    with pytest.raises(ValueError):
        QoSProfile()


def test_mapping_to_dds():
    from gemma3nvla_ros.ros import DurabilityPolicy, HistoryPolicy, QoSProfile, qos_profile_sensor_data, qos_profile_system_default
    from gemma3nvla_ros.runtime.qos import qos_from, to_endpoint_qos
    from gemma3nvla_ros.runtime.time import Duration
    e = to_endpoint_qos(qos_profile_sensor_data)
    assert (e.reliable, e.transient_local, e.keep_all, e.depth) == (False, False, False, 5)
    e = to_endpoint_qos(qos_from(7))
    assert (e.reliable, e.transient_local, e.depth) == (True, False, 7)
    e = to_endpoint_qos(QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=0))
    assert e.depth == 1  # rmw_cyclonedds: depth 0 -> 1
    e = to_endpoint_qos(QoSProfile(history=HistoryPolicy.KEEP_ALL, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    assert e.keep_all and e.transient_local
    e = to_endpoint_qos(qos_profile_system_default)
    assert (e.reliable, e.transient_local, e.depth) == (True, False, 1)  # rmw_cyclonedds' choice
    assert to_endpoint_qos(QoSProfile(depth=1)).deadline_ns is None
    assert to_endpoint_qos(QoSProfile(depth=1, deadline=Duration(seconds=0.5))).deadline_ns == 500_000_000
    with pytest.raises(TypeError):
        qos_from("10")


def _pair(rclpy, writer_qos, reader_qos, topic):
    from gemma3nvla_ros.ros import Node, std_msgs
    node = Node("qos_" + topic.strip("/"))
    pub = node.create_publisher(std_msgs.msg.String, topic, writer_qos)
    got = []
    return node, pub, got, lambda: node.create_subscription(std_msgs.msg.String, topic, got.append, reader_qos)


def test_reliable_reader_does_not_match_best_effort_writer(rclpy, wait_until):
    from gemma3nvla_ros.ros import QoSProfile, ReliabilityPolicy, std_msgs
    be = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
    node, pub, got, make_sub = _pair(rclpy, be, QoSProfile(depth=5), "/qos_mismatch")
    make_sub()
    got_be = []
    node.create_subscription(std_msgs.msg.String, "/qos_mismatch", got_be.append, be)  # control: does match

    def step():
        pub.publish(std_msgs.msg.String(data="x"))
        rclpy.spin_once(node, timeout_sec=0.05)

    assert wait_until(lambda: bool(got_be), 10, step)
    for _ in range(10):
        step()
    assert got == [] and pub.get_subscription_count() == 1


def test_transient_local_reaches_late_joiner(rclpy, wait_until):
    from gemma3nvla_ros.ros import DurabilityPolicy, QoSProfile, std_msgs
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node, pub, got, make_sub = _pair(rclpy, latched, latched, "/latched")
    pub.publish(std_msgs.msg.String(data="first"))
    pub.publish(std_msgs.msg.String(data="latest"))
    make_sub()  # joins after both samples were written
    volatile_got = []
    node.create_subscription(std_msgs.msg.String, "/latched", volatile_got.append, QoSProfile(depth=1))
    assert wait_until(lambda: bool(got), 10, lambda: rclpy.spin_once(node, timeout_sec=0.05))
    for _ in range(5):
        rclpy.spin_once(node, timeout_sec=0.02)
    assert [m.data for m in got] == ["latest"] and volatile_got == []


def test_keep_last_depth_bounds_the_queue(rclpy, wait_until):
    from gemma3nvla_ros.ros import Node, QoSProfile, std_msgs
    node = Node("depth")
    got = []
    sub = node.create_subscription(std_msgs.msg.String, "/burst", got.append, QoSProfile(depth=3))
    pub = node.create_publisher(std_msgs.msg.String, "/burst", QoSProfile(depth=3))
    assert wait_until(lambda: pub.get_subscription_count() == 1)
    for i in range(10):
        pub.publish(std_msgs.msg.String(data=str(i)))
    assert wait_until(lambda: got and got[-1].data == "9", 10, lambda: rclpy.spin_once(node, timeout_sec=0.05))
    assert len(got) <= 3 + 1 and sub.topic_name == "/burst"
