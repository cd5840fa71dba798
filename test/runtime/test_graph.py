"""ros_discovery_info (per distro, checked with rosbags' typestores) and endpoint USER_DATA."""
from __future__ import annotations

import pytest

GRAPH_NODE = """
import sys
from gemma3nvla_ros.ros import rclpy, Node, std_msgs
rclpy.init(args=sys.argv)
node = Node("graph_probe", namespace="/g")
pub = node.create_publisher(std_msgs.msg.String, "out", 1)
sub = node.create_subscription(std_msgs.msg.String, "in", lambda m: None, 1)
print("PPANT", node.context.participant().guid.hex(), flush=True)
print("PUB", pub.guid.hex(), flush=True)
print("SUB", sub.guid.hex(), flush=True)
try:
    rclpy.spin(node)
except BaseException:
    pass
"""


@pytest.mark.parametrize("distro,store_name,gid_len", [("humble", "ROS2_HUMBLE", 24), ("jazzy", "ROS2_JAZZY", 16)])
def test_ros_discovery_info_layout(rclpy, proc, wait_until, distro, store_name, gid_len):
    from rosbags.typesys import Stores, get_typestore

    from gemma3nvla_ros.runtime import dds, graph
    p = proc(GRAPH_NODE, env={"ROS_DISTRO": distro})
    ppant = bytes.fromhex(p.wait_for("PPANT").split()[1])
    pub = bytes.fromhex(p.wait_for("PUB").split()[1])
    sub = bytes.fromhex(p.wait_for("SUB").split()[1])
    from gemma3nvla_ros.runtime.context import default_context
    part = default_context().participant()
    reader = dds.RawReader(part, graph.TOPIC, graph.TYPE_NAME, graph.QOS, b"")
    store = get_typestore(getattr(Stores, store_name))
    found = {}

    def poll():
        for data, _ in reader.take():
            if len(data) >= 4 + gid_len and bytes(data[4:4 + gid_len]).startswith(ppant):
                found["msg"] = store.deserialize_cdr(bytes(data), "rmw_dds_common/msg/ParticipantEntitiesInfo")

    def complete():
        m = found.get("msg")
        return m is not None and any(n.node_name == "graph_probe" and len(n.writer_gid_seq) >= 2
                                     for n in m.node_entities_info_seq)

    assert wait_until(complete, 20, poll), p.lines
    msg = found["msg"]
    assert len(msg.gid.data) == gid_len
    assert bytes(msg.gid.data) == ppant + b"\0" * (gid_len - 16)
    (info,) = [n for n in msg.node_entities_info_seq if n.node_name == "graph_probe"]
    assert info.node_namespace == "/g"
    writers = {bytes(g.data[:16]) for g in info.writer_gid_seq}
    readers = {bytes(g.data[:16]) for g in info.reader_gid_seq}
    assert pub in writers and sub in readers
    # parameter services: 6 request readers + 6 reply writers belong to the node as well
    assert len(readers) >= 7 and len(writers) >= 7
    reader.close()


def test_user_data_on_participant_and_endpoints(rclpy, wait_until):
    from gemma3nvla_ros.ros import Node, std_msgs, std_srvs
    from gemma3nvla_ros.runtime import dds, typesupport
    node = Node("ud")
    pub = node.create_publisher(std_msgs.msg.String, "/ud_topic", 1)
    part = node.context.participant()
    probe = dds.RawReader(part, "rt/ud_topic", "std_msgs::msg::dds_::String_", dds.EndpointQos(), b"")
    assert wait_until(lambda: bool(probe.matched_publications()))
    ud = probe.matched_publication_user_data(probe.matched_publications()[0])
    assert ud == {"typehash": typesupport.rihs01(std_msgs.msg.String)}
    assert ud["typehash"].startswith("RIHS01_") and len(ud["typehash"]) == 7 + 64
    client = node.create_client(std_srvs.srv.Trigger, "/ud_service")
    rq = dds.RawReader(part, "rq/ud_serviceRequest", "std_srvs::srv::dds_::Trigger_Request_", dds.EndpointQos(), b"")
    assert wait_until(lambda: bool(rq.matched_publications()))
    ud = rq.matched_publication_user_data(rq.matched_publications()[0])
    assert ud["typehash"] == typesupport.rihs01(std_srvs.srv.Trigger.Request)  # per endpoint, as rmw
    assert set(ud) == {"clientid", "typehash"}
    from gemma3nvla_ros.runtime.services import csid_to_string
    assert ud["clientid"] == csid_to_string(client.client_id) and len(ud["clientid"].split(".")) == 16
    probe.close()
    rq.close()
    pub.destroy()


