"""``gemma3nvla-ros node list`` (as ``ros2 node list``)."""
from __future__ import annotations

import argparse
import sys

from gemma3nvla_ros.tools.cli_session import LIST_SPIN_S, cli_node, listen_to_graph, node_names


def add_parser(sub: argparse._SubParsersAction) -> None:
    node = sub.add_parser("node", help="nodes in the graph (like `ros2 node`)")
    verbs = node.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("list", help="output a list of available nodes")
    p.add_argument("-a", "--all", action="store_true", help="display all nodes, hidden ones too")
    p.add_argument("-c", "--count-nodes", action="store_true", help="only display the number of nodes")
    p.add_argument("--spin-time", type=float, default=LIST_SPIN_S, help="how long to listen for discovery (s)")
    p.set_defaults(handler=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    with cli_node() as node:
        listen_to_graph(args.spin_time)
        names = sorted(node_names(node, include_hidden=args.all))
    if args.count_nodes:
        print(len(names))
        return 0
    if len(set(names)) != len(names):
        print("WARNING: Be aware that there are nodes in the graph that share an exact name, which can have "
              "unintended side effects.", file=sys.stderr)
    for name in names:
        print(name)
    return 0
