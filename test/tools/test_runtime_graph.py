"""The runtime additions the CLI needs: reading other participants' ros_discovery_info
(Node.get_node_names_and_namespaces, both Gid layouts) and the discovered endpoints' QoS."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from gemma3nvla_ros.runtime import graph

from .conftest import REPO

GIDS = (b"\x01" * 16, b"\x02" * 16, b"\x03" * 16)


@pytest.mark.parametrize("distro,store_name", [("humble", "ROS2_HUMBLE"), ("jazzy", "ROS2_JAZZY")])
@pytest.mark.parametrize("reader_distro", ["humble", "jazzy"])
def test_parse_rosbags_serialized_info_either_gid_size(distro, store_name, reader_distro):
    """Samples serialized by rosbags (independent of our writer) parse, whatever ROS_DISTRO says."""
    from rosbags.typesys import Stores, get_typestore
    store = get_typestore(getattr(Stores, store_name))
    n = graph.gid_size(distro)
    Gid = store.types["rmw_dds_common/msg/Gid"]
    Node = store.types["rmw_dds_common/msg/NodeEntitiesInfo"]
    Info = store.types["rmw_dds_common/msg/ParticipantEntitiesInfo"]
    import numpy as np

    def gid(g: bytes):
        return Gid(data=np.frombuffer(g + bytes(n - 16), dtype=np.uint8))

    msg = Info(gid=gid(GIDS[0]), node_entities_info_seq=[
        Node(node_namespace="/", node_name="a", reader_gid_seq=[gid(GIDS[1])], writer_gid_seq=[]),
        Node(node_namespace="/ns", node_name="bb", reader_gid_seq=[], writer_gid_seq=[gid(GIDS[1]), gid(GIDS[2])]),
    ])
    data = bytes(store.serialize_cdr(msg, "rmw_dds_common/msg/ParticipantEntitiesInfo"))
    participant, nodes = graph.parse_participant_entities_info(data, reader_distro)
    assert participant[:16] == GIDS[0] and len(participant) == n
    assert [(ns, name) for ns, name, _r, _w in nodes] == [("/", "a"), ("/ns", "bb")]
    assert [g[:16] for g in nodes[1][3]] == [GIDS[1], GIDS[2]]
    assert [g[:16] for g in nodes[0][2]] == [GIDS[1]]


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_parse_our_own_writer_round_trip(distro):
    data = graph.serialize_participant_entities_info(GIDS[0], [("/", "n", [GIDS[1]], [GIDS[2]])], distro)
    participant, nodes = graph.parse_participant_entities_info(data, distro)
    assert participant[:16] == GIDS[0] and nodes[0][:2] == ("/", "n")


@pytest.mark.parametrize("data", [b"", b"\x00\x01\x00\x00" + b"\x01" * 16 + b"\xff\xff\xff\x7f", b"\x01\x00\x00\x00"])
def test_parse_rejects_garbage(data):
    with pytest.raises(ValueError):
        graph.parse_participant_entities_info(data, "jazzy")


NODE = textwrap.dedent("""
    import sys
    from gemma3nvla_ros.ros import rclpy, Node, std_msgs, qos_profile_sensor_data
    rclpy.init(args=sys.argv)
    node = Node("graph_peer", namespace="/peer")
    node.create_publisher(std_msgs.msg.String, "/peer_best_effort", qos_profile_sensor_data)
    print("READY", flush=True)
    try:
        rclpy.spin(node)
    except BaseException:
        pass
""")


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_node_names_from_other_processes(distro):
    """Names appear from another process' announcement and go when that process ends; our own node
    is listed too. The distro decides the Gid size both sides use."""
    env = dict(os.environ, ROS_DISTRO=distro)
    code = textwrap.dedent(f"""
        import subprocess, sys, time
        from gemma3nvla_ros.runtime import rclpy_api
        from gemma3nvla_ros.runtime.node import Node
        from gemma3nvla_ros.runtime.discovery import monitor_for
        rclpy_api.init(args=[])
        me = Node("observer")
        peer = subprocess.Popen([sys.executable, "-c", {NODE!r}], stdout=subprocess.PIPE, text=True)
        assert peer.stdout.readline().strip() == "READY"

        def wait(pred, timeout=15.0):
            end = time.monotonic() + timeout
            while time.monotonic() < end and not pred():
                time.sleep(0.02)
            return pred()

        assert wait(lambda: ("graph_peer", "/peer") in me.get_node_names_and_namespaces()), \\
            me.get_node_names_and_namespaces()
        assert ("observer", "/") in me.get_node_names_and_namespaces()
        assert "graph_peer" in me.get_node_names()
        mon = monitor_for(me.context.participant())
        pubs = [e for e in mon.endpoints() if e.topic_name == "rt/peer_best_effort" and not e.is_reader]
        assert [(e.reliable, e.transient_local) for e in pubs] == [(False, False)], pubs
        rosout = [e for e in mon.endpoints() if e.topic_name == "rt/rosout" and not e.is_reader]
        assert rosout and all(e.reliable and e.transient_local for e in rosout)
        peer.terminate()
        peer.wait(10)
        assert wait(lambda: "graph_peer" not in me.get_node_names())
        print("OK")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env,
                         timeout=60)
    assert out.stdout.strip().endswith("OK"), out.stdout + out.stderr
