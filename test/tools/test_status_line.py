"""The demo's live status line, from what the nodes report on /diagnostics and /joint_states."""
from __future__ import annotations

from gemma3nvla_ros.tools.status_line import format_status

POLICY = {"_level": "0", "_message": "running", "latency_p50_ms": "41.0", "latency_p95_ms": "55.2",
          "chunks_published": "12", "task": "pick up the cube"}
QUEUE = {"_level": "0", "_message": "executing, 31 setpoints queued", "queued": "31"}
BUS = {"_level": "0", "_message": "OK", "watchdog": "active"}


def test_running_loop_shows_latency_queue_joints_and_task() -> None:
    diags = {"/gemma3nvla_policy: policy": POLICY, "action_aggregator: action queue": QUEUE,
             "so101_bridge: servo bus": BUS}
    line = format_status(diags, {"shoulder_pan": 0.1234, "gripper": -0.5})
    assert line == ("chunk 41.0 ms (p95 55.2), 12 chunks | queue 31 | arm active | q [+0.12 -0.50] | "
                    "task 'pick up the cube'")


def test_a_refusing_policy_and_a_dry_queue_say_so() -> None:
    diags = {"p: policy": {**POLICY, "_level": "1", "_message": "not inferring: no frame from camera wrist"},
             "a: action queue": {"_message": "queue empty: holding the last setpoint", "queued": "0"}}
    line = format_status(diags, None)
    assert line.startswith("policy: not inferring: no frame from camera wrist | queue 0 HOLD")


def test_long_lines_are_cut_to_the_terminal() -> None:
    line = format_status({"p: policy": {**POLICY, "task": "x" * 500}}, None, width=80)
    assert len(line) == 80 and line.endswith("…")


def test_before_any_report() -> None:
    assert format_status({}, None) == "policy: (no report yet)"
