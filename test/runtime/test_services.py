"""Services/clients: rmw_cyclonedds request/reply framing, reply filtering, calls across processes."""
from __future__ import annotations

import struct

SERVER = """
import sys
from gemma3nvla_ros.ros import rclpy, Node, std_srvs
rclpy.init(args=sys.argv)
node = Node("switch", namespace="/robot")
state = {"on": False}
def handle(req, resp):
    state["on"] = req.data
    resp.success = True
    resp.message = f"now {'on' if req.data else 'off'}"
    return resp
node.create_service(std_srvs.srv.SetBool, "~/enable", handle)
print("server up", flush=True)
try:
    rclpy.spin(node)
except BaseException:
    pass
"""


def _raw(node, srv_type, name):
    from gemma3nvla_ros.runtime import dds
    from gemma3nvla_ros.runtime.pubsub import dds_type_name
    part = node.context.participant()
    q = dds.EndpointQos(reliable=True, depth=10)
    return (dds.RawWriter(part, f"rq{name}Request", dds_type_name(srv_type.Request), q, b""),
            dds.RawReader(part, f"rr{name}Reply", dds_type_name(srv_type.Response), q, b""))


def test_server_copies_the_16_byte_request_header(rclpy, wait_until):
    from gemma3nvla_ros.ros import Node, std_srvs
    from gemma3nvla_ros.runtime import cdr
    node = Node("server")
    node.create_service(std_srvs.srv.SetBool, "/set_flag",
                        lambda req, resp: std_srvs.srv.SetBool.Response(success=req.data, message="ok"))
    writer, reader = _raw(node, std_srvs.srv.SetBool, "/set_flag")
    body = cdr.serialize(std_srvs.srv.SetBool.Request(data=True))
    header = struct.pack("<Qq", 0x1122334455667788, 77)
    replies = []

    def step():
        if not replies:
            writer.write(body[:4] + header + body[4:])
        rclpy.spin_once(node, timeout_sec=0.1)
        replies.extend(reader.take())

    assert wait_until(lambda: bool(replies), 15, step)
    data = bytes(replies[0][0])
    assert data[:4] == b"\x00\x01\x00\x00"
    assert data[4:20] == header
    resp = cdr.deserialize(data[:4] + data[20:], std_srvs.srv.SetBool.Response)
    assert resp.success is True and resp.message == "ok"


def test_client_request_layout_and_reply_filtering(rclpy, wait_until):
    from gemma3nvla_ros.ros import Node, std_srvs
    from gemma3nvla_ros.runtime import cdr, dds
    from gemma3nvla_ros.runtime.pubsub import dds_type_name
    node = Node("client_node")
    client = node.create_client(std_srvs.srv.SetBool, "/fake_service")
    part = node.context.participant()
    q = dds.EndpointQos(reliable=True, depth=10)
    req_reader = dds.RawReader(part, "rq/fake_serviceRequest", dds_type_name(std_srvs.srv.SetBool.Request), q, b"")
    rep_writer = dds.RawWriter(part, "rr/fake_serviceReply", dds_type_name(std_srvs.srv.SetBool.Response), q, b"")
    assert wait_until(lambda: len(rep_writer.matched_subscriptions()) > 0 and len(req_reader.matched_publications()) > 0)
    future = client.call_async(std_srvs.srv.SetBool.Request(data=True))
    requests = []
    assert wait_until(lambda: bool(requests), 10, lambda: requests.extend(req_reader.take()) or None)
    data = bytes(requests[0][0])
    guid, seq = struct.unpack_from("<Qq", data, 4)
    # rmw_cyclonedds: guid = instance handle of the client's request writer, seq counts from 1
    assert guid == client._writer.instance_handle and seq == 1
    assert requests[0][1].publication_handle == guid
    assert cdr.deserialize(data[:4] + data[20:], std_srvs.srv.SetBool.Request).data is True

    resp = cdr.serialize(std_srvs.srv.SetBool.Response(success=True, message="for someone else"))
    rep_writer.write(resp[:4] + struct.pack("<Qq", guid + 1, seq) + resp[4:])
    for _ in range(5):
        rclpy.spin_once(node, timeout_sec=0.05)
    assert not future.done(), "a reply with another client's guid must be ignored"
    resp = cdr.serialize(std_srvs.srv.SetBool.Response(success=True, message="mine"))
    rep_writer.write(resp[:4] + struct.pack("<Qq", guid, seq) + resp[4:])
    assert wait_until(future.done, 10, lambda: rclpy.spin_once(node, timeout_sec=0.05))
    assert future.result().message == "mine"


def test_service_across_processes(rclpy, proc):
    from gemma3nvla_ros.ros import Node, std_srvs
    p = proc(SERVER)
    p.wait_for("server up")
    node = Node("caller")
    client = node.create_client(std_srvs.srv.SetBool, "/robot/switch/enable")
    assert client.wait_for_service(timeout_sec=20.0), p.lines
    assert client.service_is_ready()
    future = client.call_async(std_srvs.srv.SetBool.Request(data=True))
    rclpy.spin_until_future_complete(node, future, timeout_sec=10.0)
    assert future.done() and future.result().success and future.result().message == "now on"
    # blocking call without anybody spinning the node
    resp = client.call(std_srvs.srv.SetBool.Request(data=False), timeout_sec=10.0)
    assert resp is not None and resp.message == "now off"


def test_wait_for_service_times_out_without_server(rclpy):
    from gemma3nvla_ros.ros import Node, std_srvs
    node = Node("lonely")
    client = node.create_client(std_srvs.srv.Trigger, "/nobody_here")
    assert client.wait_for_service(timeout_sec=0.3) is False
    assert client.call(std_srvs.srv.Trigger.Request(), timeout_sec=0.3) is None
