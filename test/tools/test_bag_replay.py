"""tools/bag_replay: which topics are played and with which QoS, and a real replay: `gemma3nvla-ros bag play`
into the policy node and the aggregator started with use_sim_time:=true, which then run on bag time (2001)."""
from __future__ import annotations

import numpy as np
import pytest

from gemma3nvla_ros.contract import Contract, default_contract_path
from gemma3nvla_ros.tools.bag_io import Bag, BagError
from gemma3nvla_ros.tools.bag_replay import ReplayError, is_command_topic, qos_choice, select_topics
from helpers_bags import BagBuilder, T0_NS, ramp, synthetic_bag
from helpers_ros import spin_until

MARKER = 1.2345  # positions of the recorded commands and chunks: never seen live unless replayed


def _with_commands(b: BagBuilder) -> None:
    """A recorded policy run: chunks on /action_chunk and commands on /joint_commands, all at MARKER."""
    for i in range(0, 120, 10):
        t = T0_NS + i * int(1e9 / 30)
        b.trajectory("/action_chunk", t, [[MARKER] * 6] * 5)
        b.joint_state("/joint_commands", t + 1, [MARKER] * 6)
    b.joint_state("/leader/joint_commands", T0_NS, [MARKER] * 6)


@pytest.fixture(scope="module")
def contract():
    return Contract.load(default_contract_path())


def test_default_topics_are_the_sensor_topics(tmp_path, contract):
    bag = synthetic_bag(tmp_path / "bag", duration=0.5, commands=False, extra=_with_commands)
    with Bag(bag) as b:
        assert select_topics(b, contract) == ["/cameras/wrist/image_raw", "/cameras/top/image_raw", "/joint_states"]
        for topic in ("/joint_commands", "/action_chunk", "/leader/joint_commands"):
            with pytest.raises(ReplayError, match="moves it. Add --allow-command-topics"):
                select_topics(b, contract, [topic, "/joint_states"])
            assert select_topics(b, contract, [topic], allow_commands=True) == [topic]
        with pytest.raises(BagError, match=r"\['/nope'\] not in the bag"):
            select_topics(b, contract, ["/nope"])


def test_compressed_cameras_and_camera_info_are_sensor_topics(tmp_path, contract):
    def info(b: BagBuilder) -> None:
        msg = b.store.types["sensor_msgs/msg/CameraInfo"](header=b._header(T0_NS), height=24, width=32,
                                                          distortion_model="plumb_bob", d=np.zeros(5), k=np.zeros(9),
                                                          r=np.zeros(9), p=np.zeros(12),
                                                          binning_x=0, binning_y=0,
                                                          roi=b.store.types["sensor_msgs/msg/RegionOfInterest"](
                                                              x_offset=0, y_offset=0, height=0, width=0,
                                                              do_rectify=False))
        b.messages.append((T0_NS, "/cameras/top/camera_info", "sensor_msgs/msg/CameraInfo", msg))
        clock = b.store.types["rosgraph_msgs/msg/Clock"](clock=b._header(T0_NS).stamp)
        b.messages.append((T0_NS, "/clock", "rosgraph_msgs/msg/Clock", clock))

    bag = synthetic_bag(tmp_path / "bag", duration=0.2, compressed=True, extra=info)
    with Bag(bag) as b:
        assert select_topics(b, contract) == ["/cameras/wrist/image_raw/compressed", "/cameras/top/image_raw/compressed",
                                              "/cameras/top/camera_info", "/joint_states"]
        with pytest.raises(ReplayError, match="never replayed"):
            select_topics(b, contract, ["/clock", "/joint_states"])


def test_qos_follows_the_recording(tmp_path):
    bag = synthetic_bag(tmp_path / "bag", duration=0.2)
    with Bag(bag) as b:
        camera = qos_choice(b.topics["/cameras/top/image_raw"])
        state = qos_choice(b.topics["/joint_states"])
    assert (camera.reliability, camera.source) == ("best_effort", "recorded")
    assert (state.reliability, state.durability, state.depth) == ("reliable", "volatile", 10)
    from gemma3nvla_ros.tools.bag_io import TopicSummary

    bare = qos_choice(TopicSummary("/x", "sensor_msgs/msg/Image", 1))
    assert (bare.reliability, bare.source) == ("best_effort", "default (sensor data)")
    assert qos_choice(TopicSummary("/y", "sensor_msgs/msg/JointState", 1)).reliability == "reliable"
    assert is_command_topic("/arm/command", "std_msgs/msg/Float64")
    assert not is_command_topic("/joint_states", "sensor_msgs/msg/JointState")


