"""The short-lived node every ``gemma3nvla-ros topic|param|node|service`` command runs on.

A hidden name (``_gemma3nvla_ros_cli_<pid>``: the leading underscore keeps it out of ``node list``,
as ros2cli's ``_ros2cli_*`` nodes), no /rosout and no parameter services, so it adds as little as
possible to the graph it looks at. There is no ros2 daemon here: every command discovers the graph
from scratch, so waits poll the graph until what is wanted shows up (a node, a topic's type, a
service), with a timeout.
"""
from __future__ import annotations

import importlib
import os
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import rclpy
from rclpy.node import HIDDEN_NODE_PREFIX, Node
from rclpy.parameter import Parameter

POLL_S = 0.05
# How long the list verbs listen by default: Fast DDS' participant announcement period, and then some.
LIST_SPIN_S = 3.5
# Default longest wait for one wanted thing (a node, a topic's type); found sooner, no wait.
DISCOVERY_TIMEOUT_S = 5.0


class CliError(Exception):
    """A user-facing failure: printed to stderr, exit status 1."""


def load_type(name: str, kind: str = "msg") -> type:
    """The generated class for ``pkg/msg/Name`` (``pkg/Name`` accepted, as ros2cli does)."""
    parts = name.strip("/").split("/")
    if len(parts) == 2:
        parts = [parts[0], kind, parts[1]]
    what = "message" if kind == "msg" else "service"
    try:
        if len(parts) != 3 or parts[1] != kind or not all(parts):
            raise ValueError(name)
        cls = getattr(importlib.import_module(f"{parts[0]}.{parts[1]}"), parts[2])
    except (ImportError, AttributeError, ValueError):
        raise CliError(f"The passed {what} type '{name}' is invalid (unknown package or name)") from None
    if not (hasattr(cls, "Request") if kind == "srv" else hasattr(cls, "SLOT_TYPES")):
        raise CliError(f"The passed type '{name}' is not a {what}")
    return cls


@contextmanager
def cli_node() -> Iterator[Node]:
    """rclpy initialised and the CLI's node; both torn down on the way out (Ctrl-C included)."""
    rclpy.init(args=[])
    try:
        node = rclpy.create_node(
            f"{HIDDEN_NODE_PREFIX}gemma3nvla_ros_cli_{os.getpid()}", start_parameter_services=False,
            enable_rosout=False,
            parameter_overrides=[Parameter("start_type_description_service", value=False)])
        try:
            yield node
        finally:
            node.destroy_node()
    finally:
        rclpy.try_shutdown()


def wait_for(condition: Callable[[], object], timeout: float) -> bool:
    """Poll ``condition`` until it holds (True), ``timeout`` passes or rclpy shuts down (False)."""
    deadline = time.monotonic() + timeout
    while rclpy.ok():
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return False


def clock_now(node: Node) -> Callable[[], tuple[int, int]]:
    """(sec, nanosec) of the node's clock: what ``now``/``auto`` stamps in YAML values become."""
    return lambda: divmod(node.get_clock().now().nanoseconds, 1_000_000_000)


def full_node_name(name: str, namespace: str) -> str:
    return namespace.rstrip("/") + "/" + name


def absolute_node_name(name: str) -> str:
    return name if name.startswith("/") else "/" + name


def node_names(node: Node, include_hidden: bool = False) -> list[str]:
    """Fully qualified names of the nodes in the graph (hidden ones as ros2node filters them)."""
    return [full_node_name(n, ns) for n, ns in node.get_node_names_and_namespaces()
            if include_hidden or (n and not n.startswith(HIDDEN_NODE_PREFIX))]


def listen_to_graph(seconds: float) -> None:
    """Let discovery run for ``seconds``: for the verbs that show the whole graph (``topic list``,
    ``node list``, ``param list`` without a node), which have no one name to wait for. A list
    cannot tell that it is complete: Fast DDS reports an already running participant either at
    once or at its next announcement (every 3 s), so stopping when the graph looks still would
    miss some. This is ros2's ``--no-daemon --spin-time``."""
    wait_for(lambda: False, seconds)
