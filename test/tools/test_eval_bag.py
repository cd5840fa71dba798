"""tools/eval_bag: the evaluation path with fake runners whose output is known (so the errors are known), its
agreement with the live nodes' code, every bad input, and the command line end to end on the tiny demo model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gemma3nvla_ros.tools import eval_bag as eb
from gemma3nvla_ros.tools.bag_io import Bag, BagError
from helpers_bags import CAMERAS, T0_NS, ramp, synthetic_bag

P = int(1e9 / 30)  # the contract's period (ns): every grid in these bags
REPO = Path(__file__).resolve().parents[2]
KINDS = [("mcap", 9, "jazzy", False), ("mcap", 8, "jazzy", False), ("sqlite3", 9, "jazzy", False),
         ("sqlite3", 8, "jazzy", True), ("sqlite3", 8, "humble", False), ("mcap", 9, "humble", True)]


@pytest.fixture(scope="module")
def contract():
    return eb.load_contract(None)


@pytest.fixture(scope="module")
def units(contract):
    return eb.load_units(contract)[0]


class Perfect:
    """Knows the bag's trajectory: reads the time off the state (wrist_flex = 0.02 rad/s * t) and returns what
    was recorded as the command for every action's due time (trajectory one period ahead)."""

    image_shapes: dict = {}

    def __init__(self, units, delay_s: float = 0.0):
        self.units, self.delay_s, self.tasks = units, delay_s, []

    def clean(self, values):
        self.tasks.append(values["task"])
        if self.delay_s:
            time.sleep(self.delay_s)
        radians = self.units.dataset_to_ros(np.asarray(values["observation.state"], dtype=np.float64))
        t = radians[3] / 0.02
        return self.units.ros_to_dataset(np.array([ramp(t + (i + 1) * P / 1e9) for i in range(50)]))

    def infer(self, values):
        return self.clean(values)


class Offset(Perfect):
    def __init__(self, units, joint: int, offset: float, per_step: float = 0.0, **kw):
        super().__init__(units, **kw)
        self.joint, self.offset, self.per_step = joint, offset, per_step

    def infer(self, values):
        chunk = self.clean(values)
        chunk[:, self.joint] += self.offset + self.per_step * np.arange(len(chunk))
        return chunk


def run(bag_path, contract, units, runner, **options):
    options.setdefault("task", "pick the cube")
    with Bag(bag_path) as bag:
        return eb.evaluate(bag, contract, units, runner, eb.EvalOptions(**options))


# ---------------------------------------------------------------------------------------------- known answers
@pytest.mark.parametrize("storage,version,distro,compressed", KINDS)
def test_a_perfect_policy_has_no_error(tmp_path, contract, units, storage, version, distro, compressed):
    bag = synthetic_bag(tmp_path / "bag", storage=storage, version=version, distro=distro, compressed=compressed)
    result = run(bag, contract, units, Perfect(units))
    overall = result.metrics["overall"]
    assert overall["commands"]["n"] == 59  # 60 ticks in 2 s; the first asks for the first chunk
    assert overall["commands"]["mean_mae"] < 1e-4
    assert max(v for v in overall["horizon"]["mean_mae"] if v is not None) < 1e-4
    assert overall["horizon"]["count"][0] == overall["counts"]["chunks"]
    assert overall["gripper"]["agreement"] == 1.0
    assert overall["counts"]["refusals"] == 0 and overall["counts"]["ticks_step_clamped"] == 0
    assert result.plan.reference == "commands"
    if compressed:
        assert result.plan.cameras["observation.images.top"] == "/cameras/top/image_raw/compressed"
        assert any("CompressedImage" in n for n in result.notes)


