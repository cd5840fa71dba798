"""ROS command-line parsing (--ros-args)."""
from __future__ import annotations

import pytest


def test_full_command_line():
    from gemma3nvla_ros.runtime.arguments import Remap, parse_ros_args, remove_ros_args
    argv = ["prog", "--foo", "--ros-args", "-r", "__node:=cam", "-r", "__ns:=/robot", "--remap", "image:=/cam/image",
            "-r", "cam:joint_states:=/js", "-p", "fps:=30", "-p", "cam:gain:=1.5", "--param", "names:=[a, b]",
            "-p", "flag:=true", "-p", "text:=hello world", "--params-file", "/tmp/x.yaml", "--log-level", "debug",
            "--log-level", "cam:=warn", "--", "tail"]
    a = parse_ros_args(argv)
    assert a.unparsed == ["prog", "--foo", "tail"] == remove_ros_args(argv)
    assert a.node_name_override("anything") == "cam" and a.namespace_override("anything") == "/robot"
    assert Remap(None, "image", "/cam/image") in a.remaps and Remap("cam", "joint_states", "/js") in a.remaps
    params = {(p.node, p.name): p.value for k, p in a.param_sources if k == "param"}
    assert params == {(None, "fps"): 30, ("cam", "gain"): 1.5, (None, "names"): ["a", "b"], (None, "flag"): True,
                      (None, "text"): "hello world"}
    assert a.params_files == ["/tmp/x.yaml"]
    assert a.log_levels == {None: "DEBUG", "cam": "WARN"}


def test_node_specific_name_override_only_applies_to_that_node():
    from gemma3nvla_ros.runtime.arguments import parse_ros_args
    a = parse_ros_args(["--ros-args", "-r", "talker:__node:=speaker"])
    assert a.node_name_override("talker") == "speaker" and a.node_name_override("listener") is None


@pytest.mark.parametrize("bad", [["--ros-args", "-r", "nocolon"], ["--ros-args", "-p", "x"],
                                 ["--ros-args", "--log-level", "loud"], ["--ros-args", "--bogus"],
                                 ["--ros-args", "-r"]])
def test_bad_arguments_are_rejected(bad):
    from gemma3nvla_ros.runtime.arguments import RosArgumentError, parse_ros_args
    with pytest.raises(RosArgumentError):
        parse_ros_args(bad)


def test_log_level_from_init_args(capfd):
    from gemma3nvla_ros.ros import Node
    from gemma3nvla_ros.runtime import rclpy_api, rcutils_logger
    rclpy_api.init(args=["--ros-args", "--log-level", "quiet_node:=error"])
    try:
        node = Node("quiet_node")
        node.get_logger().warn("hidden")
        node.get_logger().error("shown")
        err = capfd.readouterr().err
        assert "hidden" not in err and "[ERROR]" in err and "[quiet_node]: shown" in err
    finally:
        rcutils_logger.set_logger_level("quiet_node", rcutils_logger.LoggingSeverity.UNSET)
        rclpy_api.try_shutdown()


def test_first_node_name_rule_wins_and_node_local_rules_beat_global_ones(rclpy):
    # rcl (test_remap.cpp: use_first_nodename_rule, local_nodename_replacement_before_global)
    from gemma3nvla_ros.runtime.arguments import parse_ros_args
    a = parse_ros_args(["--ros-args", "-r", "__node:=first", "-r", "__node:=second",
                        "-r", "__ns:=/one", "-r", "__ns:=/two"])
    assert a.node_name_override("x") == "first" and a.namespace_override("x") == "/one"
    rclpy.shutdown()
    rclpy.init(args=["--ros-args", "-r", "__node:=global_name", "-r", "__ns:=/global_ns"])
    node = rclpy.create_node("plain", cli_args=["--ros-args", "-r", "__node:=local_name", "-r", "__ns:=/local_ns"])
    try:
        assert node.get_fully_qualified_name() == "/local_ns/local_name"
    finally:
        node.destroy_node()