def test_cli_refuses_command_topics_and_bad_bags(tmp_path, cli):
    bag = synthetic_bag(tmp_path / "bag", duration=0.2)
    done = cli("bag", "play", str(bag), "--topics", "/joint_commands")
    assert done.returncode == 1 and "--allow-command-topics" in done.stderr
    done = cli("bag", "play", str(tmp_path / "missing"))
    assert done.returncode == 1 and "no bag at" in done.stderr
    done = cli("bag", "info", str(bag))
    assert done.returncode == 0 and "/cameras/wrist/image_raw  sensor_msgs/msg/Image       7 msgs" in done.stdout


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, contract) -> str:
    from gemma3nvla_ros.policy.demo_checkpoint import ensure_demo_checkpoint

    return str(ensure_demo_checkpoint(tmp_path_factory.mktemp("ckpt") / "demo", contract, camera_shape=(48, 64)))


def test_replay_drives_the_policy_and_aggregator_on_bag_time(ros, listener, start_node, cli_popen, checkpoint,
                                                               tmp_path):
    """The recorded sensor topics + /clock make the sim-time nodes act: chunks stamped with the bag's capture
    times, commands stamped with bag time. A node on wall time would refuse every 2001 frame as stale. The
    recorded /joint_commands and /action_chunk stay in the bag."""
    import rosgraph_msgs.msg
    import sensor_msgs.msg
    import trajectory_msgs.msg
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    duration = 4.0
    bag = synthetic_bag(tmp_path / "bag", duration=duration, shape=(48, 64), commands=False, extra=_with_commands)
    end_ns = T0_NS + int(duration * 1e9)
    policy = start_node("gemma3nvla_ros.nodes.policy_node", "-p", "use_sim_time:=true", "-p",
                        f"checkpoint:={checkpoint}", "-p", "device:=cpu", "-p", "cpu_threads:=1", "-p",
                        "task:=pick the cube")
    aggregator = start_node("gemma3nvla_ros.nodes.action_aggregator", "-p", "use_sim_time:=true")
    clocks, chunks, commands = [], [], []
    listener.create_subscription(rosgraph_msgs.msg.Clock, "/clock",
                                 lambda m: clocks.append(m.clock.sec * 10**9 + m.clock.nanosec),
                                 QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT))
    listener.create_subscription(trajectory_msgs.msg.JointTrajectory, "/action_chunk", chunks.append, 50)
    listener.create_subscription(sensor_msgs.msg.JointState, "/joint_commands", commands.append, 500)
    policy.wait_for("policy ready", timeout=180)
    aggregator.wait_for("waiting for a first chunk", timeout=60)

    player = cli_popen("bag", "play", str(bag), "--delay", "1.5")
    assert spin_until(ros, listener, lambda: len(clocks) > 5, 30.0), player.stderr.read() if player.poll() else ""
    camera_qos = [p.qos_profile.reliability for p in listener.get_publishers_info_by_topic("/cameras/top/image_raw")
                  if p.node_name == "gemma3nvla_bag_player"]
    player_publishes = {name for name, _ in listener.get_topic_names_and_types()
                        if any(p.node_name == "gemma3nvla_bag_player" for p in listener.get_publishers_info_by_topic(name))}
    assert spin_until(ros, listener, lambda: player.poll() is not None, 60.0)
    spin_until(ros, listener, lambda: False, 1.0)  # the last messages in flight
    err = player.stderr.read()
    assert player.returncode == 0, err
    log = f"\n--- player\n{err}\n--- policy\n{policy.output[-3000:]}\n--- aggregator\n{aggregator.output[-2000:]}"

    assert camera_qos == [ReliabilityPolicy.BEST_EFFORT], log  # as recorded from a camera node
    assert player_publishes - {"/rosout", "/parameter_events"} == {
        "/clock", "/cameras/top/image_raw", "/cameras/wrist/image_raw", "/joint_states"}, log
    assert clocks and all(T0_NS <= c <= end_ns for c in clocks) and clocks == sorted(clocks), log
    assert clocks[-1] >= end_ns - 100_000_000, log  # reached the end of the bag
    assert len(chunks) >= 2, log
    for chunk in chunks:  # stamped with the frames' capture times: the node's clock was the bag's
        stamp = chunk.header.stamp.sec * 10**9 + chunk.header.stamp.nanosec
        assert T0_NS <= stamp <= end_ns, (stamp, log)
        assert len(chunk.points) == 50 and chunk.points[0].positions[0] != MARKER
    assert len(commands) >= 10, log
    for command in commands:
        stamp = command.header.stamp.sec * 10**9 + command.header.stamp.nanosec
        assert T0_NS <= stamp <= end_ns + 100_000_000, (stamp, log)
        assert MARKER not in command.position
    # the aggregator started from the replayed joint state: its first command is near the recorded pose
    first = np.asarray(commands[0].position)
    t_first = (commands[0].header.stamp.sec * 10**9 + commands[0].header.stamp.nanosec - T0_NS) / 1e9
    assert np.max(np.abs(first - np.asarray(ramp(t_first)))) < 0.2, (first, ramp(t_first))
    assert "done:" in err and " late by" in err