def test_a_known_offset_is_measured_exactly(tmp_path, contract, units):
    bag = synthetic_bag(tmp_path / "bag", duration=3.0)
    result = run(bag, contract, units, Offset(units, joint=2, offset=2.5))  # elbow_flex +2.5 degrees
    joints = result.metrics["overall"]["commands"]["joints"]
    assert joints["elbow_flex"]["mae"] == pytest.approx(2.5, abs=1e-4)
    assert joints["elbow_flex"]["rmse"] == pytest.approx(2.5, abs=1e-4)
    for name in ("shoulder_pan", "shoulder_lift", "wrist_flex", "wrist_roll", "gripper"):
        assert joints[name]["mae"] < 1e-4
    horizon = result.metrics["overall"]["horizon"]["mae"]["elbow_flex"]
    assert np.allclose(horizon, 2.5, atol=1e-4)
    assert result.metrics["units"]["elbow_flex"] == "deg" and result.metrics["units"]["gripper"] == "0..100"
    for episode in result.metrics["episodes"]:
        assert episode["commands"]["joints"]["elbow_flex"]["mae"] == pytest.approx(2.5, abs=1e-4)


def test_error_by_horizon_grows_as_constructed(tmp_path, contract, units):
    bag = synthetic_bag(tmp_path / "bag", duration=2.0)
    result = run(bag, contract, units, Offset(units, joint=0, offset=0.0, per_step=0.1))  # action i off by 0.1*i
    horizon = result.metrics["overall"]["horizon"]["mae"]["shoulder_pan"]
    known = [h for h, v in enumerate(horizon) if v is not None]
    assert len(known) >= 40
    np.testing.assert_allclose([horizon[h] for h in known], [0.1 * h for h in known], atol=1e-4)


def test_gripper_agreement_counts_ticks_on_the_same_side(tmp_path, contract, units):
    bag = synthetic_bag(tmp_path / "bag", duration=4.0)

    class AlwaysOpen(Perfect):
        def infer(self, values):
            chunk = self.clean(values)
            chunk[:, 5] = 100.0
            return chunk

    result = run(bag, contract, units, AlwaysOpen(units), max_step=0.0)
    grip = result.metrics["overall"]["gripper"]
    assert grip["commanded_open_fraction"] == 1.0
    assert 0.3 < grip["recorded_open_fraction"] < 0.7  # the recording opens and closes (sine, 4 s period)
    assert grip["agreement"] == pytest.approx(grip["recorded_open_fraction"])
    assert grip["closed_when_recorded_open"] == 0 and grip["open_when_recorded_closed"] > 0
    assert result.metrics["gripper_threshold"] == pytest.approx(50.0, abs=1.0)  # middle of the recorded range


def test_next_joint_state_is_the_reference_without_commands(tmp_path, contract, units):
    bag = synthetic_bag(tmp_path / "bag", commands=False)
    result = run(bag, contract, units, Perfect(units))
    assert result.plan.reference == "joint_states"
    assert any("next joint state" in n for n in result.notes)
    assert result.metrics["overall"]["commands"]["mean_mae"] < 1e-4
    with pytest.raises(BagError, match="--reference commands: the bag has no messages on /joint_commands"):
        run(bag, contract, units, Perfect(units), reference="commands")


def test_fixed_latency_drops_the_setpoints_it_covers(tmp_path, contract, units):
    bag = synthetic_bag(tmp_path / "bag", duration=3.0)
    zero = run(bag, contract, units, Perfect(units))
    late = run(bag, contract, units, Perfect(units), latency="0.1")
    assert late.metrics["overall"]["commands"]["mean_mae"] < 1e-4  # still right: the chunk is stamped
    for chunk in (c for ep in late.episodes for c in ep.chunks):
        assert chunk.arrival_ns - chunk.request_ns == 100_000_000
    counts = late.metrics["overall"]["counts"]
    assert counts["setpoints_dropped_past"] >= 3 * counts["chunks_merged"]  # 0.1 s = 3 periods at 30 Hz
    assert late.episodes[0].command_ns[0] - zero.episodes[0].command_ns[0] == 3 * P  # starts 3 ticks later


