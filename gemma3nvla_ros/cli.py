"""``gemma3nvla-ros``: launch a graph or run one node without ROS 2 installed.

    gemma3nvla-ros launch so101_pickplace mode:=sim
    gemma3nvla-ros launch so101_pickplace --show-args
    gemma3nvla-ros run so101_bridge --ros-args -p mode:=sim
    gemma3nvla-ros topic echo /joint_states --once       (also: topic list|hz|pub, param, node, service)
    gemma3nvla-ros bag record /joint_states /joint_commands -o demo_bag
    gemma3nvla-ros bag-to-dataset demo_bag -o datasets/demo --task "pick the cube" --robot-id my_follower
    gemma3nvla-ros eval-bag <bag> --checkpoint <ckpt> --out <dir>
    gemma3nvla-ros bag play <bag> [--rate R] [--topics ...]   (also: bag info <bag>)
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from gemma3nvla_ros.launch_graph import GraphError, parse_launch_arguments, resolve_graph
from gemma3nvla_ros.launcher import Launcher, node_command
from gemma3nvla_ros.paths import graph_path
from gemma3nvla_ros.tools import ros2cli


# Tools with parsers of their own, imported only when used (so `launch` stays cheap):
# command words -> (module, how many words its main() does not see).
TOOLS = {
    ("bag", "record"): ("gemma3nvla_ros.tools.bag_record", 2),
    ("bag", "play"): ("gemma3nvla_ros.tools.bag_replay", 1),
    ("bag", "info"): ("gemma3nvla_ros.tools.bag_replay", 1),
    ("bag-to-dataset",): ("gemma3nvla_ros.tools.bag_to_dataset", 1),
    ("eval-bag",): ("gemma3nvla_ros.tools.eval_bag", 1),
}
TOOL_HELP = {
    "bag": "record | play | info: record a rosbag2 from the live graph, replay one with /clock, describe one",
    "bag-to-dataset": "convert recorded bags into a LeRobotDataset",
    "eval-bag": "run a checkpoint on a recorded bag and write a report",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    for words, (module, skip) in TOOLS.items():
        if tuple(argv[: len(words)]) == words:
            return importlib.import_module(module).main(argv[skip:])
    if argv and argv[0] in ros2cli.COMMANDS:  # the ros2cli-like verbs have their own parser
        return ros2cli.main(argv)
    parser = argparse.ArgumentParser(prog="gemma3nvla-ros", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    launch = sub.add_parser("launch", help="start every node of a graph, each as its own process")
    launch.add_argument("graph", help="graph name under config/ (e.g. so101_pickplace) or a YAML path")
    launch.add_argument("arguments", nargs="*", help="launch arguments as name:=value")
    launch.add_argument("--show-args", action="store_true", help="list the launch arguments and exit")
    launch.add_argument("--print", action="store_true", help="print the resolved node commands and exit")
    launch.add_argument("--status", action="store_true",
                        help="show a live status line; node logs go to a file (its path is printed)")
    run = sub.add_parser("run", help="run one node of this package (like `ros2 run gemma3nvla_ros ...`)")
    run.add_argument("executable")
    run.add_argument("args", nargs=argparse.REMAINDER)
    for name, help_text in ros2cli.COMMANDS.items():  # listed in --help; parsed by ros2cli.main
        sub.add_parser(name, help=help_text, add_help=False)
    for name, help_text in TOOL_HELP.items():  # listed in --help; dispatched above
        sub.add_parser(name, help=help_text, add_help=False)
    launch_arguments: list[str] = []
    if argv and argv[0] == "launch":  # name:=value may stand anywhere, as with `ros2 launch`
        launch_arguments = [a for a in argv[1:] if ":=" in a]
        argv = [a for a in argv if ":=" not in a]
    options = parser.parse_args(argv)
    if options.command == "launch":
        options.arguments = [*options.arguments, *launch_arguments]

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
    if not options.status:
        return Launcher(graph).run()
    return _launch_with_status(graph)


def _launch_with_status(graph) -> int:
    import tempfile
    import time

    from gemma3nvla_ros.tools.status_line import StatusMonitor

    log_dir = Path(os.environ.get("ROS_LOG_DIR") or Path(tempfile.gettempdir()) / "gemma3nvla_ros")
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{graph.name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    print(f"[launch] node logs: {log_path}   (Ctrl-C stops everything)", flush=True)
    monitor = StatusMonitor()
    monitor.start()
    try:
        with open(log_path, "a", buffering=1) as node_log:
            status = Launcher(graph, node_output=node_log, status=monitor.line).run()
    finally:
        monitor.stop()
        print(flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
