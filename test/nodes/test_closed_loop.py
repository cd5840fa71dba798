"""The closed loop over DDS, every node its own process: cameras + bridge (simulated servos) -> policy
(a small local checkpoint) -> aggregator -> bridge. Faults: a dead camera, a killed policy, bad
tasks."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import diagnostic_msgs.msg
import numpy as np
import pytest
import sensor_msgs.msg
import std_msgs.msg
import std_srvs.srv
import trajectory_msgs.msg
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile

from helpers_ros import REPO, spin_for, spin_until

CAMERA = "gemma3nvla_ros.nodes.camera_node"
BRIDGE = "gemma3nvla_ros.nodes.so101_bridge"
POLICY = "gemma3nvla_ros.nodes.policy_node"
AGGREGATOR = "gemma3nvla_ros.nodes.action_aggregator"
SMALL_CAMERA = ("-p", "width:=64", "-p", "height:=48", "-p", "fps:=15.0")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    from gemma3nvla_ros.contract import Contract
    from gemma3nvla_ros.paths import config_dir
    from gemma3nvla_ros.policy.demo_checkpoint import ensure_demo_checkpoint

    contract = Contract.load(config_dir() / "so101_contract.yaml")
    return str(ensure_demo_checkpoint(tmp_path_factory.mktemp("ckpt") / "demo", contract, camera_shape=(48, 64)))


class Watch:
    """What a user would look at: commands, joint states, chunks and diagnostics."""

    def __init__(self, node) -> None:
        self.node = node
        self.commands: list = []
        self.states: list = []
        self.chunks: list = []
        self.diags: dict[str, dict[str, str]] = {}
        self.levels: dict[str, int] = {}
        node.create_subscription(sensor_msgs.msg.JointState, "/joint_commands", self._stamp(self.commands), 100)
        node.create_subscription(sensor_msgs.msg.JointState, "/joint_states", self._stamp(self.states), 100)
        node.create_subscription(trajectory_msgs.msg.JointTrajectory, "/action_chunk", self._stamp(self.chunks), 10)
        node.create_subscription(diagnostic_msgs.msg.DiagnosticArray, "/diagnostics", self._on_diag, 50)

    @staticmethod
    def _stamp(store: list):
        return lambda msg: store.append((time.monotonic(), msg))

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            self.diags[status.name] = {kv.key: kv.value for kv in status.values}
            self.diags[status.name]["_message"] = status.message
            self.levels[status.name] = status.level[0]

    def value(self, component: str, key: str) -> str | None:
        for name, values in self.diags.items():
            if name.endswith(component):
                return values.get(key)
        return None

    def positions(self, store: list, i: int = -1) -> dict[str, float]:
        msg = store[i][1]
        return dict(zip(msg.name, msg.position))


@pytest.fixture
def watch(listener):
    return Watch(listener)


def _set_task(ros, node, task: str):
    client = node.create_client(SetParameters, "/gemma3nvla_policy/set_parameters")
    assert client.wait_for_service(timeout_sec=30.0)
    request = SetParameters.Request()
    request.parameters = [ParameterMsg(name="task", value=Parameter("task", value=task).get_parameter_value())]
    future = client.call_async(request)
    assert spin_until(ros, node, future.done, 10.0)
    node.destroy_client(client)
    return future.result().results[0]


def _trigger(ros, node, service: str):
    client = node.create_client(std_srvs.srv.Trigger, service)
    assert client.wait_for_service(timeout_sec=30.0)
    future = client.call_async(std_srvs.srv.Trigger.Request())
    assert spin_until(ros, node, future.done, 10.0)
    node.destroy_client(client)
    return future.result()


def _max_step(commands: list) -> float:
    steps = [np.max(np.abs(np.subtract(b[1].position, a[1].position))) for a, b in zip(commands, commands[1:])]
    return max(steps) if steps else 0.0


def test_launched_graph_closes_the_loop(ros, watch, checkpoint, tmp_path):
    """`gemma3nvla-ros launch so101_pickplace` as a user runs it: chunks arrive, merged commands reach
    the simulated servos, joint states follow them."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gemma3nvla_ros.cli", "launch", "so101_pickplace", f"checkpoint:={checkpoint}",
         "device:=cpu", "width:=64", "height:=48", "fps:=15.0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    try:
        moved = spin_until(ros, watch.node, lambda: len(watch.chunks) >= 3 and len(watch.commands) >= 30
                           and len(watch.states) > 10, 120.0)
        assert moved, "".join(lines[-60:])
        chunk = watch.chunks[-1][1]
        assert list(chunk.joint_names)[:1] == ["shoulder_pan"] and len(chunk.points) == 50
        assert chunk.points[1].time_from_start.nanosec == pytest.approx(1e9 / 30, abs=1)
        # The arm follows: a joint state now is close to a command of the last few ticks.
        spin_for(ros, watch.node, 1.0)
        state = watch.positions(watch.states)
        recent = [watch.positions(watch.commands, i) for i in range(-30, 0)]
        error = min(max(abs(state[n] - cmd[n]) for n in cmd) for cmd in recent)
        assert error < 0.1, (state, recent[-1])
        assert any(abs(v) > 0.01 for v in state.values())  # it moved away from the rest pose
        assert _max_step(watch.commands) <= 0.1 + 1e-9  # the aggregator's per-tick clamp
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, "".join(lines[-60:])
    assert "Traceback" not in "".join(lines), "".join(lines)
    assert "torque disabled" in "".join(lines)