def test_measured_latency_is_the_wall_time_of_infer(tmp_path, contract, units):
    bag = synthetic_bag(tmp_path / "bag", duration=2.0)
    result = run(bag, contract, units, Perfect(units, delay_s=0.03), latency="measured")
    for chunk in (c for ep in result.episodes for c in ep.chunks):
        assert chunk.latency_s >= 0.03
        assert chunk.arrival_ns - chunk.request_ns == round(chunk.latency_s * 1e9)
    assert result.metrics["overall"]["latency"]["p50_s"] >= 0.03


def test_episodes_split_where_joint_states_pause(tmp_path, contract, units):
    bag = synthetic_bag(tmp_path / "bag", duration=4.0, gaps=[(1.0, 2.5)])
    result = run(bag, contract, units, Perfect(units))
    episodes = result.metrics["episodes"]
    # joint states at i * P: i = 0..30 (t < 1.0), then 76..120 (t >= 2.5)
    assert [(e["start_s"], e["end_s"]) for e in episodes] == [(0.0, 30 * P / 1e9), (76 * P / 1e9, 120 * P / 1e9)]
    for episode in episodes:  # each starts afresh: asks for a chunk, then commands
        assert episode["counts"]["chunks"] >= 1 and episode["commands"]["mean_mae"] < 1e-4
    assert result.metrics["overall"]["episodes"] == 2
    one = run(bag, contract, units, Perfect(units), episode_gap=0.0)  # one episode across the pause
    assert len(one.episodes) == 1
    refusals = one.metrics["overall"]["refusals"]
    assert any("stale" in r for r in refusals)  # the policy refuses to act on 1.5 s old inputs, as live
    assert one.metrics["overall"]["counts"]["holds"] >= 1


def test_task_from_the_recorded_task_topic(tmp_path, contract, units):
    bag = synthetic_bag(tmp_path / "bag", task="stack the blocks")
    runner = Perfect(units)
    result = run(bag, contract, units, runner, task=None)
    assert set(runner.tasks) == {"stack the blocks"} and result.plan.task_topic == "/gemma3nvla_policy/task"
    with pytest.raises(BagError, match="no task: pass --task"):
        run(synthetic_bag(tmp_path / "bag2"), contract, units, Perfect(units), task=None)


def test_relative_topic_names_resolve_in_the_root_namespace(tmp_path, units):
    bag = synthetic_bag(tmp_path / "bag", duration=1.0)
    relative = eb.load_contract(None, ["observation.images.top=cameras/top/image_raw"], joint_states="joint_states")
    result = run(bag, relative, units, Perfect(units), commands_topic="joint_commands")
    assert result.plan.cameras["observation.images.top"] == "/cameras/top/image_raw"
    assert result.plan.commands == "/joint_commands" and result.metrics["overall"]["commands"]["mean_mae"] < 1e-4


def test_time_range(tmp_path, contract, units):
    bag = synthetic_bag(tmp_path / "bag", duration=3.0)
    result = run(bag, contract, units, Perfect(units), start=1.0, end=2.0)
    (episode,) = result.metrics["episodes"]
    assert episode["start_s"] == pytest.approx(1.0, abs=P / 1e9) and episode["end_s"] <= 2.0


# ---------------------------------------------------------------------------------------------- bad input
def test_empty_time_range(tmp_path, contract, units):
    bag = synthetic_bag(tmp_path / "bag", duration=1.0)
    with pytest.raises(BagError) as exc:
        run(bag, contract, units, Perfect(units), start=5.0)
    assert "empty time range" in str(exc.value) and "/joint_states" in str(exc.value)
    with pytest.raises(eb.EvalError, match="empty time range"):
        run(bag, contract, units, Perfect(units), start=0.5, end=0.5)


def test_a_range_without_joint_states(tmp_path, contract, units):
    bag = synthetic_bag(tmp_path / "bag", duration=3.0, gaps=[(1.0, 2.0)])
    with pytest.raises(BagError, match="nothing to evaluate: no /joint_states messages between 1.100 s and 1.900 s"):
        run(bag, contract, units, Perfect(units), start=1.1, end=1.9)


