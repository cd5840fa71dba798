"""``gemma3nvla-ros service call`` (as ``ros2 service call``)."""
from __future__ import annotations

import argparse

import rclpy

from gemma3nvla_ros.tools import msg_yaml
from gemma3nvla_ros.tools.cli_session import CliError, cli_node, clock_now, load_type


def add_parser(sub: argparse._SubParsersAction) -> None:
    service = sub.add_parser("service", help="call services (like `ros2 service`)")
    verbs = service.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("call", help="call a service")
    p.add_argument("service_name")
    p.add_argument("service_type", help="e.g. std_srvs/srv/Trigger")
    p.add_argument("values", nargs="?", default="{}", help="request fields in YAML, e.g. '{data: true}'")
    p.add_argument("--timeout", type=float, default=10.0, help="wait this long for the service and its reply (s)")
    p.set_defaults(handler=cmd_call)


def cmd_call(args: argparse.Namespace) -> int:
    srv_type = load_type(args.service_type, kind="srv")
    values = msg_yaml.parse_yaml_values(args.values)
    with cli_node() as node:
        now = clock_now(node)
        request = msg_yaml.fill_message(srv_type.Request, values, now)
        name = node.resolve_service_name(args.service_name)
        client = node.create_client(srv_type, name)
        if not client.service_is_ready():
            print("waiting for service to become available...", flush=True)
            if not client.wait_for_service(timeout_sec=args.timeout):
                raise CliError(f"service {name} ({args.service_type}) not available within {args.timeout:g} s")
        print(f"requester: making request: {request!r}\n", flush=True)
        future = client.call_async(request)
        rclpy.spin_until_future_complete(node, future, timeout_sec=args.timeout)
        if not future.done():
            raise CliError(f"no response from {name} within {args.timeout:g} s")
        if future.result() is None:
            raise CliError(f"Exception while calling service: {future.exception()!r}")
        print(f"response:\n{future.result()!r}\n", flush=True)
    return 0
