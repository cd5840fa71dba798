"""``gemma3nvla-ros param list|get|set|dump`` (as ``ros2 param ...``) through a node's parameter
services (rcl_interfaces/srv/*) over DDS."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from gemma3nvla_ros.runtime.interfaces import rcl_interfaces
from gemma3nvla_ros.runtime.qos import qos_profile_parameters
from gemma3nvla_ros.tools import param_values
from gemma3nvla_ros.tools.cli_session import CliError, CliSession, cli_session

DEFAULT_TIMEOUT = 5.0


def add_parser(sub: argparse._SubParsersAction) -> None:
    param = sub.add_parser("param", help="get and set node parameters (like `ros2 param`)")
    verbs = param.add_subparsers(dest="verb", required=True)

    def verb(name: str, help_text: str, handler) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, help=help_text)
        p.add_argument("node_name", help="e.g. /so101_bridge")
        p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                       help="how long to wait for the node's parameter services (s)")
        p.set_defaults(handler=handler)
        return p

    verb("list", "output a list of the node's parameters", cmd_list)
    p = verb("get", "get a parameter", cmd_get)
    p.add_argument("parameter_name")
    p.add_argument("--hide-type", action="store_true", help="print only the value")
    p = verb("set", "set a parameter (the value is parsed as YAML, as ros2 param set)", cmd_set)
    p.add_argument("parameter_name")
    p.add_argument("value")
    verb("dump", "print the node's parameters as a ROS params file", cmd_dump)


def _node_name(name: str) -> str:
    return name if name.startswith("/") else "/" + name


def _call(s: CliSession, node: str, service: str, srv_type: Any, request: Any, timeout: float) -> Any:
    client = s.node.create_client(srv_type, f"{node}/{service}", qos_profile=qos_profile_parameters)
    try:
        if not client.wait_for_service(timeout_sec=timeout):
            raise CliError(f"Node not found: {node} (its parameter services did not answer within {timeout:g} s;"
                           " see `gemma3nvla-ros node list`)")
        response = client.call(request, timeout_sec=timeout)
        if response is None:
            raise CliError(f"Exception while calling service of node '{node}': no reply to {service} "
                           f"within {timeout:g} s")
        return response
    finally:
        s.node.destroy_client(client)


def _list_names(s: CliSession, node: str, timeout: float) -> list[str]:
    srv = rcl_interfaces.srv.ListParameters
    response = _call(s, node, "list_parameters", srv, srv.Request(), timeout)
    return sorted(response.result.names)


def _get_values(s: CliSession, node: str, names: list[str], timeout: float) -> list[Any]:
    srv = rcl_interfaces.srv.GetParameters
    return list(_call(s, node, "get_parameters", srv, srv.Request(names=names), timeout).values)


def cmd_list(args: argparse.Namespace) -> int:
    node = _node_name(args.node_name)
    with cli_session() as s:
        for name in _list_names(s, node, args.timeout):
            print(f"  {name}")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    node = _node_name(args.node_name)
    with cli_session() as s:
        values = _get_values(s, node, [args.parameter_name], args.timeout)
    if len(values) != 1:  # the node answers nothing for an undeclared name
        raise CliError(f"Parameter not set: {args.parameter_name} is not declared on {node}")
    print(param_values.get_output(values[0], hide_type=args.hide_type))
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    node = _node_name(args.node_name)
    srv = rcl_interfaces.srv.SetParameters
    parameter = rcl_interfaces.msg.Parameter(name=args.parameter_name,
                                             value=param_values.value_from_string(args.value))
    with cli_session() as s:
        response = _call(s, node, "set_parameters", srv, srv.Request(parameters=[parameter]), args.timeout)
    if len(response.results) != 1:
        raise CliError(f"Unexpected number of results from {node}: {len(response.results)}")
    result = response.results[0]
    if result.successful:
        print("Set parameter successful" + (f": {result.reason}" if result.reason else ""))
        return 0
    print("Setting parameter failed" + (f": {result.reason}" if result.reason else ""), file=sys.stderr)
    return 1


def cmd_dump(args: argparse.Namespace) -> int:
    node = _node_name(args.node_name)
    with cli_session() as s:
        names = _list_names(s, node, args.timeout)
        values = _get_values(s, node, names, args.timeout) if names else []
    if len(values) != len(names):
        raise CliError(f"{node} did not return a value for every parameter it listed")
    params = {n: param_values.python_value(v) for n, v in zip(names, values)}
    sys.stdout.write(param_values.dump_yaml(node, params))
    return 0