def test_missing_topics_are_listed_together(tmp_path, contract, units):
    bag = synthetic_bag(tmp_path / "bag", duration=0.5)
    odd = eb.load_contract(None, ["observation.images.top=/nope/top", "observation.images.wrist=/nope/wrist"],
                           joint_states="/arm/joint_states")
    with pytest.raises(BagError) as exc:
        run(bag, odd, units, Perfect(units))
    text = str(exc.value)
    for expected in ("/nope/top", "/nope/wrist", "/arm/joint_states", "--camera observation.images.top=<topic>",
                     "/cameras/top/image_raw  ", "sensor_msgs/msg/JointState  16 msgs"):
        assert expected in text


def test_unexpected_types(tmp_path, contract, units):
    bag = synthetic_bag(tmp_path / "bag", duration=0.5, extra=lambda b: b.string("/joint_commands_str", T0_NS, "x"))
    odd = eb.load_contract(None, ["observation.images.top=/joint_states"])
    with pytest.raises(BagError, match="topic /joint_states has type sensor_msgs/msg/JointState, expected "
                                       "sensor_msgs/msg/Image or sensor_msgs/msg/CompressedImage"):
        run(bag, odd, units, Perfect(units))
    with pytest.raises(BagError, match="recorded commands: topic /joint_commands_str has type std_msgs/msg/String"):
        run(bag, contract, units, Perfect(units), commands_topic="/joint_commands_str")
    with pytest.raises(eb.EvalError, match="--camera wants KEY=TOPIC"):
        eb.load_contract(None, ["/cameras/top"])


def test_a_policy_that_never_acts_is_an_error(tmp_path, contract, units):
    bag = synthetic_bag(tmp_path / "bag", duration=1.0)
    runner = Perfect(units)
    runner.image_shapes = {key: (99, 99) for key in CAMERAS}
    with pytest.raises(eb.EvalError, match="never produced a chunk.*the checkpoint expects 99x99"):
        run(bag, contract, units, runner)


def test_header_stamps_on_another_clock(tmp_path, contract, units):
    """Stamps 100 s behind the log time: stale for the policy, as live; --stamps receive uses log times."""
    from helpers_bags import BagBuilder, frame

    b = BagBuilder()
    for i in range(61):
        t = T0_NS + i * P
        for topic in CAMERAS.values():
            b.image(topic, t, frame(i, (24, 32)), stamp_ns=t - 100 * 10**9)
        b.joint_state("/joint_states", t, ramp(i * P / 1e9), stamp_ns=t - 100 * 10**9)
        b.joint_state("/joint_commands", t, ramp((i + 1) * P / 1e9))
    bag = b.write(tmp_path / "bag")
    with pytest.raises(eb.EvalError, match="stale: captured 100.0"):
        run(bag, contract, units, Perfect(units))
    result = run(bag, contract, units, Perfect(units), stamps="receive")
    assert result.metrics["overall"]["commands"]["mean_mae"] < 1e-4


def test_bad_options(tmp_path, contract, units):
    bag = synthetic_bag(tmp_path / "bag", duration=0.5)
    for options, message in (({"latency": "soon"}, "--latency must be"), ({"strategy": "x"}, "--strategy"),
                             ({"threshold": 2.0}, "--threshold"), ({"episode_gap": -1.0}, "--episode-gap")):
        with pytest.raises(eb.EvalError, match=message):
            run(bag, contract, units, Perfect(units), **options)


# ---------------------------------------------------------------------------------------------- the live nodes' code
def test_defaults_are_the_nodes(ros):
    from gemma3nvla_ros.nodes.action_aggregator import ActionAggregator
    from gemma3nvla_ros.nodes.policy_node import PolicyNode

    agg = ActionAggregator()
    policy = PolicyNode()
    try:
        assert agg.get_parameter("strategy").value == eb.STRATEGY
        assert agg.get_parameter("chunk_size_threshold").value == eb.CHUNK_SIZE_THRESHOLD
        assert agg.get_parameter("max_step").value == eb.MAX_STEP
        assert agg.get_parameter("control_rate").value == eb.CONTROL_RATE
        assert agg.get_parameter("ensemble_m").value == eb.ENSEMBLE_M
        assert policy.get_parameter("max_observation_age").value == eb.MAX_OBSERVATION_AGE
        assert policy.resolve_topic_name("~/task") == eb.TASK_TOPIC
        assert agg.resolve_topic_name("joint_commands") == eb.COMMANDS_TOPIC
    finally:
        agg.destroy_node()
        policy.destroy_node()