def test_participant_user_data_is_enclave(rclpy, wait_until):
    from cyclonedds.builtin import BuiltinDataReader, BuiltinTopicDcpsParticipant
    from cyclonedds.domain import DomainParticipant

    from gemma3nvla_ros.runtime.context import default_context
    ours = default_context().participant()
    other = DomainParticipant(ours.domain_id)  # joins the already configured (loopback) domain
    reader = BuiltinDataReader(other, BuiltinTopicDcpsParticipant)
    seen = {}

    def poll():
        for s in reader.take(N=50):
            seen[s.key.bytes] = s.qos

    assert wait_until(lambda: ours.guid in seen, 10, poll)
    from cyclonedds.qos import Policy
    assert seen[ours.guid][Policy.Userdata].data == b"enclave=/;"


def test_endpoints_register_no_xtypes_type_information(rclpy, wait_until):
    """rmw_cyclonedds registers no TypeInformation; Cyclone 0.10 peers then match by type name."""
    from dataclasses import dataclass

    from cyclonedds.builtin import BuiltinDataReader, BuiltinTopicDcpsPublication
    from cyclonedds.domain import DomainParticipant
    from cyclonedds.idl import IdlStruct
    from cyclonedds.pub import DataWriter
    from cyclonedds.topic import Topic

    from gemma3nvla_ros.ros import Node, std_msgs
    from gemma3nvla_ros.runtime.context import default_context
    node = Node("no_xtypes")
    ours = node.create_publisher(std_msgs.msg.String, "/xtypes_probe", 1)

    # built without the module's postponed (string) annotations, which cyclonedds cannot resolve here
    String_ = dataclass(type("String_", (IdlStruct,), {"__annotations__": {"data": str}},
                             typename="std_msgs::msg::dds_::String_"))

    dp = DomainParticipant(default_context().participant().domain_id)
    control = DataWriter(dp, Topic(dp, "rt/xtypes_control", String_))  # noqa: F841  cyclonedds-python does send it
    reader = BuiltinDataReader(dp, BuiltinTopicDcpsPublication)
    seen = {}

    def poll():
        for s in reader.take(N=100):
            seen[s.topic_name] = s

    assert wait_until(lambda: {"rt/xtypes_probe", "rt/xtypes_control"} <= set(seen), 10, poll), sorted(seen)
    assert seen["rt/xtypes_probe"].key.bytes == ours.guid
    assert seen["rt/xtypes_probe"].type_name == "std_msgs::msg::dds_::String_"
    assert seen["rt/xtypes_probe"].type_id is None
    assert seen["rt/xtypes_control"].type_id is not None


def test_counts_topics_and_type_mismatch_warning(rclpy, wait_until, capfd):
    from gemma3nvla_ros.ros import Node, sensor_msgs, std_msgs
    node = Node("counter")
    node.create_publisher(std_msgs.msg.String, "/counted", 1)
    node.create_subscription(std_msgs.msg.String, "/counted", lambda m: None, 1)
    node.create_subscription(std_msgs.msg.String, "/counted", lambda m: None, 1)
    assert wait_until(lambda: node.count_publishers("/counted") == 1 and node.count_subscribers("/counted") == 2)
    assert ("/counted", ["std_msgs/msg/String"]) in node.get_topic_names_and_types()
    node.create_publisher(sensor_msgs.msg.JointState, "/counted", 1)  # wrong type on the same topic
    err = []

    def warned():
        err.append(capfd.readouterr().err)
        return any("has type std_msgs/msg/String" in e and "sensor_msgs/msg/JointState" in e for e in err)

    assert wait_until(warned, 10)
