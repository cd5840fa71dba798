"""Bad input never crashes a node: malformed samples, mismatched types, bad requests."""
from __future__ import annotations

import struct


def test_malformed_samples_are_dropped_and_counted(rclpy, wait_until):
    from gemma3nvla_ros.ros import Node, sensor_msgs
    from gemma3nvla_ros.runtime import cdr, dds
    from gemma3nvla_ros.runtime.pubsub import dds_type_name
    node = Node("victim")
    got = []
    sub = node.create_subscription(sensor_msgs.msg.JointState, "/js_bad", got.append, 10)
    raw = dds.RawWriter(node.context.participant(), "rt/js_bad", dds_type_name(sensor_msgs.msg.JointState),
                        dds.EndpointQos(reliable=True, depth=10), b"")
    good = cdr.serialize(sensor_msgs.msg.JointState(name=["j"], position=[1.0]))
    garbage = [b"\x00\x01\x00\x00" + b"\xff" * 40,                      # absurd string length
               good[:-8],                                            # truncated
               b"\x00\x01\x00\x00" + struct.pack("<II", 0, 0x7FFFFFFF)]  # absurd sequence count
    assert wait_until(lambda: raw.matched_subscriptions() != [])
    for g in garbage:
        raw.write(g)
    raw.write(good)
    assert wait_until(lambda: bool(got), 10, lambda: rclpy.spin_once(node, timeout_sec=0.05))
    for _ in range(5):
        rclpy.spin_once(node, timeout_sec=0.02)
    assert len(got) == 1 and list(got[0].position) == [1.0]
    assert sub.malformed_count == 3


def test_type_name_mismatch_does_not_match(rclpy, wait_until):
    from gemma3nvla_ros.ros import Node, sensor_msgs, std_msgs
    node = Node("typed")
    got = []
    node.create_subscription(sensor_msgs.msg.JointState, "/typed_topic", got.append, 10)
    wrong = node.create_publisher(std_msgs.msg.String, "/typed_topic", 10)
    right = node.create_publisher(sensor_msgs.msg.JointState, "/typed_topic", 10)
    assert wait_until(lambda: right.get_subscription_count() == 1)
    for _ in range(5):
        wrong.publish(std_msgs.msg.String(data="not a joint state"))
        rclpy.spin_once(node, timeout_sec=0.02)
    assert wrong.get_subscription_count() == 0 and got == []


def test_malformed_request_does_not_kill_the_service(rclpy, wait_until):
    from gemma3nvla_ros.ros import Node, std_srvs
    from gemma3nvla_ros.runtime import dds
    from gemma3nvla_ros.runtime.pubsub import dds_type_name
    node = Node("sturdy")
    srv = node.create_service(std_srvs.srv.SetBool, "/sturdy_srv",
                              lambda req, resp: std_srvs.srv.SetBool.Response(success=True, message="fine"))
    raw = dds.RawWriter(node.context.participant(), "rq/sturdy_srvRequest",
                        dds_type_name(std_srvs.srv.SetBool.Request), dds.EndpointQos(reliable=True, depth=10), b"")
    assert wait_until(lambda: raw.matched_subscriptions() != [])
    raw.write(b"\x00\x01\x00\x00\x01\x02")  # shorter than the request header
    client = node.create_client(std_srvs.srv.SetBool, "/sturdy_srv")
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(std_srvs.srv.SetBool.Request(data=True))
    rclpy.spin_until_future_complete(node, future, timeout_sec=10)
    assert future.result().message == "fine" and srv.malformed_count == 1


def test_publishing_the_wrong_type_raises_typeerror(rclpy):
    import pytest

    from gemma3nvla_ros.ros import Node, sensor_msgs, std_msgs
    node = Node("strict")
    pub = node.create_publisher(sensor_msgs.msg.JointState, "/strict", 1)
    with pytest.raises(TypeError):
        pub.publish(std_msgs.msg.String(data="x"))
