"""``gemma3nvla-ros node list`` (as ``ros2 node list``): the nodes every participant announces on
``ros_discovery_info``."""
from __future__ import annotations

import argparse
import sys

from gemma3nvla_ros.tools.cli_session import cli_session


def add_parser(sub: argparse._SubParsersAction) -> None:
    node = sub.add_parser("node", help="nodes in the graph (like `ros2 node`)")
    verbs = node.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("list", help="output a list of available nodes")
    p.add_argument("-a", "--all", action="store_true", help="display all nodes, hidden ones too")
    p.add_argument("-c", "--count-nodes", action="store_true", help="only display the number of nodes")
    p.add_argument("--spin-time", type=float, default=2.0, help="longest wait for discovery (s)")
    p.set_defaults(handler=cmd_list)


def full_name(name: str, namespace: str) -> str:
    return namespace.rstrip("/") + "/" + name


def is_hidden(fqn: str) -> bool:
    """As rclpy's topic_or_service_is_hidden: any path component starting with an underscore."""
    return any(part.startswith("_") for part in fqn.split("/"))


def cmd_list(args: argparse.Namespace) -> int:
    with cli_session() as s:
        def snapshot() -> frozenset:
            return frozenset(s.node.get_node_names_and_namespaces())
        s.wait_settled(args.spin_time, snapshot=lambda: (snapshot(), len(s.endpoints())))
        names = [full_name(n, ns) for n, ns in s.node.get_node_names_and_namespaces()]
    shown = sorted(n for n in names if args.all or not is_hidden(n))
    if len(set(shown)) != len(shown):
        print("WARNING: Be aware that there are nodes in the graph that share an exact name, which can have "
              "unintended side effects.", file=sys.stderr)
    if args.count_nodes:
        print(len(shown))
        return 0
    for name in shown:
        print(name)
    return 0