class _Capture:
    def __init__(self):
        self.msgs = []

    def publish(self, msg):
        self.msgs.append(msg)


def test_sim_aggregator_does_what_the_node_does(ros, contract):
    """The action_aggregator node's own callbacks on a ROS clock set by hand, and SimAggregator, fed the same
    joint states, chunks (off-grid, late, overlapping, a dry spell, a jump the step clamp limits) and ticks:
    the same setpoints bit for bit, and the same requests."""
    import sensor_msgs.msg
    import trajectory_msgs.msg
    from rclpy.parameter import Parameter
    from rclpy.time import Time

    from gemma3nvla_ros.nodes.action_aggregator import ActionAggregator

    node = ActionAggregator(parameter_overrides=[Parameter("use_sim_time", value=True)])
    try:
        clock = node.get_clock()
        clock._set_ros_time_is_active(True)
        node.cmd_pub, node.request_pub, node.plan_pub, node.diag_pub = _Capture(), _Capture(), _Capture(), _Capture()
        sim = eb.SimAggregator(contract, eb.EvalOptions())
        record = eb.EpisodeRecord(0, T0_NS)
        rng = np.random.default_rng(1)
        joints = list(contract.joints)
        state = rng.normal(0, 0.2, 6)

        js = sensor_msgs.msg.JointState()
        js.name, js.position = joints, state.tolist()
        clock.set_ros_time_override(Time(nanoseconds=T0_NS))
        node._on_joint_state(js)
        sim.on_joint_state(dict(zip(joints, state)))

        def chunk(stamp: int, n: int, jump: float = 0.0) -> tuple[list, np.ndarray]:
            rows = state + jump + np.cumsum(rng.normal(0, 0.01, (n, 6)), axis=0)
            return rows, np.arange(n, dtype=np.int64) * P

        sim_cmds, sim_requests = [], []
        phase = 7_000_000  # ticks off the chunk grid
        pending: list[tuple[int, int, np.ndarray, np.ndarray]] = []
        for k in range(1, 200):
            now = T0_NS + phase + k * P
            for item in [p for p in pending if p[0] <= now]:  # chunks due before this tick
                pending.remove(item)
                arrival, stamp, rows, tfs = item
                msg = trajectory_msgs.msg.JointTrajectory()
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
                msg.joint_names = joints
                for row, tf in zip(rows, tfs):
                    point = trajectory_msgs.msg.JointTrajectoryPoint()
                    point.positions = [float(x) for x in row]
                    point.time_from_start.sec, point.time_from_start.nanosec = divmod(int(tf), 10**9)
                    msg.points.append(point)
                clock.set_ros_time_override(Time(nanoseconds=arrival))
                node._on_chunk(msg)
                sim.on_chunk(stamp, np.array(rows), tfs.tolist(), arrival, record)
            clock.set_ros_time_override(Time(nanoseconds=now))
            before = (len(node.cmd_pub.msgs), len(node.request_pub.msgs))
            node._on_tick()
            setpoint, request = sim.tick(now, record)
            node_cmd = node.cmd_pub.msgs[-1] if len(node.cmd_pub.msgs) > before[0] else None
            assert (node_cmd is None) == (setpoint is None), k
            if setpoint is not None:
                np.testing.assert_array_equal(np.asarray(node_cmd.position), setpoint)
                sim_cmds.append(setpoint)
            assert (len(node.request_pub.msgs) > before[1]) == request, k
            if request and not (60 <= k < 110):  # k 60..110: the policy is silent and the queue runs dry
                stamp = now - 23_000_000
                n = 50 if k % 3 else 30
                rows, tfs = chunk(stamp, n, jump=0.5 if k > 150 else 0.0)
                pending.append((now + (k % 4) * 41_000_000, stamp, rows, tfs))
                sim_requests.append(k)
        assert len(sim_cmds) > 150 and len(sim_requests) >= 5
        assert record.counts["holds"] >= 1 and record.counts["ticks_step_clamped"] >= 1
        assert node.counts["holds"] == record.counts["holds"]
        assert node.counts["step_clamped"] == record.counts["ticks_step_clamped"]
        assert node.counts["dropped_past"] == record.counts["setpoints_dropped_past"]
    finally:
        node.destroy_node()