def _start_loop(start_node, checkpoint: str, *policy_params: str):
    procs = {
        "bridge": start_node(BRIDGE, "-p", "mode:=sim", name="bridge"),
        "wrist": start_node(CAMERA, "-r", "__node:=camera_wrist", "-p", "name:=wrist", *SMALL_CAMERA, name="wrist"),
        "top": start_node(CAMERA, "-r", "__node:=camera_top", "-p", "name:=top", *SMALL_CAMERA, name="top"),
        "aggregator": start_node(AGGREGATOR, name="aggregator"),
    }
    procs["policy"] = start_node(POLICY, "-p", f"checkpoint:={checkpoint}", "-p", "device:=cpu",
                                 "-p", "task:=pick up the cube", *policy_params, name="policy")
    return procs


def test_faults_dead_camera_killed_policy_and_tasks(ros, watch, start_node, checkpoint):
    procs = _start_loop(start_node, checkpoint)
    assert spin_until(ros, watch.node, lambda: len(watch.chunks) >= 2 and len(watch.commands) > 20, 120.0), \
        procs["policy"].output

    # An invalid task is refused with the reason; a valid one is taken for the next chunk.
    for bad, reason in (("", "empty"), ("   ", "empty"), ("x" * 600, "characters long")):
        result = _set_task(ros, watch.node, bad)
        assert not result.successful and reason in result.reason
    assert _set_task(ros, watch.node, "put the cube in the box").successful
    n = len(watch.chunks)
    assert spin_until(ros, watch.node, lambda: len(watch.chunks) > n + 1
                      and watch.value("policy", "task") == "put the cube in the box", 60.0)

    # Programs can stream instructions on ~/task (same validation as the parameter).
    task_pub = watch.node.create_publisher(std_msgs.msg.String, "/gemma3nvla_policy/task", 10)
    assert spin_until(ros, watch.node, lambda: task_pub.publish(std_msgs.msg.String(data="stack the blocks"))
                      or watch.value("policy", "task") == "stack the blocks", 30.0)

    # ~/stop: no new chunks and the aggregator drops its plan and holds; ~/start resumes.
    n = len(watch.chunks)
    assert _trigger(ros, watch.node, "/gemma3nvla_policy/stop").success
    watch.diags.clear()  # only a report made after the stop counts
    assert spin_until(ros, watch.node, lambda: "holding" in (watch.value("action queue", "_message") or ""), 10.0)
    spin_for(ros, watch.node, 1.5)
    assert [len(c[1].points) for c in watch.chunks[n:]] == [0]  # only the cancel
    n = len(watch.chunks)
    assert _trigger(ros, watch.node, "/gemma3nvla_policy/start").success
    assert spin_until(ros, watch.node, lambda: len(watch.chunks) >= n + 2, 60.0)

    # A dead camera: no more chunks, and the policy says why.
    watch.diags.clear()
    procs["wrist"].stop()
    spin_for(ros, watch.node, 1.5)
    n = len(watch.chunks)
    assert spin_until(ros, watch.node, lambda: "/cameras/wrist/image_raw" in (watch.value("policy", "last_refusal") or ""),
                      30.0), procs["policy"].output
    spin_for(ros, watch.node, 2.0)
    assert len(watch.chunks) <= n + 1  # at most one that was already being computed
    # The queue ran dry: the aggregator holds (same setpoint every tick) instead of jumping.
    assert spin_until(ros, watch.node, lambda: "holding" in (watch.value("action queue", "_message") or ""), 30.0)
    tail = [c[1].position for c in watch.commands[-10:]]
    assert all(np.allclose(t, tail[-1]) for t in tail)

    # The camera comes back: the loop resumes.
    procs["wrist"] = start_node(CAMERA, "-r", "__node:=camera_wrist", "-p", "name:=wrist", *SMALL_CAMERA, name="wrist2")
    n = len(watch.chunks)
    assert spin_until(ros, watch.node, lambda: len(watch.chunks) >= n + 2, 60.0), procs["policy"].output

    # The policy dies mid-run: commands keep coming (no gap for the bridge's watchdog), the plan runs
    # out, the arm holds without a jump, and no step exceeds the clamp.
    assert spin_until(ros, watch.node, lambda: "executing" in (watch.value("action queue", "_message") or ""), 30.0)
    procs["policy"].proc.kill()
    killed_at = time.monotonic()
    watch.diags.clear()  # only a report made after the kill counts
    assert spin_until(ros, watch.node, lambda: "holding" in (watch.value("action queue", "_message") or ""), 30.0)
    spin_for(ros, watch.node, 1.0)
    after = [c for c in watch.commands if c[0] > killed_at]
    gaps = np.diff([t for t, _ in after])
    assert len(after) > 30 and gaps.max() < 0.5, gaps.max()
    assert _max_step(after) <= 0.1 + 1e-9
    held_from = next(i for i in range(len(after) - 1, 0, -1) if not np.allclose(after[i][1].position, after[i - 1][1].position))
    assert len(after) - held_from > 10  # holding: the same setpoint since

    # A new policy process: the loop resumes.
    n = len(watch.chunks)
    procs["policy"] = start_node(POLICY, "-p", f"checkpoint:={checkpoint}", "-p", "device:=cpu",
                                 "-p", "task:=pick up the cube", name="policy2")
    assert spin_until(ros, watch.node, lambda: len(watch.chunks) >= n + 2, 120.0), procs["policy"].output


