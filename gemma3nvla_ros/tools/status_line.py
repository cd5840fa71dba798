"""A one-line live view of the running loop for the terminal (``gemma3nvla-ros launch ... --status``):
policy latency and state, queue level, watchdog, joint positions and the task, instead of every node's
log lines (those go to a file).

``format_status`` is pure; ``StatusMonitor`` feeds it from /diagnostics and /joint_states through a
small rclpy node spinning on a thread of the launcher process.
"""
from __future__ import annotations

import threading
from collections.abc import Mapping

Diagnostics = Mapping[str, Mapping[str, str]]  # status name -> key/values (plus "_message", "_level")


def _find(diags: Diagnostics, suffix: str) -> Mapping[str, str]:
    for name, values in diags.items():
        if name.endswith(suffix):
            return values
    return {}


def format_status(diags: Diagnostics, joints: Mapping[str, float] | None, width: int = 160) -> str:
    policy, queue, bus = _find(diags, ": policy"), _find(diags, ": action queue"), _find(diags, ": servo bus")
    parts = []
    if policy:
        if policy.get("_level", "0") != "0":
            parts.append(f"policy: {policy.get('_message', '')}")
        else:
            parts.append(f"chunk {policy.get('latency_p50_ms', '?')} ms (p95 {policy.get('latency_p95_ms', '?')}), "
                         f"{policy.get('chunks_published', '0')} chunks")
    else:
        parts.append("policy: (no report yet)")
    if queue:
        held = " HOLD" if "holding" in queue.get("_message", "") else ""
        parts.append(f"queue {queue.get('queued', '?')}{held}")
    if bus:
        parts.append(f"arm {bus.get('watchdog', '?')}")
    if joints:
        parts.append("q [" + " ".join(f"{v:+.2f}" for v in joints.values()) + "]")
    if policy:
        parts.append(f"task {policy.get('task', '')!r}")
    line = " | ".join(parts)
    return line if len(line) <= width else line[: width - 1] + "…"


class StatusMonitor:
    """Collects what ``format_status`` needs; ``line()`` is safe to call from any thread."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.signals import SignalHandlerOptions

        self._rclpy = rclpy
        self._context = rclpy.context.Context()
        rclpy.init(args=[], context=self._context, signal_handler_options=SignalHandlerOptions.NO)
        self._lock = threading.Lock()
        self._diags: dict[str, dict[str, str]] = {}
        self._joints: dict[str, float] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        import diagnostic_msgs.msg
        import sensor_msgs.msg
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        self._node = Node(f"_gemma3nvla_status_{id(self) % 100000}", context=self._context,
                          enable_rosout=False, start_parameter_services=False)
        self._node.create_subscription(diagnostic_msgs.msg.DiagnosticArray, "/diagnostics", self._on_diag, 20)
        self._node.create_subscription(sensor_msgs.msg.JointState, "/joint_states", self._on_joints, 5)
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self._node)
        self._thread = threading.Thread(target=self._spin, name="status", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self._context.ok():
            try:
                self._executor.spin_once(timeout_sec=0.1)
            except Exception:  # noqa: BLE001 - shutdown races; the status line is best effort
                return

    def _on_diag(self, msg) -> None:
        with self._lock:
            for status in msg.status:
                values = {kv.key: kv.value for kv in status.values}
                values["_message"], values["_level"] = status.message, str(status.level[0])
                self._diags[status.name] = values

    def _on_joints(self, msg) -> None:
        with self._lock:
            self._joints = dict(zip(msg.name, msg.position))

    def line(self, width: int = 160) -> str:
        with self._lock:
            return format_status(dict(self._diags), self._joints, width)

    def stop(self) -> None:
        self._context.try_shutdown()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
