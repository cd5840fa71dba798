"""rclpy.context.Context: init/shutdown state, the parsed ROS arguments, and the process' single DDS
participant (created on first use, shared by all nodes, like rmw_cyclonedds' one per context)."""
from __future__ import annotations

import signal
import threading
import weakref
from typing import Callable, Optional, Sequence

from gemma3nvla_ros.runtime import rcutils_logger
from gemma3nvla_ros.runtime.arguments import RosArguments, parse_ros_args


class Context:
    def __init__(self):
        self._lock = threading.RLock()
        self._ok = False
        self._initialized = False
        self.args = RosArguments()
        self._participant = None
        self._graph = None
        self._settings = None
        self._on_shutdown: list[Callable[[], None]] = []
        self._wakers: "weakref.WeakSet" = weakref.WeakSet()  # executors to wake on shutdown

    # --- lifecycle -----------------------------------------------------------------------------------
    def init(self, args: Optional[Sequence[str]] = None, domain_id: Optional[int] = None) -> None:
        with self._lock:
            if self._ok:
                raise RuntimeError("Context.init() must only be called once")
            self.args = parse_ros_args(args)
            self._domain_override = domain_id
            for logger, level in self.args.log_levels.items():
                sev = rcutils_logger.severity_from_name(level)
                if logger is None:
                    rcutils_logger.set_default_level(sev)
                else:
                    rcutils_logger.set_logger_level(logger, sev)
            self._ok = True
            self._initialized = True

    def ok(self) -> bool:
        return self._ok

    def shutdown(self) -> None:
        with self._lock:
            if not self._ok:
                raise RuntimeError("Context must be initialized before it can be shutdown")
            self._shutdown_locked()

    def try_shutdown(self) -> None:
        with self._lock:
            if self._ok:
                self._shutdown_locked()

    def _shutdown_locked(self) -> None:
        self._ok = False
        callbacks, self._on_shutdown = self._on_shutdown, []
        for cb in callbacks:
            try:
                cb()
            except Exception as exc:  # a broken callback must not stop the shutdown
                rcutils_logger.get_logger("rclpy").error(f"on_shutdown callback failed: {exc!r}")
        for w in list(self._wakers):
            w.wake()

    def on_shutdown(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._on_shutdown.append(callback)

    def _add_waker(self, executor) -> None:
        self._wakers.add(executor)

    def destroy(self) -> None:
        """Release the DDS participant (end of process / after shutdown)."""
        with self._lock:
            part, self._participant = self._participant, None
            graph, self._graph = self._graph, None
        if graph is not None:
            graph.close()
        if part is not None:
            from gemma3nvla_ros.runtime.discovery import close_monitor
            from gemma3nvla_ros.runtime.graph import close_node_graph
            close_node_graph(part)
            close_monitor(part)
            part.close()

    # --- DDS -----------------------------------------------------------------------------------------
    @property
    def settings(self):
        from gemma3nvla_ros.runtime.dds_config import build_settings
        if self._settings is None:
            self._settings = build_settings()
        return self._settings

    def participant(self):
        with self._lock:
            if self._participant is None:
                from gemma3nvla_ros.runtime.dds import Participant
                s = self.settings
                did = self._domain_override if self._domain_override is not None else s.domain_id
                enclave = self.args.enclave or "/"
                self._participant = Participant(did, s.config, f"enclave={enclave};".encode())
            return self._participant

    @property
    def graph(self):
        with self._lock:
            if self._graph is None:
                from gemma3nvla_ros.runtime.graph import GraphInfo
                self._graph = GraphInfo(self.participant(), self.settings.distro)
            return self._graph

    def next_cs_id(self) -> bytes:
        """A client/service id as rmw_cyclonedds makes them: 12 bytes of the participant GUID prefix
        + a 4-byte per-process counter."""
        with self._lock:
            self._cs_counter = getattr(self, "_cs_counter", 0) + 1
            return self.participant().guid[:12] + self._cs_counter.to_bytes(4, "big")

    @property
    def distro(self) -> str:
        return self.settings.distro


_default_context = Context()


def default_context() -> Context:
    return _default_context


def install_signal_handlers(context: Context) -> None:
    """As rclpy: SIGINT and SIGTERM shut the context down, then chain to the previous handler
    (Python's default SIGINT handler raises KeyboardInterrupt in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(signum)
        if getattr(previous, "_gemma3nvla_ros", False):
            continue

        def handler(num, frame, _prev=previous):
            context.try_shutdown()
            if callable(_prev):
                _prev(num, frame)
            elif _prev == signal.SIG_DFL and num == signal.SIGINT:
                raise KeyboardInterrupt

        handler._gemma3nvla_ros = True  # type: ignore[attr-defined]
        try:
            signal.signal(signum, handler)
        except (ValueError, OSError):  # pragma: no cover - not in main thread / unsupported
            pass