def test_aggregator_rejects_bad_chunks_and_never_moves_for_them(ros, watch, start_node):
    agg = start_node(AGGREGATOR, name="aggregator")
    state_pub = watch.node.create_publisher(sensor_msgs.msg.JointState, "/joint_states", 10)
    chunk_pub = watch.node.create_publisher(trajectory_msgs.msg.JointTrajectory, "/action_chunk", QoSProfile(depth=10))
    names = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]

    def joint_state():
        msg = sensor_msgs.msg.JointState(name=names, position=[0.0] * 6)
        msg.header.stamp = watch.node.get_clock().now().to_msg()
        state_pub.publish(msg)

    def chunk(positions, names=names, dt_ns=33_333_333, age_s=0.0):
        msg = trajectory_msgs.msg.JointTrajectory(joint_names=names)
        stamp = watch.node.get_clock().now().nanoseconds - int(age_s * 1e9)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        for i, row in enumerate(positions):
            point = trajectory_msgs.msg.JointTrajectoryPoint(positions=list(row))
            point.time_from_start.sec, point.time_from_start.nanosec = divmod(i * dt_ns, 1_000_000_000)
            msg.points.append(point)
        return msg

    assert spin_until(ros, watch.node, lambda: chunk_pub.get_subscription_count() > 0
                      and state_pub.get_subscription_count() > 0, 30.0), agg.output
    spin_for(ros, watch.node, 0.5, each=joint_state)
    good = np.zeros((50, 6))
    bad = [
        (chunk(np.full((50, 6), np.nan)), "non-finite position"),
        (chunk(good[:, :5], names=names[:5]), "missing ['gripper']"),
        (chunk(good, names=names[:5] + ["elbow"]), "unknown ['elbow']"),
        (chunk(good, dt_ns=0), "not strictly increasing"),
        (chunk(good, age_s=10.0), "entirely in the past"),
    ]
    for msg, reason in bad:  # each one until its rejection is reported (a first sample can precede matching)
        rejected = spin_until(ros, watch.node, lambda: (chunk_pub.publish(msg), joint_state())
                              and reason in (watch.value("action queue", "last_rejection") or ""), 15.0)
        assert rejected, (reason, watch.value("action queue", "last_rejection"), agg.output)
    assert watch.commands == []  # nothing to execute: never started from a bad chunk
    assert "rejected action chunk" in agg.output


def _set_param(ros, node, target: str, name: str, value):
    client = node.create_client(SetParameters, f"{target}/set_parameters")
    assert client.wait_for_service(timeout_sec=30.0)
    request = SetParameters.Request()
    request.parameters = [ParameterMsg(name=name, value=Parameter(name, value=value).get_parameter_value())]
    future = client.call_async(request)
    assert spin_until(ros, node, future.done, 10.0)
    node.destroy_client(client)
    return future.result().results[0]


