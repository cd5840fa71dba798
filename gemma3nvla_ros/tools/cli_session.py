"""The short-lived node every ``gemma3nvla-ros topic|param|node|service`` command runs on.

Always the built-in runtime (the commands exist for machines without ROS), hidden name
``_gemma3nvla_ros_cli_<pid>`` (a leading underscore hides it from ``node list``, as ros2cli's
``_ros2cli_*`` nodes), no /rosout and no parameter services, so it adds as little as possible to
the graph it looks at. Discovery is waited for by polling, never by a fixed sleep.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

from gemma3nvla_ros.runtime import rclpy_api
from gemma3nvla_ros.runtime.discovery import Endpoint, monitor_for
from gemma3nvla_ros.runtime.interfaces import get_type
from gemma3nvla_ros.runtime.node import Node

POLL_S = 0.02


class CliError(Exception):
    """A user-facing failure: printed to stderr, exit status 1."""


def load_type(name: str, kind: str = "msg") -> type:
    """The class for ``pkg/msg/Name`` (``pkg/Name`` accepted, as ros2cli does)."""
    parts = name.strip("/").split("/")
    if len(parts) == 2:
        parts = [parts[0], kind, parts[1]]
    try:
        if len(parts) != 3 or parts[1] != kind:
            raise KeyError(name)
        return get_type("/".join(parts))
    except KeyError:
        what = "message" if kind == "msg" else "service"
        raise CliError(f"The passed {what} type '{name}' is invalid (or not one this runtime knows)") from None


class CliSession:
    def __init__(self) -> None:
        rclpy_api.init(args=[])
        self.node = Node(f"_gemma3nvla_ros_cli_{os.getpid()}", enable_rosout=False,
                         start_parameter_services=False)
        self._participant = self.node.context.participant()
        self._monitor = monitor_for(self._participant)
        if self._monitor is None:
            raise CliError("DDS discovery information is not available (builtin topic readers refused)")

    def ok(self) -> bool:
        return rclpy_api.ok()

    # --- discovery -----------------------------------------------------------------------------------
    def endpoints(self) -> list[Endpoint]:
        return self._monitor.endpoints()

    def foreign_endpoints(self) -> list[Endpoint]:
        return [e for e in self.endpoints() if e.participant_guid != self._participant.guid]

    def publishers(self, topic: str) -> list[Endpoint]:
        return [e for e in self.endpoints() if e.topic_name == "rt" + topic and not e.is_reader]

    def topic_types(self, topic: str) -> list[str]:
        return dict(self.node.get_topic_names_and_types()).get(topic, [])

    def wait_for(self, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.ok():
            if condition():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)
        return False

    def wait_settled(self, timeout: float, quiet: float = 0.3,
                     snapshot: Optional[Callable[[], object]] = None) -> None:
        """Wait until some other participant's endpoints are known and the picture (``snapshot``,
        default: the endpoint set) has not changed for ``quiet`` seconds, or ``timeout``."""
        snap = snapshot or (lambda: frozenset(e.guid for e in self.endpoints()))
        deadline = time.monotonic() + timeout
        last, since = None, time.monotonic()
        while self.ok() and time.monotonic() < deadline:
            now_snap = snap()
            if now_snap != last:
                last, since = now_snap, time.monotonic()
            elif self.foreign_endpoints() and time.monotonic() - since >= quiet:
                return
            time.sleep(POLL_S * 2)

    def spin_once(self, timeout_sec: float) -> None:
        if not self.ok():  # Ctrl-C shut the context down: callers see ok() False and stop
            return
        rclpy_api.spin_once(self.node, timeout_sec=timeout_sec)

    def now(self) -> tuple[int, int]:
        return divmod(self.node.get_clock().now().nanoseconds, 1_000_000_000)

    def close(self) -> None:
        try:
            self.node.destroy_node()
        finally:
            rclpy_api.try_shutdown()


@contextmanager
def cli_session() -> Iterator[CliSession]:
    session = CliSession()
    try:
        yield session
    finally:
        session.close()
