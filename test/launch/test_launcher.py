"""The non-ROS launcher supervising real processes: log prefixes, required nodes, signals, respawn."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from gemma3nvla_ros.launch_graph import Graph, NodeSpec
from gemma3nvla_ros.launcher import Launcher

# Stand-in node programs: they print their ROS arguments and behave as told, nothing more.
PROGRAMS = {
    "forever": """
        import signal, sys, time
        print("args", " ".join(sys.argv[1:]), flush=True)
        def stop(*_):
            print("got SIGINT, cleaning up", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGINT, stop)
        while True:
            time.sleep(0.05)
    """,
    "fail_soon": """
        import sys, time
        print("starting", flush=True)
        time.sleep(0.5)
        print("fatal: serial port missing", flush=True)
        sys.exit(3)
    """,
    "cannot_start": """
        import sys
        print("FATAL: cannot open camera source", flush=True)
        sys.exit(2)
    """,
    "crash_fast": """
        import sys
        print("crashing", flush=True)
        sys.exit(1)
    """,
    "ignores_sigint": """
        import signal, time
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("stubborn", flush=True)
        while True:
            time.sleep(0.05)
    """,
}


@pytest.fixture
def programs(tmp_path: Path):
    paths = {}
    for name, body in PROGRAMS.items():
        paths[name] = tmp_path / f"{name}.py"
        paths[name].write_text(textwrap.dedent(body))
    return lambda executable, args: [sys.executable, str(paths[executable]), *args]


def _run(graph: Graph, command_for, stop_after: float | None = None) -> tuple[int, str]:
    out = io.StringIO()
    launcher = Launcher(graph, out=out, command_for=command_for)
    if stop_after is not None:
        threading.Timer(stop_after, launcher.request_stop).start()
    return launcher.run(), out.getvalue()


def test_required_node_exit_stops_everything_with_nonzero_status(programs) -> None:
    graph = Graph("t", {}, [NodeSpec("bridge", "fail_soon", required=True), NodeSpec("cam", "forever")])
    status, log = _run(graph, programs)
    assert status == 3
    assert "[bridge] fatal: serial port missing" in log
    assert "required node 'bridge' exited with code 3; stopping the launch" in log
    assert "[cam] got SIGINT, cleaning up" in log  # the others were stopped cleanly, not killed


def test_nodes_get_ros_arguments_and_prefixed_logs(programs) -> None:
    spec = NodeSpec("cam", "forever", namespace="/arm", parameters={"fps": 30}, remappings={"a": "b"})
    status, log = _run(Graph("t", {}, [spec]), programs, stop_after=1.5)
    assert status == 0
    line = next(l for l in log.splitlines() if l.startswith("[cam] args"))
    assert "--ros-args -r __node:=cam -r __ns:=/arm -r a:=b --params-file" in line


def test_stop_escalates_to_sigterm_for_a_node_that_ignores_sigint(programs, monkeypatch) -> None:
    monkeypatch.setattr("gemma3nvla_ros.launcher.SIGINT_GRACE_S", 0.5)
    status, log = _run(Graph("t", {}, [NodeSpec("stubborn", "ignores_sigint")]), programs, stop_after=1.0)
    assert "node 'stubborn' did not stop on SIGINT" in log
    assert "node 'stubborn' stopped (code -15)" in log


def test_non_required_node_is_respawned(programs) -> None:
    graph = Graph("t", {}, [NodeSpec("flaky", "fail_soon", respawn=True, respawn_delay=0.1), NodeSpec("k", "forever")])
    status, log = _run(graph, programs, stop_after=2.5)
    assert status == 0
    assert log.count("[flaky] starting") >= 2
    assert "node 'flaky' exited with code 3; respawning in 0.1 s" in log


def test_cli_sigterm_stops_the_whole_launch(tmp_path: Path) -> None:
    """`gemma3nvla-ros launch` as users run it: SIGTERM ends it and every node it started."""
    graph = tmp_path / "g.yaml"
    graph.write_text("nodes:\n  - {name: cam, executable: camera_node, parameters: {source: synthetic, fps: 5.0}}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gemma3nvla_ros.cli", "launch", str(graph)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any("started 'cam'" in l for l in lines):
        time.sleep(0.1)
    pid = int(next(l for l in lines if "started 'cam'" in l).rsplit("pid", 1)[1])
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    reader.join(timeout=5)
    assert any("node 'cam' stopped (code 0)" in l for l in lines), "".join(lines)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_cli_reports_unknown_graph_and_arguments(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gemma3nvla_ros.cli", "launch", "no_such_graph"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "no launch graph 'no_such_graph'" in result.stderr and "so101_pickplace" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "gemma3nvla_ros.cli", "launch", "so101_pickplace", "moed:=real"],
        capture_output=True, text=True,
    )
    assert result.returncode == 2 and "unknown launch argument(s) moed" in result.stderr


def test_stop_during_start_up_starts_no_further_nodes(programs) -> None:
    out = io.StringIO()
    launcher = None

    def command_for(executable, args):
        launcher.request_stop()  # Ctrl-C arrives while the first node is being started
        return programs(executable, args)

    launcher = Launcher(Graph("t", {}, [NodeSpec("first", "forever"), NodeSpec("second", "forever")]),
                        out=out, command_for=command_for)
    assert launcher.run() == 0
    assert "started 'first'" in out.getvalue() and "started 'second'" not in out.getvalue()


def test_required_node_killed_by_a_signal_gives_a_shell_style_status(tmp_path: Path) -> None:
    script = tmp_path / "killed.py"
    script.write_text("import os, signal, time\ntime.sleep(0.3)\nos.kill(os.getpid(), signal.SIGKILL)\n")
    graph = Graph("t", {}, [NodeSpec("bridge", "killed", required=True)])
    status, log = _run(graph, lambda executable, args: [sys.executable, str(script), *args])
    assert status == 128 + signal.SIGKILL
    assert "required node 'bridge' exited with code -9" in log


def test_a_node_that_cannot_start_is_not_respawned(programs) -> None:
    graph = Graph("t", {}, [NodeSpec("cam", "cannot_start", respawn=True, respawn_delay=0.05), NodeSpec("k", "forever")])
    status, log = _run(graph, programs, stop_after=1.5)
    assert status == 0
    assert log.count("[cam] FATAL") == 1
    assert "node 'cam' exited with code 2; not respawning: it cannot start as configured" in log


def test_respawns_back_off_and_give_up(programs) -> None:
    from gemma3nvla_ros.launcher import RESPAWN_LIMIT

    graph = Graph("t", {}, [NodeSpec("flaky", "crash_fast", respawn=True, respawn_delay=0.05), NodeSpec("k", "forever")])
    status, log = _run(graph, programs, stop_after=6.0)
    assert status == 0
    assert log.count("[flaky] crashing") == RESPAWN_LIMIT + 1
    assert "respawning in 0.05 s" in log and "respawning in 0.1 s" in log and "respawning in 0.2 s" in log
    assert f"not respawning: it crashed {RESPAWN_LIMIT} times in a row" in log


def test_respawn_policy_resets_after_a_stable_run() -> None:
    from gemma3nvla_ros.launcher import STABLE_RUN_S, RespawnPolicy

    policy = RespawnPolicy()
    assert [policy.next_delay(1.0, 1, 0.1) for _ in range(3)] == [1.0, 2.0, 4.0]
    assert policy.next_delay(1.0, 1, STABLE_RUN_S) == 1.0  # it ran fine for a while: a fresh start
    assert policy.next_delay(1.0, 2, 100.0) is None


def _launch_camera(tmp_path: Path) -> tuple[subprocess.Popen, list[str], int]:
    graph = tmp_path / "g.yaml"
    graph.write_text("nodes:\n  - {name: cam, executable: camera_node, parameters: {source: synthetic, fps: 5.0}}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gemma3nvla_ros.cli", "launch", str(graph)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any("synthetic ->" in l for l in lines):
        time.sleep(0.1)
    pid = int(next(l for l in lines if "started 'cam'" in l).rsplit("pid", 1)[1])
    return proc, lines, pid


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGQUIT])
def test_terminal_hangup_or_quit_stops_every_node(tmp_path: Path, sig: int) -> None:
    proc, lines, pid = _launch_camera(tmp_path)
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == 0
    assert _gone(pid, 5.0), "".join(lines)


def test_nodes_stop_when_the_launcher_is_killed(tmp_path: Path) -> None:
    """SIGKILL leaves the launcher no chance to stop anything: the nodes notice and stop themselves."""
    proc, lines, pid = _launch_camera(tmp_path)
    proc.kill()
    proc.wait()
    assert _gone(pid, 10.0), "".join(lines)
