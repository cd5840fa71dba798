"""A small ros2cli: ``gemma3nvla-ros topic|param|node|service ...``, for machines with the rclpy
wheels but without the ``ros2`` command.

Each verb lives in its own module (topic_verbs, param_verbs, node_verbs, service_verbs) and runs a
short-lived hidden rclpy node (cli_session). Output follows ros2cli's so that what people know from
``ros2 topic echo`` reads the same here.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

# Importing this module stays cheap (no rclpy, no numpy) so `gemma3nvla-ros launch` does not pay for
# the tools; the verb modules are imported when one of these commands actually runs.
COMMANDS = {
    "topic": "list, echo, measure (hz) and publish topics (like `ros2 topic`)",
    "param": "list, get, set, describe and dump node parameters (like `ros2 param`)",
    "node": "list the nodes in the graph (like `ros2 node list`)",
    "service": "call a service (like `ros2 service call`)",
    "view": "write a camera topic's newest frame to an image file (no ROS tools needed)",
}


def build_parser(prog: str = "gemma3nvla-ros") -> argparse.ArgumentParser:
    from gemma3nvla_ros.tools import node_verbs, param_verbs, service_verbs, topic_verbs, view_verbs
    parser = argparse.ArgumentParser(prog=prog)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (topic_verbs, param_verbs, node_verbs, service_verbs, view_verbs):
        module.add_parser(sub)
    return parser


def main(argv: Optional[list[str]] = None, prog: str = "gemma3nvla-ros") -> int:
    """Run one verb; user errors go to stderr with exit status 1."""
    options = build_parser(prog).parse_args(argv)
    from rclpy.executors import ExternalShutdownException

    from gemma3nvla_ros.tools.cli_session import CliError
    from gemma3nvla_ros.tools.msg_yaml import MessageYamlError
    try:
        return int(options.handler(options) or 0)
    except (CliError, MessageYamlError) as exc:
        print(f"{prog} {options.command} {options.verb}: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):  # Ctrl-C: how echo/hz/pub end
        return 0
    except BrokenPipeError:  # `... | head`: the reader is gone; stop quietly, as ros2 does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit flush
        return 0