def test_real_time_chunking_closes_the_loop(ros, watch, start_node, checkpoint):
    """`rtc: true`: chunks are flagged, guided by the previous chunk's leftover (after the first), executed by
    the aggregator, commands stream with no step above the clamp; switching it off at run time works."""
    procs = _start_loop(start_node, checkpoint, "-p", "rtc:=true")
    assert spin_until(ros, watch.node, lambda: int(watch.value("policy", "rtc_guided_chunks") or 0) >= 3
                      and int(watch.value("action queue", "rtc_chunks") or 0) >= 4, 180.0), procs["policy"].output
    chunks = [c[1] for c in watch.chunks]
    assert chunks and all(c.header.frame_id == "rtc" and len(c.points) == 50 for c in chunks)
    assert int(watch.value("action queue", "rtc_chunks_retimed")) >= 1  # the first one: the arm was holding
    assert int(watch.value("action queue", "chunks_rejected")) == 0
    assert 0 <= int(watch.value("policy", "rtc_inference_delay")) <= 50
    spin_for(ros, watch.node, 2.0)
    stamps = [t for t, _ in watch.commands]
    assert len(stamps) > 60 and np.diff(stamps[-60:]).max() < 0.5  # a stream, no gap for the watchdog
    assert _max_step(watch.commands) <= 0.1 + 1e-9
    assert "Traceback" not in procs["policy"].output

    bad = _set_param(ros, watch.node, "/gemma3nvla_policy", "rtc_schedule", "CUBIC")
    assert not bad.successful and "LINEAR" in bad.reason
    assert _set_param(ros, watch.node, "/gemma3nvla_policy", "rtc", False).successful
    n = len(watch.chunks)
    assert spin_until(ros, watch.node, lambda: len(watch.chunks) >= n + 3, 60.0), procs["policy"].output
    assert watch.chunks[-1][1].header.frame_id == ""  # plain chunks again: the aggregator blends them
    assert watch.value("policy", "rtc") == "False"


def test_aggregator_starts_a_late_first_rtc_chunk_at_its_first_step(ros, watch, start_node):
    """A first chunk computed in 300 ms: by time its first 9 steps are past, but the arm was holding. An RTC
    chunk runs from step 0; a plain one (LeRobot's semantics) drops the passed steps."""
    names = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
    state_pub = watch.node.create_publisher(sensor_msgs.msg.JointState, "/joint_states", 10)
    chunk_pub = watch.node.create_publisher(trajectory_msgs.msg.JointTrajectory, "/action_chunk", QoSProfile(depth=10))
    ramp = np.zeros((50, 6))
    ramp[:, 0] = 0.01 * np.arange(50)

    def first_command(frame_id: str) -> float:
        agg = start_node(AGGREGATOR, name=f"aggregator_{frame_id or 'plain'}")
        watch.commands.clear()

        def joint_state():
            msg = sensor_msgs.msg.JointState(name=names, position=[0.0] * 6)
            msg.header.stamp = watch.node.get_clock().now().to_msg()
            state_pub.publish(msg)

        def chunk():
            msg = trajectory_msgs.msg.JointTrajectory(joint_names=names)
            msg.header.frame_id = frame_id
            stamp = watch.node.get_clock().now().nanoseconds - 300_000_000
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            for i, row in enumerate(ramp):
                point = trajectory_msgs.msg.JointTrajectoryPoint(positions=list(row))
                point.time_from_start.sec, point.time_from_start.nanosec = divmod(i * 33_333_333, 1_000_000_000)
                msg.points.append(point)
            return msg

        sent = [0.0]

        # Joint states, and the chunk again every 3 s until it is executed (a first sample can be lost). Not
        # sooner: a repeat that lands after the first was taken but before its first tick would replace a
        # running plan, which drops the passed steps (as it should), and this test is about the first chunk.
        def feed():
            joint_state()
            if not watch.commands and time.monotonic() - sent[0] > 3.0:
                chunk_pub.publish(chunk())
                sent[0] = time.monotonic()

        assert spin_until(ros, watch.node, lambda: chunk_pub.get_subscription_count() > 0
                          and state_pub.get_subscription_count() > 0, 30.0), agg.output
        spin_for(ros, watch.node, 0.5, each=joint_state)
        assert spin_until(ros, watch.node, lambda: feed() or len(watch.commands) >= 5, 15.0), agg.output
        agg.stop()
        spin_for(ros, watch.node, 0.5)
        return watch.positions(watch.commands, 0)["shoulder_pan"]

    assert first_command("rtc") == pytest.approx(0.0)  # step 0: the arm does not jump
    assert first_command("") >= 0.09 - 1e-9  # step 9 or later: the plain strategies skip by time
