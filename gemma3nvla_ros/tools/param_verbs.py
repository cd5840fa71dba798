"""``gemma3nvla-ros param list|get|set|describe|dump`` (as ``ros2 param ...``) through the nodes'
parameter services, with rclpy's AsyncParameterClient."""
from __future__ import annotations

import argparse
import re
import sys
from typing import Any, Callable

import rclpy
from rcl_interfaces.msg import Parameter
from rclpy.node import Node
from rclpy.parameter_client import AsyncParameterClient
from rclpy.task import Future

from gemma3nvla_ros.tools import param_values
from gemma3nvla_ros.tools.cli_session import (
    DISCOVERY_TIMEOUT_S,
    LIST_SPIN_S,
    CliError,
    absolute_node_name,
    cli_node,
    listen_to_graph,
    node_names,
    wait_for,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    param = sub.add_parser("param", help="get and set node parameters (like `ros2 param`)")
    verbs = param.add_subparsers(dest="verb", required=True)

    def verb(name: str, help_text: str, handler: Callable[[argparse.Namespace], int],
             node_optional: bool = False) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, help=help_text)
        p.add_argument("node_name", nargs="?" if node_optional else None,
                       help="e.g. /so101_bridge" + (" (default: every node)" if node_optional else ""))
        p.add_argument("--include-hidden-nodes", action="store_true", help="consider hidden nodes as well")
        p.add_argument("--timeout", type=float, default=DISCOVERY_TIMEOUT_S,
                       help="how long to wait for the node and its parameter services (s)")
        p.set_defaults(handler=handler)
        return p

    p = verb("list", "output a list of available parameters", cmd_list, node_optional=True)
    p.add_argument("--filter", help="only parameters matching this regular expression")
    p.add_argument("--param-prefixes", nargs="+", default=[], help="only parameters with these prefixes")
    p.add_argument("--param-type", action="store_true", help="print parameter types with parameter names")
    p.add_argument("--spin-time", type=float, default=LIST_SPIN_S,
                   help="without a node: how long to listen for the nodes in the graph (s)")
    p = verb("get", "get a parameter", cmd_get)
    p.add_argument("parameter_name")
    p.add_argument("--hide-type", action="store_true", help="print only the value")
    p = verb("set", "set a parameter (the value is parsed as YAML, as ros2 param set)", cmd_set)
    p.add_argument("parameter_name")
    p.add_argument("value")
    p = verb("describe", "show descriptive information about declared parameters", cmd_describe)
    p.add_argument("parameter_names", nargs="+")
    verb("dump", "print the node's parameters as a ROS params file", cmd_dump)


# --- talking to a node's parameter services ------------------------------------------------------------

def _wait_for_node(node: Node, target: str, args: argparse.Namespace) -> None:
    def present() -> bool:
        return target in node_names(node, include_hidden=args.include_hidden_nodes)
    if not wait_for(present, args.timeout):
        raise CliError(f"Node not found: {target} (not in the graph after {args.timeout:g} s; "
                       "see `gemma3nvla-ros node list`)")


def _client(node: Node, target: str, timeout: float) -> AsyncParameterClient:
    client = AsyncParameterClient(node, target)
    # our poll rather than client.wait_for_services(): a finer step, and it ends on Ctrl-C
    if not wait_for(client.services_are_ready, timeout):
        raise CliError(f"Wait for service timed out waiting for parameter services for node {target}")
    return client


def _result(node: Node, target: str, future: Future, timeout: float) -> Any:
    rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
    if not future.done():
        raise CliError(f"Exception while calling service of node '{target}': no reply within {timeout:g} s")
    if future.exception() is not None:
        raise CliError(f"Exception while calling service of node '{target}': {future.exception()}")
    return future.result()


def _connect(node: Node, args: argparse.Namespace) -> tuple[str, AsyncParameterClient]:
    target = absolute_node_name(args.node_name)
    _wait_for_node(node, target, args)
    return target, _client(node, target, args.timeout)


# --- verbs -----------------------------------------------------------------------------------------------

def _list_targets(node: Node, args: argparse.Namespace) -> list[str]:
    if args.node_name:
        target = absolute_node_name(args.node_name)
        _wait_for_node(node, target, args)
        return [target]
    listen_to_graph(args.spin_time)  # ros2: every node in the graph, each under a "/name:" heading
    own = node.get_fully_qualified_name()
    return sorted({t for t in node_names(node, include_hidden=args.include_hidden_nodes) if t != own})


def cmd_list(args: argparse.Namespace) -> int:
    regex = re.compile(args.filter) if args.filter else None
    with cli_node() as node:
        for target in _list_targets(node, args):
            try:
                client = _client(node, target, args.timeout)
                listed = _result(node, target, client.list_parameters(args.param_prefixes), args.timeout)
            except CliError as exc:
                if args.node_name:
                    raise
                print(exc, file=sys.stderr)  # one node without parameter services spoils no list
                continue
            names = [n for n in sorted(listed.result.names) if regex is None or regex.match(n)]
            if not args.node_name and names:
                print(f"{target}:")
            types: dict[str, str] = {}
            if args.param_type and names:
                described = _result(node, target, client.describe_parameters(names), args.timeout)
                types = {d.name: param_values.type_string(d.type) for d in described.descriptors}
            for name in names:
                print(f"  {name} (type: {types.get(name, 'unknown')})" if args.param_type else f"  {name}")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    with cli_node() as node:
        target, client = _connect(node, args)
        values = _result(node, target, client.get_parameters([args.parameter_name]), args.timeout).values
    if not values:  # the node answers nothing for an undeclared name
        raise CliError(f"Parameter not set: {args.parameter_name} is not declared on {target}")
    print(param_values.get_output(values[0], hide_type=args.hide_type))
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    parameter = Parameter(name=args.parameter_name, value=param_values.value_from_string(args.value))
    with cli_node() as node:
        target, client = _connect(node, args)
        response = _result(node, target, client.set_parameters([parameter]), args.timeout)
    if len(response.results) != 1:
        raise CliError(f"Unexpected number of results from {target}: {len(response.results)}")
    result = response.results[0]
    reason = f": {result.reason}" if result.reason else ""
    if result.successful:
        print("Set parameter successful" + reason)
        return 0
    print("Setting parameter failed" + reason, file=sys.stderr)
    return 1


def cmd_describe(args: argparse.Namespace) -> int:
    with cli_node() as node:
        target, client = _connect(node, args)
        response = _result(node, target, client.describe_parameters(args.parameter_names), args.timeout)
    # rclpy's service answers nothing at all if one of the names is not declared
    if len(response.descriptors) != len(args.parameter_names):
        raise CliError(f"Parameter not declared on {target}: at least one of {', '.join(args.parameter_names)}")
    for descriptor in response.descriptors:
        print(param_values.describe_output(descriptor))
    return 0


def cmd_dump(args: argparse.Namespace) -> int:
    with cli_node() as node:
        target, client = _connect(node, args)
        names = sorted(_result(node, target, client.list_parameters(), args.timeout).result.names)
        values = _result(node, target, client.get_parameters(names), args.timeout).values if names else []
    if len(values) != len(names):
        raise CliError(f"{target} did not return a value for every parameter it listed")
    params = {n: param_values.python_value(v) for n, v in zip(names, values)}
    sys.stdout.write(param_values.dump_yaml(target, params))
    return 0
