"""The non-ROS launcher: each node of a graph as its own process, like ``ros2 launch``.

Logs are prefixed with the node name; Ctrl-C, SIGTERM, SIGHUP (terminal closed) and SIGQUIT stop every
node (SIGINT, then SIGTERM, then SIGKILL after grace periods); a required node that exits stops the
launch with a non-zero status. A node that exits with status 2 said it cannot start as configured and
is not respawned; other respawns back off (the delay doubles per quick crash) and give up after
``RESPAWN_LIMIT`` crashes in a row. If the launcher itself is killed (SIGKILL), each node notices that
its parent is gone and stops on its own (``nodes.run``).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable, TextIO

from gemma3nvla_ros.launch_graph import Graph, NodeSpec
from gemma3nvla_ros.network import loopback_environment

SIGINT_GRACE_S = 10.0
SIGTERM_GRACE_S = 5.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
CANNOT_START = 2  # nodes.run.STARTUP_FAILED: respawning cannot help
RESPAWN_LIMIT = 5  # crashes in a row before giving up
RESPAWN_BACKOFF_MAX_S = 30.0
STABLE_RUN_S = 30.0  # a node that ran this long before exiting starts its backoff afresh


def node_command(executable: str, ros_args: list[str]) -> list[str]:
    """The command line that runs ``executable`` (a console script of this package) in this interpreter.

    Running through ``sys.executable`` keeps every node in the launcher's environment (venv), which is
    what lets a policy node live in its own venv and still be launched from another.
    """
    target = _console_scripts().get(executable)
    if target is None:
        known = ", ".join(sorted(_console_scripts()))
        raise LookupError(f"no executable '{executable}' in gemma3nvla_ros; available: {known}")
    module, _, func = target.partition(":")
    bootstrap = f"import sys; from {module} import {func} as main; sys.exit(main())"
    return [sys.executable, "-u", "-c", bootstrap, *ros_args]


def _console_scripts() -> dict[str, str]:
    return {
        ep.name: ep.value
        for ep in entry_points(group="console_scripts")
        if ep.value.startswith("gemma3nvla_ros.") and ep.name != "gemma3nvla-ros"
    }


@dataclass
class _Running:
    spec: NodeSpec
    process: subprocess.Popen
    reader: threading.Thread
    started: float  # time.monotonic()


@dataclass
class RespawnPolicy:
    """When to restart a node that exited by itself (pure: times are passed in)."""

    crashes: int = 0

    def next_delay(self, base_delay: float, code: int, ran_s: float) -> float | None:
        """Seconds to wait before the restart, or None to leave the node stopped."""
        if code == CANNOT_START:
            return None
        self.crashes = 1 if ran_s >= STABLE_RUN_S else self.crashes + 1
        if self.crashes > RESPAWN_LIMIT:
            return None
        return min(RESPAWN_BACKOFF_MAX_S, base_delay * 2 ** (self.crashes - 1))


class Launcher:
    def __init__(
        self,
        graph: Graph,
        out: TextIO = sys.stdout,
        env: dict[str, str] | None = None,
        command_for: Callable[[str, list[str]], list[str]] = node_command,
        node_output: TextIO | None = None,
        status: Callable[[], str] | None = None,
    ) -> None:
        """``node_output``: where node log lines go (default: ``out``, prefixed with the node name).
        ``status``: a one-line summary redrawn in place on ``out`` twice a second."""
        self.graph = graph
        self._command_for = command_for
        self._out = out
        self._node_output = node_output
        self._status = status
        self._status_at = 0.0
        # One host unless the user's environment says otherwise (gemma3nvla_ros.network).
        self._env = loopback_environment(os.environ if env is None else env)
        self._env["PYTHONUNBUFFERED"] = "1"
        self._print_lock = threading.Lock()
        self._stop = threading.Event()
        self._tmp = tempfile.TemporaryDirectory(prefix=f"gemma3nvla_{graph.name}_")

    def log(self, line: str, source: str = "launch") -> None:
        out = self._out if source == "launch" or self._node_output is None else self._node_output
        clear = "\r\033[K" if out is self._out and self._status is not None else ""
        with self._print_lock:
            try:
                out.write(f"{clear}[{source}] {line}\n")
                out.flush()
            except (OSError, ValueError):
                pass  # the terminal is gone (SIGHUP): stopping the nodes matters more than the log

    def _draw_status(self) -> None:
        if self._status is None or time.monotonic() - self._status_at < 0.5:
            return
        self._status_at = time.monotonic()
        with self._print_lock:
            try:
                self._out.write("\r\033[K" + self._status())
                self._out.flush()
            except (OSError, ValueError):
                pass

    def request_stop(self, *_args: object) -> None:
        self._stop.set()

    def run(self) -> int:
        """Start every node, supervise them, and return the launch's exit status."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, self.request_stop)
        running: dict[str, _Running] = {}
        respawns: dict[str, RespawnPolicy] = {}
        status = 0
        try:
            for spec in self.graph.nodes:
                if self._stop.is_set():  # Ctrl-C/SIGTERM during start-up: start nothing more
                    break
                running[spec.name] = self._start(spec)
            respawn_at: dict[str, float] = {}
            while not self._stop.is_set():
                for name, item in list(running.items()):
                    code = item.process.poll()
                    if code is None:
                        continue
                    item.reader.join(timeout=1.0)
                    del running[name]
                    if item.spec.required:
                        self.log(f"required node '{name}' exited with code {code}; stopping the launch")
                        # killed by a signal (negative code): the shell's 128+N, never a negative exit
                        status = code if code > 0 else (128 - code if code < 0 else 1)
                        self._stop.set()
                    elif item.spec.respawn:
                        ran = time.monotonic() - item.started
                        delay = respawns.setdefault(name, RespawnPolicy()).next_delay(item.spec.respawn_delay, code, ran)
                        if delay is None:
                            why = ("it cannot start as configured (see its log above)" if code == CANNOT_START
                                   else f"it crashed {RESPAWN_LIMIT} times in a row")
                            self.log(f"node '{name}' exited with code {code}; not respawning: {why}")
                        else:
                            self.log(f"node '{name}' exited with code {code}; respawning in {delay:g} s")
                            respawn_at[name] = time.monotonic() + delay
                    else:
                        self.log(f"node '{name}' exited with code {code}")
                for name, when in list(respawn_at.items()):
                    if time.monotonic() >= when and not self._stop.is_set():
                        del respawn_at[name]
                        spec = next(s for s in self.graph.nodes if s.name == name)
                        running[name] = self._start(spec)
                if not running and not respawn_at:
                    self.log("all nodes exited")
                    break
                self._draw_status()
                self._stop.wait(0.1)
        finally:
            self._shutdown(running)
            self._tmp.cleanup()
        return status

    def _start(self, spec: NodeSpec) -> _Running:
        params = Path(self._tmp.name) / f"{spec.name}.params.yaml"
        params.write_text(spec.params_yaml())
        command = self._command_for(spec.executable, spec.ros_args(str(params)))
        # Own process group: the terminal's Ctrl-C reaches only the launcher, which stops nodes in order.
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self._env,
            start_new_session=True,
            text=True,
            errors="replace",
        )
        reader = threading.Thread(target=self._pump, args=(spec.name, process), daemon=True)
        reader.start()
        self.log(f"started '{spec.name}' ({spec.executable}) pid {process.pid}")
        return _Running(spec, process, reader, time.monotonic())

    def _pump(self, name: str, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.log(line.rstrip("\n"), source=name)

    def _shutdown(self, running: dict[str, _Running]) -> None:
        for sig, grace in ((signal.SIGINT, SIGINT_GRACE_S), (signal.SIGTERM, SIGTERM_GRACE_S), (signal.SIGKILL, 0.0)):
            alive = [item for item in running.values() if item.process.poll() is None]
            if not alive:
                break
            for item in alive:
                _signal(item.process, sig)
            deadline = time.monotonic() + grace
            for item in alive:
                try:
                    item.process.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.log(f"node '{item.spec.name}' did not stop on {signal.Signals(sig).name}")
        for item in running.values():
            if item.process.poll() is None:
                item.process.wait()
            item.reader.join(timeout=1.0)
            self.log(f"node '{item.spec.name}' stopped (code {item.process.returncode})")


def _signal(process: subprocess.Popen, sig: int) -> None:
    try:
        process.send_signal(sig)
    except ProcessLookupError:
        pass