def test_sim_policy_chunk_is_the_nodes_trajectory(ros, tmp_path, contract, units):
    """The chunk SimPolicy merges is what policy_node publishes for the same observation and actions."""
    from gemma3nvla_ros.control.observation import Stamped
    from gemma3nvla_ros.nodes.policy_node import PolicyNode

    bag = synthetic_bag(tmp_path / "bag", duration=0.2)
    with Bag(bag) as b:
        messages = list(b.messages())
    inputs = eb._Inputs(dict(CAMERAS))
    runner = Offset(units, joint=1, offset=3.0)
    for m in messages:
        if m.topic in CAMERAS.values():
            key = next(k for k, t in CAMERAS.items() if t == m.topic)
            inputs.images[key] = Stamped(m.time_ns - 5_000_000, m)
        elif m.topic == "/joint_states":
            inputs.joint_state = Stamped(m.time_ns, dict(zip(m.msg.name, m.msg.position)))
    inputs.task = "pick"
    now = messages[-1].time_ns + 1_000_000
    sim = eb.SimPolicy(contract, units, runner, eb.EvalOptions(), inputs)
    record = sim.on_request(now, eb.EpisodeRecord(0, T0_NS))
    assert record is not None and record.stamp_ns == messages[-1].time_ns - 5_000_000  # the oldest input
    node = PolicyNode()
    try:
        node.contract = contract
        msg = node._trajectory(record.stamp_ns, units.dataset_to_ros(runner.infer({
            "observation.state": units.ros_to_dataset(np.asarray([inputs.joint_state.value[j]
                                                                   for j in contract.joints])).astype(np.float32),
            "task": "pick"})))
    finally:
        node.destroy_node()
    assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == record.stamp_ns
    for i, point in enumerate(msg.points):
        assert point.time_from_start.sec * 10**9 + point.time_from_start.nanosec == record.times_ns[i] - record.stamp_ns
        np.testing.assert_array_equal(np.asarray(point.positions), record.positions[i])


