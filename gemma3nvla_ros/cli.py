"""``gemma3nvla-ros``: launch a graph or run one node without ROS 2 installed.

    gemma3nvla-ros launch so101_pickplace mode:=sim
    gemma3nvla-ros launch so101_pickplace --show-args
    gemma3nvla-ros run so101_bridge --ros-args -p mode:=sim
    gemma3nvla-ros topic echo /joint_states --once       (also: topic list|hz|pub, param, node, service)
"""
from __future__ import annotations

import argparse
import os
import sys

from gemma3nvla_ros.launch_graph import GraphError, parse_launch_arguments, resolve_graph
from gemma3nvla_ros.launcher import Launcher, node_command
from gemma3nvla_ros.paths import graph_path
from gemma3nvla_ros.tools import ros2cli


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ros2cli.COMMANDS:  # the ros2cli-like verbs have their own parser
        return ros2cli.main(argv)
    parser = argparse.ArgumentParser(prog="gemma3nvla-ros", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    launch = sub.add_parser("launch", help="start every node of a graph, each as its own process")
    launch.add_argument("graph", help="graph name under config/ (e.g. so101_pickplace) or a YAML path")
    launch.add_argument("arguments", nargs="*", help="launch arguments as name:=value")
    launch.add_argument("--show-args", action="store_true", help="list the launch arguments and exit")
    launch.add_argument("--print", action="store_true", help="print the resolved node commands and exit")
    run = sub.add_parser("run", help="run one node of this package (like `ros2 run gemma3nvla_ros ...`)")
    run.add_argument("executable")
    run.add_argument("args", nargs=argparse.REMAINDER)
    for name, help_text in ros2cli.COMMANDS.items():  # listed in --help; parsed by ros2cli.main
        sub.add_parser(name, help=help_text, add_help=False)
    options = parser.parse_args(argv)

    try:
        if options.command == "run":
            command = node_command(options.executable, options.args)
            os.execv(command[0], command)
        path = graph_path(options.graph)
        graph = resolve_graph(path, parse_launch_arguments(options.arguments))
    except (GraphError, FileNotFoundError, LookupError) as exc:
        print(f"gemma3nvla-ros: error: {exc}", file=sys.stderr)
        return 2

    if options.show_args:
        for arg in graph.arguments.values():
            choices = f" (one of {', '.join(arg.choices)})" if arg.choices else ""
            print(f"    '{arg.name}':\n        {arg.description}{choices}\n        (default: '{arg.default}')")
        return 0
    if options.print:
        for spec in graph.nodes:
            print(" ".join([spec.executable, *spec.ros_args()]), spec.parameters)
        return 0
    return Launcher(graph).run()


if __name__ == "__main__":
    sys.exit(main())