# ---------------------------------------------------------------------------------------------- report + CLI
def test_report_is_atomic(tmp_path, contract, units, monkeypatch):
    from gemma3nvla_ros.tools import eval_report

    bag = synthetic_bag(tmp_path / "bag", duration=1.0)
    result = run(bag, contract, units, Perfect(units))
    out = tmp_path / "reports" / "r1"

    def boom(*_a, **_k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(eval_report, "write_plots", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        eval_report.write_report(out, result, {"checkpoint": "fake"})
    assert not out.exists() and list((tmp_path / "reports").iterdir()) == []
    monkeypatch.undo()
    eval_report.write_report(out, result, {"checkpoint": "fake"})
    first = json.loads((out / "metrics.json").read_text())
    assert first["policy"]["checkpoint"] == "fake"
    with pytest.raises(eval_report.ReportError, match="already exists"):
        eval_report.write_report(out, result, {"checkpoint": "again"})
    eval_report.write_report(out, result, {"checkpoint": "again"}, force=True)
    assert json.loads((out / "metrics.json").read_text())["policy"]["checkpoint"] == "again"
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["r1"]


@pytest.fixture(scope="module")
def demo_checkpoint(tmp_path_factory, contract) -> str:
    from gemma3nvla_ros.policy.demo_checkpoint import ensure_demo_checkpoint

    return str(ensure_demo_checkpoint(tmp_path_factory.mktemp("ckpt") / "demo", contract, camera_shape=(24, 32)))


def _cli(*args: str, timeout: float = 300.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gemma3nvla_ros.cli", "eval-bag", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_cli_writes_the_report_with_the_tiny_model(tmp_path, demo_checkpoint):
    bag = synthetic_bag(tmp_path / "bag", duration=2.4, gaps=[(0.8, 1.6)], storage="sqlite3")
    out = tmp_path / "out" / "report"
    done = _cli(str(bag), "--checkpoint", demo_checkpoint, "--out", str(out), "--task", "pick the cube",
                "--device", "cpu", "--threads", "1", "--episode-gap", "0.5")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"report: {out / 'index.html'}" in done.stdout
    assert "shoulder_pan   MAE" in done.stderr and "2 episode(s)" in done.stderr
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["overall"]["episodes"] == 2 and doc["overall"]["counts"]["chunks"] >= 2
    assert doc["reference"]["source"] == "commands" and doc["policy"]["device"] == "cpu"
    assert doc["overall"]["latency"]["p50_s"] > 0
    assert set(doc["overall"]["commands"]["joints"]) == set(doc["units"])
    page = (out / "index.html").read_text()
    for joint in doc["units"]:
        assert f'src="plots/{joint}.png"' in page and (out / "plots" / f"{joint}.png").stat().st_size > 5000
    assert 'src="plots/horizon.png"' in page and 'href="metrics.json"' in page
    assert sorted(p.name for p in out.parent.iterdir()) == ["report"]  # nothing else left next to it

    again = _cli(str(bag), "--checkpoint", demo_checkpoint, "--out", str(out), "--task", "x")
    assert again.returncode == 1 and "already exists" in again.stderr and "--force" in again.stderr


def test_cli_bad_bags_leave_nothing(tmp_path, demo_checkpoint):
    out = tmp_path / "out" / "report"
    bag = synthetic_bag(tmp_path / "bag", duration=1.0)
    data = next(bag.glob("*.mcap"))
    data.write_bytes(data.read_bytes()[:5000])
    done = _cli(str(bag), "--checkpoint", demo_checkpoint, "--out", str(out), "--task", "x")
    assert done.returncode == 1
    assert "cannot be read as a rosbag2 bag" in done.stderr and "/cameras/top/image_raw" in done.stderr
    assert "Traceback" not in done.stderr

    missing = _cli(str(tmp_path / "nope"), "--checkpoint", demo_checkpoint, "--out", str(out), "--task", "x")
    assert missing.returncode == 1 and "no bag at" in missing.stderr

    # corrupted mid-way: found after the model ran on the first part
    import sqlite3

    bag2 = synthetic_bag(tmp_path / "bag2", duration=1.0, storage="sqlite3")
    with sqlite3.connect(next(bag2.glob("*.db3"))) as db:
        (count,) = db.execute("SELECT count(*) FROM messages").fetchone()
        db.execute("UPDATE messages SET data = substr(data, 1, 10) WHERE id = ?", (count - 6,))
    corrupted = _cli(str(bag2), "--checkpoint", demo_checkpoint, "--out", str(out), "--task", "x", "--device", "cpu",
                     "--threads", "1")
    assert corrupted.returncode == 1 and "is corrupted" in corrupted.stderr, corrupted.stderr[-2000:]
    assert not out.exists() and (not out.parent.exists() or list(out.parent.iterdir()) == [])


def test_console_scripts_for_ros2_run():
    """`ros2 run gemma3nvla_ros eval_bag|bag_play` are console scripts of setup.py (installed to lib/gemma3nvla_ros)."""
    import importlib
    import re

    scripts = dict(re.findall(r'"(\w+) = (gemma3nvla_ros[\w.]+:\w+)"', (REPO / "setup.py").read_text()))
    for name, target in (("eval_bag", "gemma3nvla_ros.tools.eval_bag:main"),
                         ("bag_play", "gemma3nvla_ros.tools.bag_replay:main")):
        assert scripts[name] == target
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func))
