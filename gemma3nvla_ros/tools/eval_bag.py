"""Offline evaluation: run a checkpoint on a recorded bag exactly as the live graph would, in bag time, and
compare what it would have commanded with what was recorded.

    gemma3nvla-ros eval-bag <bag> --checkpoint <dir|hub id|demo> --out <report dir> [--task "..."]
    ros2 run gemma3nvla_ros eval_bag <bag> --checkpoint ... --out ...      (the same console script)

What drives the policy
    The contract (``config/so101_contract.yaml``, ``--contract``) maps camera keys to topics and names the
    joint-state topic, as for the live policy node; ``--camera KEY=TOPIC`` and ``--joint-states TOPIC``
    override it. A camera topic missing from the bag is looked up as ``<topic>/compressed`` (image_transport's
    name for sensor_msgs/CompressedImage) before it is an error. Frames are decoded by
    ``hardware.image_msgs.image_to_rgb``, observations built by ``control.observation.build_observation``
    (same freshness rule, same refusals, same image-size check against the checkpoint), joint units converted
    by the contract's ``DatasetUnits`` (``--robot-id`` / ``--calibration-file`` as for the node), actions turned
    into a chunk stamped with the observation's capture time and ``time_from_start = i / fps`` as the node
    publishes them, and merged by ``control.action_queue`` (``chunk_arrays``, ``ActionQueue``) with the
    action_aggregator node's own tick logic (``SetpointStream``): start from the measured pose once a chunk is
    queued, hold when the queue runs dry, ask for the next chunk when ``queued / chunk_size <=
    chunk_size_threshold`` and again every 0.5 s while it stays low, clamp each step to ``max_step``.
    Defaults are the nodes' defaults (``--strategy``, ``--threshold``, ``--max-step``, ``--control-rate``,
    ``--max-observation-age``). The task is ``--task``, else the policy's task topic if recorded
    (``/gemma3nvla_policy/task``, std_msgs/String, latest message at the time of the observation).

Time
    Everything runs on bag time: the log (receive) time of each message, what ``ros2 bag play --clock`` would
    put on /clock. Header stamps are used where the live nodes use them: an input's capture time for the
    freshness check and the chunk's stamp (``--stamps receive`` uses log times instead, for bags whose header
    stamps are on another clock). Control ticks fall every 1/control_rate s from the start of each episode; a
    message is seen by a tick at the same time or later.

When the policy is queried, and latency
    Exactly when the aggregator asks (the threshold logic above, in bag time); a request while a chunk is being
    computed is ignored, as by the node. ``--latency zero`` (default): the chunk is merged at the tick that
    asked for it — reproducible and independent of the machine running the evaluation, the policy's best case.
    ``--latency measured``: merged after the wall time ``infer`` took here. ``--latency 0.15``: after a fixed
    0.15 s (model the deployment GPU). Inference wall time is reported in every case.

Episodes
    A bag is split where ``joint_states`` pauses for more than ``--episode-gap`` seconds (default 1.0; 0 = one
    episode); an episode spans its first to its last joint state. Each episode starts like a fresh launch (empty
    queue, no setpoint yet, no chunk in flight); the latest camera frames are kept (freshness still applies).
    ``--start`` / ``--end`` (seconds from the bag's start) restrict the time range first.

The recorded reference
    ``/joint_commands`` (``--commands-topic``) when the bag has it (what the arm was told: a teleop leader, or
    a previous policy run): the latest command at the tick, as a servo holds its goal. Otherwise the measured
    joint state one control period later ("the next joint state"), interpolated between samples.
    ``--reference commands|joint_states`` forces one. See ``tools/eval_metrics.py`` for the metrics.

The report (``tools/eval_report.py``) is written into a temporary folder next to ``--out`` and renamed into
place at the end; on any error nothing is left behind. This is open loop: the recorded arm did not follow the
simulated commands, so errors late in a chunk also measure how the recording drifted from the plan.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from gemma3nvla_ros.contract import Contract, ContractError
from gemma3nvla_ros.control.action_queue import STRATEGIES, ActionQueue, ChunkRejected, SetpointStream, chunk_arrays
from gemma3nvla_ros.control.observation import ObservationRefused, Stamped, build_observation, joint_state_positions
from gemma3nvla_ros.control.units import DatasetUnits
from gemma3nvla_ros.hardware.image_msgs import image_to_rgb
from gemma3nvla_ros.tools import eval_metrics as em
from gemma3nvla_ros.tools.bag_io import (
    IMAGE_TYPES,
    JOINT_STATE_TYPES,
    Bag,
    BagError,
    BagMessage,
    absolute_topic,
    stamp_ns,
)

# The live nodes' parameter defaults (nodes/action_aggregator.py, nodes/policy_node.py; a test keeps them equal).
STRATEGY = "weighted_average"
CHUNK_SIZE_THRESHOLD = 0.5
MAX_STEP = 0.1  # rad per tick; 0 disables
CONTROL_RATE = 0.0  # 0 = the contract's fps
ENSEMBLE_M = 0.01
MAX_OBSERVATION_AGE = 0.5  # s
TASK_TOPIC = "/gemma3nvla_policy/task"  # the policy node's ~/task
COMMANDS_TOPIC = "/joint_commands"
EPISODE_GAP_S = 1.0
REFERENCE_MAX_GAP_S = 0.5  # a reference sample older (hold) or a hole wider (interp) than this is "unknown"
STRING_TYPES = ("std_msgs/msg/String",)
# What is counted per episode (metrics.json "counts"), always all of them.
COUNT_KEYS = ("ticks", "commands", "holds", "ticks_step_clamped", "requests", "requests_while_busy", "refusals",
              "chunks", "chunks_merged", "chunks_rejected", "chunks_after_end", "setpoints_dropped_past")


class EvalError(RuntimeError):
    """The evaluation cannot run or produced nothing to report; ``str()`` says why."""


class Runner(Protocol):
    """What the evaluation needs of a policy (``policy.runner.PolicyRunner`` or a test's fake)."""

    image_shapes: Mapping[str, tuple[int, int]]

    def infer(self, values: Mapping[str, Any]) -> NDArray[np.float64]: ...


@dataclass
class EvalOptions:
    task: str | None = None
    strategy: str = STRATEGY
    threshold: float = CHUNK_SIZE_THRESHOLD
    max_step: float = MAX_STEP
    control_rate: float = CONTROL_RATE
    ensemble_m: float = ENSEMBLE_M
    max_observation_age: float = MAX_OBSERVATION_AGE
    latency: str = "zero"  # zero | measured | seconds as text
    episode_gap: float = EPISODE_GAP_S
    start: float | None = None  # s from the bag's start
    end: float | None = None
    reference: str = "auto"  # auto | commands | joint_states
    commands_topic: str = COMMANDS_TOPIC
    task_topic: str = TASK_TOPIC
    stamps: str = "header"  # header | receive
    gripper_threshold: float | None = None  # dataset units; None: middle of the recorded gripper range

    def latency_s(self) -> float | None:
        """Fixed latency in seconds, or None for ``measured``."""
        text = str(self.latency).strip().lower()
        if text in ("zero", "0", "0.0"):
            return 0.0
        if text == "measured":
            return None
        try:
            value = float(text)
        except ValueError:
            raise EvalError(f"--latency must be zero, measured or seconds (e.g. 0.15), not {self.latency!r}") from None
        if not (math.isfinite(value) and value >= 0):
            raise EvalError(f"--latency must be >= 0 seconds, not {self.latency!r}")
        return value

    def check(self) -> None:
        problems = []
        if self.strategy not in STRATEGIES:
            problems.append(f"--strategy must be one of {list(STRATEGIES)}, not {self.strategy!r}")
        if not 0.0 <= self.threshold <= 1.0:
            problems.append(f"--threshold must be in [0, 1], not {self.threshold}")
        if not self.max_step >= 0:
            problems.append(f"--max-step must be >= 0 (0 disables), not {self.max_step}")
        if not self.control_rate >= 0:
            problems.append(f"--control-rate must be >= 0 (0 = the contract's fps), not {self.control_rate}")
        if not self.max_observation_age > 0:
            problems.append(f"--max-observation-age must be > 0, not {self.max_observation_age}")
        if not self.episode_gap >= 0:
            problems.append(f"--episode-gap must be >= 0 (0 = one episode), not {self.episode_gap}")
        if self.reference not in ("auto", "commands", "joint_states"):
            problems.append(f"--reference must be auto, commands or joint_states, not {self.reference!r}")
        if self.stamps not in ("header", "receive"):
            problems.append(f"--stamps must be header or receive, not {self.stamps!r}")
        if self.start is not None and self.end is not None and self.end <= self.start:
            problems.append(f"empty time range: --end {self.end} s is not after --start {self.start} s")
        if problems:
            raise EvalError("; ".join(problems))
        self.latency_s()


# ---------------------------------------------------------------------------------------------- topics
@dataclass
class TopicPlan:
    cameras: dict[str, str]  # camera key -> topic read (maybe <topic>/compressed)
    joint_states: str
    reference: str  # "commands" | "joint_states"
    commands: str | None  # recorded command topic (JointState), when present
    task_topic: str | None
    notes: list[str] = field(default_factory=list)

    def topics(self) -> list[str]:
        return list(dict.fromkeys([*self.cameras.values(), self.joint_states,
                                   *([self.commands] if self.commands else []),
                                   *([self.task_topic] if self.task_topic else [])]))


def plan_topics(bag: Bag, contract: Contract, options: EvalOptions) -> TopicPlan:
    """Which bag topic feeds what; one BagError listing every problem and the bag's contents."""
    problems: list[str] = []
    notes: list[str] = []
    cameras: dict[str, str] = {}
    for key, topic in contract.cameras.items():
        topic = absolute_topic(topic)
        info = bag.topics.get(topic)
        compressed = bag.topics.get(f"{topic}/compressed")
        if info is None and compressed is not None and compressed.msgtype == IMAGE_TYPES[1]:
            notes.append(f"camera {key}: {topic} is not in the bag; reading {compressed.name} (CompressedImage)")
            info = compressed
        if info is None:
            problems.append(f"camera {key}: topic {topic} (or {topic}/compressed) is not in the bag; map another "
                            f"with --camera {key}=<topic>")
        elif info.msgtype not in IMAGE_TYPES:
            problems.append(f"camera {key}: topic {info.name} has type {info.msgtype}, expected {' or '.join(IMAGE_TYPES)}")
        elif info.count == 0:
            problems.append(f"camera {key}: topic {info.name} has no messages")
        else:
            cameras[key] = info.name
    js = absolute_topic(contract.joint_states_topic)
    info = bag.topics.get(js)
    if info is None:
        problems.append(f"joint states: topic {js} is not in the bag (choose another with --joint-states)")
    elif info.msgtype not in JOINT_STATE_TYPES:
        problems.append(f"joint states: topic {js} has type {info.msgtype}, expected {JOINT_STATE_TYPES[0]}")
    elif info.count == 0:
        problems.append(f"joint states: topic {js} has no messages")

    commands = None
    cmd = bag.topics.get(absolute_topic(options.commands_topic))
    if options.reference != "joint_states" and cmd is not None:
        if cmd.msgtype not in JOINT_STATE_TYPES:
            problems.append(f"recorded commands: topic {cmd.name} has type {cmd.msgtype}, expected "
                            f"{JOINT_STATE_TYPES[0]} (--commands-topic names another; --reference joint_states "
                            "ignores it)")
        elif cmd.count > 0:
            commands = cmd.name
    if options.reference == "commands" and commands is None and (cmd is None or cmd.count == 0):
        problems.append(f"--reference commands: the bag has no messages on {options.commands_topic} "
                        "(--commands-topic names another)")
    reference = options.reference
    if reference == "auto":
        reference = "commands" if commands else "joint_states"
        if not commands:
            notes.append(f"no {options.commands_topic} in the bag: the reference is the next joint state")

    task_topic = None
    if not options.task:
        t = bag.topics.get(absolute_topic(options.task_topic))
        if t is not None and t.msgtype in STRING_TYPES and t.count > 0:
            task_topic = t.name
            notes.append(f"task from {t.name} (latest message before each observation)")
        else:
            problems.append(f"no task: pass --task \"...\" (the bag has no {STRING_TYPES[0]} messages on "
                            f"{options.task_topic})")
    if problems:
        raise bag.error("the bag does not fit the evaluation:\n  - " + "\n  - ".join(problems))
    return TopicPlan(cameras, js, reference, commands, task_topic, notes)


# ---------------------------------------------------------------------------------------------- records
@dataclass
class ChunkRecord:
    request_ns: int  # when the aggregator asked (and the observation was built)
    stamp_ns: int  # the observation's capture stamp (slot 0 time)
    arrival_ns: int  # when it was merged
    times_ns: NDArray[np.int64]  # absolute due time of every action
    positions: NDArray[np.float64]  # radians, contract joint order
    latency_s: float  # wall time of runner.infer here
    merged: bool = False


@dataclass
class EpisodeRecord:
    index: int
    start_ns: int
    end_ns: int = 0
    tick_ns: list[int] = field(default_factory=list)  # every control tick
    command_ns: list[int] = field(default_factory=list)  # ticks that published a setpoint
    commands: list[NDArray[np.float64]] = field(default_factory=list)  # radians
    chunks: list[ChunkRecord] = field(default_factory=list)
    refusals: Counter = field(default_factory=Counter)
    rejections: Counter = field(default_factory=Counter)
    counts: Counter = field(default_factory=Counter)


@dataclass
class Series:
    """A recorded JointState stream in contract order (radians), by log time."""

    times: list[int] = field(default_factory=list)
    values: list[list[float]] = field(default_factory=list)
    incomplete: int = 0  # messages lacking a contracted joint

    def add(self, time_ns: int, positions: Mapping[str, float], joints: Sequence[str]) -> None:
        if all(j in positions for j in joints):
            self.times.append(time_ns)
            self.values.append([float(positions[j]) for j in joints])
        else:
            self.incomplete += 1

    def arrays(self, width: int) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        return (np.asarray(self.times, dtype=np.int64),
                np.asarray(self.values, dtype=np.float64).reshape(-1, width))


@dataclass
class EvalResult:
    bag_description: str
    bag_path: str
    bag_start_ns: int
    range_ns: tuple[int, int]
    contract: Contract
    units: DatasetUnits
    plan: TopicPlan
    options: EvalOptions
    episodes: list[EpisodeRecord]
    joint_states: Series
    commands: Series
    period_ns: int
    wall_s: float
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- simulation
class _Inputs:
    """What the policy node holds between requests: the latest raw frame per camera, joint state and task."""

    def __init__(self, cameras: Mapping[str, str]) -> None:
        self.images: dict[str, Stamped | None] = {key: None for key in cameras}
        self.joint_state: Stamped | None = None
        self.task: str | None = None


class SimAggregator:
    """action_aggregator's ``_on_chunk`` / ``_on_tick`` on an injected bag-time clock (the per-tick logic is the
    node's own ``SetpointStream``)."""

    def __init__(self, contract: Contract, options: EvalOptions) -> None:
        self.contract = contract
        self.rate = options.control_rate or contract.fps
        self.period_ns = int(1e9 / self.rate)
        self.queue = ActionQueue(self.period_ns, options.strategy, options.ensemble_m)
        self.stream = SetpointStream(self.queue, contract.chunk_size, options.threshold, options.max_step)
        self.joints = list(contract.joints)

    def on_joint_state(self, positions: Mapping[str, float]) -> None:
        if all(n in positions for n in self.joints):
            self.stream.measured = np.array([positions[n] for n in self.joints], dtype=np.float64)

    def on_chunk(self, stamp: int, positions: NDArray[np.float64], tfs_ns: Sequence[int], now: int, ep: EpisodeRecord) -> bool:
        try:
            times, pos = chunk_arrays(stamp or now, self.joints, positions, tfs_ns, self.joints)
            report = self.queue.merge(times, pos, now)
        except ChunkRejected as exc:
            ep.counts["chunks_rejected"] += 1
            ep.rejections[str(exc)] += 1
            return False
        ep.counts["chunks_merged"] += 1
        ep.counts["setpoints_dropped_past"] += report.dropped_past
        self.stream.chunk_merged()
        return True

    def tick(self, now: int, ep: EpisodeRecord) -> tuple[NDArray[np.float64] | None, bool]:
        """(setpoint published at this tick or None, whether a chunk is requested)."""
        ep.tick_ns.append(now)
        tick = self.stream.tick(now)
        ep.counts["holds"] += tick.started_holding
        ep.counts["ticks_step_clamped"] += tick.clamped
        return tick.setpoint, tick.request


class SimPolicy:
    """policy_node's ``_on_request`` + ``_infer_once`` on an injected bag-time clock."""

    def __init__(self, contract: Contract, units: DatasetUnits, runner: Runner, options: EvalOptions,
                 inputs: _Inputs) -> None:
        self.contract, self.units, self.runner, self.inputs = contract, units, runner, inputs
        self.max_age_ns = int(options.max_observation_age * 1e9)
        self.fixed_latency_s = options.latency_s()
        self.period_ns = int(round(1e9 / contract.fps))  # the node's time_from_start step
        self.image_shapes = getattr(runner, "image_shapes", None) or None
        self.in_flight: ChunkRecord | None = None

    def on_request(self, now: int, ep: EpisodeRecord) -> ChunkRecord | None:
        """A chunk computed from the inputs as of ``now`` (due to arrive at ``arrival_ns``), or None (refused, or
        busy with the previous one)."""
        ep.counts["requests"] += 1
        if self.in_flight is not None:
            ep.counts["requests_while_busy"] += 1
            return None
        inputs = self.inputs
        try:
            decoded = {k: None if v is None else Stamped(v.stamp_ns, image_to_rgb(v.value.msg))
                       for k, v in inputs.images.items()}
            obs = build_observation(self.contract, self.units, decoded, inputs.joint_state, inputs.task, now,
                                    self.max_age_ns, image_shapes=self.image_shapes)
        except (ObservationRefused, ValueError) as exc:
            ep.counts["refusals"] += 1
            ep.refusals[str(exc)] += 1
            return None
        t0 = time.perf_counter()
        try:
            actions = self.runner.infer(obs.values)
        except Exception as exc:  # noqa: BLE001 - the node turns a failed chunk into a refusal too
            ep.counts["refusals"] += 1
            ep.refusals[f"inference failed: {type(exc).__name__}: {exc}"] += 1
            return None
        latency = time.perf_counter() - t0
        radians = self.units.dataset_to_ros(np.asarray(actions, dtype=np.float64))
        tfs = np.arange(len(radians), dtype=np.int64) * self.period_ns
        delay = latency if self.fixed_latency_s is None else self.fixed_latency_s
        record = ChunkRecord(now, obs.stamp_ns, now + int(round(delay * 1e9)), obs.stamp_ns + tfs,
                             np.asarray([[float(x) for x in row] for row in radians], dtype=np.float64), latency)
        ep.chunks.append(record)
        self.in_flight = record
        return record


class _Episode:
    """One episode's event loop: control ticks and chunk arrivals between the bag's messages."""

    def __init__(self, index: int, start_ns: int, contract: Contract, units: DatasetUnits, runner: Runner,
                 options: EvalOptions, inputs: _Inputs) -> None:
        self.record = EpisodeRecord(index, start_ns)
        self.agg = SimAggregator(contract, options)
        self.policy = SimPolicy(contract, units, runner, options, inputs)
        self.next_tick = start_ns + self.agg.period_ns  # a timer started with the episode

    def advance_to(self, t: int, inclusive: bool = False) -> None:
        """Run every tick and chunk arrival before ``t`` (at or before, with ``inclusive``), in time order;
        a chunk arriving at a tick's time is merged before that tick."""
        def due(x: int) -> bool:
            return x <= t if inclusive else x < t

        while True:
            arrival = self.policy.in_flight.arrival_ns if self.policy.in_flight is not None else None
            if arrival is not None and arrival <= self.next_tick and due(arrival):
                self._deliver(arrival)
            elif due(self.next_tick):
                now = self.next_tick
                self.next_tick += self.agg.period_ns
                setpoint, request = self.agg.tick(now, self.record)
                if setpoint is not None:
                    self.record.command_ns.append(now)
                    self.record.commands.append(setpoint)
                if request:
                    chunk = self.policy.on_request(now, self.record)
                    if chunk is not None and chunk.arrival_ns <= now:  # zero latency: merged at this tick
                        self._deliver(now)
            else:
                return

    def _deliver(self, now: int) -> None:
        chunk, self.policy.in_flight = self.policy.in_flight, None
        assert chunk is not None
        tfs = chunk.times_ns - chunk.stamp_ns
        chunk.merged = self.agg.on_chunk(chunk.stamp_ns, chunk.positions, tfs.tolist(), now, self.record)

    def finish(self, end_ns: int) -> EpisodeRecord:
        self.advance_to(end_ns, inclusive=True)
        if self.policy.in_flight is not None:  # computed, but arrives after the episode: never merged
            self.record.counts["chunks_after_end"] += 1
            self.policy.in_flight = None
        self.record.end_ns = end_ns
        self.record.counts["ticks"] = len(self.record.tick_ns)
        self.record.counts["commands"] = len(self.record.command_ns)
        self.record.counts["chunks"] = len(self.record.chunks)
        return self.record


def evaluate(
    bag: Bag,
    contract: Contract,
    units: DatasetUnits,
    runner: Runner,
    options: EvalOptions,
    plan: TopicPlan | None = None,
    progress: bool = False,
) -> EvalResult:
    """Replay the bag through the simulated policy + aggregator and compute the metrics (see the module docstring)."""
    options.check()
    contract.check_units(units)
    plan = plan or plan_topics(bag, contract, options)
    if bag.message_count == 0:
        raise bag.error("the bag has no messages")
    start = bag.start_ns + int(round((options.start or 0.0) * 1e9))
    stop = bag.end_ns + 1 if options.end is None else bag.start_ns + int(round(options.end * 1e9))
    if start > bag.end_ns or stop <= bag.start_ns or stop <= start:
        raise bag.error(
            f"empty time range: --start {options.start or 0:g} s / --end {options.end if options.end is not None else 'end'}"
            f" selects nothing; the bag spans 0 to {(bag.end_ns - bag.start_ns) / 1e9:.3f} s")
    joints = list(contract.joints)
    gap_ns = int(options.episode_gap * 1e9) if options.episode_gap > 0 else None
    use_header = options.stamps == "header"
    inputs = _Inputs(plan.cameras)
    if options.task:
        inputs.task = options.task.strip()
    topic_to_key = {topic: key for key, topic in plan.cameras.items()}
    js_series, cmd_series = Series(), Series()
    episodes: list[EpisodeRecord] = []
    state: dict[str, Any] = {"ep": None, "last_js": None, "pending": [], "skipped": 0}
    bar = _progress_bar((stop - start) / 1e9) if progress else None
    shown = start

    def handle(m: BagMessage) -> None:
        """Update what the nodes hold (and the recorded series) from one message."""
        if m.topic in topic_to_key:
            stamp = stamp_ns(m.msg) if use_header else m.time_ns
            inputs.images[topic_to_key[m.topic]] = Stamped(stamp, m)  # decoded only when used, as the node does
        if m.topic == plan.joint_states:
            positions = joint_state_positions(m.msg)
            stamp = stamp_ns(m.msg) if use_header else m.time_ns
            inputs.joint_state = Stamped(stamp, positions)
            js_series.add(m.time_ns, positions, joints)
            if state["ep"] is not None:
                state["ep"].agg.on_joint_state(positions)
        if m.topic == plan.commands:
            cmd_series.add(m.time_ns, joint_state_positions(m.msg), joints)
        if m.topic == plan.task_topic:
            inputs.task = str(m.msg.data)

    def close_episode() -> None:
        record = state["ep"].finish(state["last_js"])
        if record.counts["ticks"]:
            record.index = len(episodes)
            episodes.append(record)
        else:
            state["skipped"] += 1
        for m in state["pending"]:  # after the episode's last joint state: inputs only
            handle(m)
        state["ep"], state["pending"] = None, []

    t_wall = time.perf_counter()
    try:
        for m in bag.messages(plan.topics(), start, stop):
            if bar is not None and m.time_ns - shown >= 100_000_000:
                bar.update((m.time_ns - shown) / 1e9)
                shown = m.time_ns
            ep: _Episode | None = state["ep"]
            if ep is not None and gap_ns is not None and m.time_ns - state["last_js"] > gap_ns:
                close_episode()
                ep = None
            if m.topic == plan.joint_states:
                if ep is None:
                    ep = state["ep"] = _Episode(len(episodes), m.time_ns, contract, units, runner, options, inputs)
                else:
                    for p in state["pending"]:
                        ep.advance_to(p.time_ns)
                        handle(p)
                    state["pending"] = []
                ep.advance_to(m.time_ns)
                handle(m)
                state["last_js"] = m.time_ns
            elif ep is None:
                handle(m)
            else:
                state["pending"].append(m)
        if state["ep"] is not None:
            close_episode()
    finally:
        if bar is not None:
            bar.update(max(0.0, (stop - shown) / 1e9))
            bar.close()
    wall = time.perf_counter() - t_wall

    if not episodes:
        raise bag.error(f"nothing to evaluate: no {plan.joint_states} messages between "
                        f"{(start - bag.start_ns) / 1e9:.3f} s and {(min(stop, bag.end_ns) - bag.start_ns) / 1e9:.3f} s")
    if not any(ep.chunks for ep in episodes):
        reasons = Counter()
        for ep in episodes:
            reasons.update(ep.refusals)
        listed = "; ".join(f"{n}x {r}" for r, n in reasons.most_common(5)) or "the aggregator never asked"
        raise EvalError(f"the policy never produced a chunk in {len(episodes)} episode(s): {listed}")

    result = EvalResult(bag.describe(), str(bag.path), bag.start_ns, (start, min(stop, bag.end_ns + 1)), contract,
                        units, plan, options, episodes, js_series, cmd_series,
                        SimAggregator(contract, options).period_ns, wall, notes=list(plan.notes))
    if state["skipped"]:
        result.notes.append(f"{state['skipped']} stretch(es) of joint states shorter than one control period skipped")
    if js_series.incomplete:
        result.notes.append(f"{js_series.incomplete} {plan.joint_states} messages lacked a contracted joint (skipped)")
    if cmd_series.incomplete:
        result.notes.append(f"{cmd_series.incomplete} {plan.commands} messages lacked a contracted joint (skipped)")
    result.metrics = compute_metrics(result)
    return result


def _progress_bar(total_s: float):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=round(total_s, 1), unit="bag s", desc="eval-bag", file=sys.stderr, dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} bag s [{elapsed}<{remaining}, {rate_fmt}]")


# ---------------------------------------------------------------------------------------------- metrics
def reference(result: EvalResult, times_ns: NDArray[np.int64]) -> NDArray[np.float64]:
    """The recorded reference (radians) at ``times_ns`` (NaN rows where unknown)."""
    width = len(result.contract.joints)
    max_gap = int(REFERENCE_MAX_GAP_S * 1e9)
    if result.plan.reference == "commands":
        t, v = result.commands.arrays(width)
        return em.reference_at(times_ns, t, v, "hold", max_gap)
    t, v = result.joint_states.arrays(width)
    return em.reference_at(times_ns, t, v, "interp", max_gap, lead_ns=result.period_ns)


def _to_dataset(units: DatasetUnits, radians: NDArray[np.float64]) -> NDArray[np.float64]:
    out = np.full(radians.shape, np.nan)
    ok = np.all(np.isfinite(radians), axis=1) if radians.ndim == 2 and len(radians) else np.zeros(0, bool)
    if ok.any():
        out[ok] = units.ros_to_dataset(radians[ok])
    return out


def unit_names(contract: Contract, units: DatasetUnits) -> dict[str, str]:
    body = "deg" if units.mode.value == "degrees" else "-100..100"
    return {j: ("0..100" if j == "gripper" else body) for j in contract.joints}


def compute_metrics(result: EvalResult) -> dict[str, Any]:
    """Per-episode and overall (pooled) metrics in dataset units (see ``tools/eval_metrics.py``)."""
    contract, units = result.contract, result.units
    joints = list(contract.joints)
    width = len(joints)
    horizon = max((len(c.times_ns) for ep in result.episodes for c in ep.chunks), default=contract.chunk_size)
    g = joints.index("gripper") if "gripper" in joints else None

    series = []  # per episode: commanded and reference values at the command ticks, horizon sums
    for ep in result.episodes:
        times = np.asarray(ep.command_ns, dtype=np.int64)
        pred = _to_dataset(units, np.asarray(ep.commands, dtype=np.float64).reshape(-1, width))
        ref = _to_dataset(units, reference(result, times))
        sums, counts = np.zeros((horizon, width)), np.zeros(horizon, dtype=np.int64)
        for chunk in ep.chunks:
            ok = chunk.times_ns <= ep.end_ns
            if ok.any():
                ct = chunk.times_ns[ok]
                em.accumulate_horizon(ct, _to_dataset(units, chunk.positions[ok]),
                                      _to_dataset(units, reference(result, ct)), sums, counts)
        series.append((ep, pred, ref, sums, counts))
    pred_all = np.concatenate([s[1] for s in series]) if series else np.zeros((0, width))
    ref_all = np.concatenate([s[2] for s in series]) if series else np.zeros((0, width))
    threshold = _gripper_threshold(result, ref_all, g)

    per_episode: list[dict[str, Any]] = []
    counts_all: Counter = Counter()
    refusals_all: Counter = Counter()
    rejections_all: Counter = Counter()
    for ep, pred, ref, sums, counts in series:
        counts_all.update(ep.counts)
        refusals_all.update(ep.refusals)
        rejections_all.update(ep.rejections)
        per_episode.append({
            "index": ep.index,
            "start_s": (ep.start_ns - result.bag_start_ns) / 1e9,
            "end_s": (ep.end_ns - result.bag_start_ns) / 1e9,
            "duration_s": (ep.end_ns - ep.start_ns) / 1e9,
            **_block(joints, pred, ref, sums, counts, [c.latency_s for c in ep.chunks], ep.counts, ep.refusals,
                     ep.rejections, g, threshold),
        })
    overall = _block(joints, pred_all, ref_all, sum((s[3] for s in series), np.zeros((horizon, width))),
                     sum((s[4] for s in series), np.zeros(horizon, dtype=np.int64)),
                     [c.latency_s for ep in result.episodes for c in ep.chunks], counts_all, refusals_all,
                     rejections_all, g, threshold)
    overall["episodes"] = len(result.episodes)
    overall["duration_s"] = sum(e["duration_s"] for e in per_episode)
    return {"overall": overall, "episodes": per_episode, "units": unit_names(contract, units),
            "gripper_threshold": threshold}


def _gripper_threshold(result: EvalResult, ref: NDArray[np.float64], g: int | None) -> float | None:
    """``--gripper-threshold``, else the middle of the recorded reference's gripper range (50 without one)."""
    if g is None:
        return None
    if result.options.gripper_threshold is not None:
        return float(result.options.gripper_threshold)
    col = ref[:, g][np.isfinite(ref[:, g])] if len(ref) else np.zeros(0)
    return float((col.min() + col.max()) / 2.0) if len(col) else 50.0


def _block(joints, pred, ref, sums, counts, latencies, ep_counts, refusals, rejections, g, threshold) -> dict[str, Any]:
    ticks = int(ep_counts.get("ticks", 0))
    block: dict[str, Any] = {
        "commands": em.joint_errors(pred, ref, joints),
        "horizon": em.horizon_errors(sums, counts, joints),
        "latency": em.latency_stats(latencies),
        "coverage": (int(ep_counts.get("commands", 0)) / ticks) if ticks else None,
        "counts": {k: int(ep_counts.get(k, 0)) for k in COUNT_KEYS},
        "refusals": {r: int(n) for r, n in refusals.most_common(10)},
        "rejections": {r: int(n) for r, n in rejections.most_common(10)},
    }
    if g is not None:
        block["gripper"] = em.gripper_agreement(pred[:, g], ref[:, g], threshold)
    return block


# ---------------------------------------------------------------------------------------------- loading
def load_contract(path: str | None, cameras: Sequence[str] = (), joint_states: str | None = None) -> Contract:
    """The contract with ``--camera KEY=TOPIC`` / ``--joint-states`` overrides (validated as the file is)."""
    from gemma3nvla_ros.contract import default_contract_path

    contract = Contract.load(path or default_contract_path())
    if not cameras and not joint_states:
        return contract
    data = contract.to_dict()
    for item in cameras:
        key, sep, topic = item.partition("=")
        if not sep:
            raise EvalError(f"--camera wants KEY=TOPIC, e.g. observation.images.top=/top/image_raw, not {item!r}")
        if key not in data["cameras"]:
            raise EvalError(f"--camera {key}: not a camera of the contract {contract.source} ({list(data['cameras'])})")
        data["cameras"][key] = topic
    if joint_states:
        data["joint_states_topic"] = joint_states
    return Contract.from_dict(data, source=f"{contract.source} (with command-line overrides)")


def load_units(contract: Contract, robot_id: str = "", calibration_file: str = "") -> tuple[DatasetUnits, str]:
    """The contract's DatasetUnits from the arm's calibration, as the policy node resolves it."""
    from gemma3nvla_ros.hardware.calibration import (
        EXAMPLE_CALIBRATION,
        load_calibration,
        parse_calibration,
        resolve_calibration_path,
    )

    motors = {n: i for i, n in enumerate(contract.joints, start=1)}
    if not (robot_id or calibration_file):
        return (contract.dataset_units(parse_calibration(EXAMPLE_CALIBRATION, motors)),
                "no --robot-id/--calibration-file: the built-in example calibration (gripper units approximate)")
    path = resolve_calibration_path(robot_id, calibration_file)
    return contract.dataset_units(load_calibration(path, motors)), f"calibration {path}"


def first_frame_shape(bag: Bag, plan: TopicPlan) -> tuple[int, int]:
    """(H, W) of the first frame of the first camera (what a demo checkpoint must be built for)."""
    topic = next(iter(plan.cameras.values()))
    for m in bag.messages([topic]):
        return tuple(image_to_rgb(m.msg).shape[:2])  # type: ignore[return-value]
    raise bag.error(f"{topic} has no messages")


def load_runner(checkpoint: str, contract: Contract, bag: Bag, plan: TopicPlan, device: str, dtype: str,
                threads: int):
    """A PolicyRunner checked against the contract, as the node loads it; ``demo`` builds the untrained demo
    checkpoint for the bag's camera size."""
    from gemma3nvla_ros.policy.runner import PolicyRunner

    if checkpoint == "demo":
        from gemma3nvla_ros.policy.demo_checkpoint import ensure_demo_checkpoint

        h, w = first_frame_shape(bag, plan)
        checkpoint = str(ensure_demo_checkpoint(Path.home() / ".cache" / "gemma3nvla_ros" / f"demo_checkpoint_{h}x{w}",
                                                contract, camera_shape=(h, w)))
    runner = PolicyRunner(checkpoint, device=device, dtype=dtype, threads=threads)
    contract.check_features(runner.input_features, runner.output_features, runner.chunk_size)
    return runner, checkpoint


# ---------------------------------------------------------------------------------------------- command line
def build_parser(prog: str = "gemma3nvla-ros eval-bag") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Run a checkpoint on a recorded bag in bag time and report "
                                "how its commands compare with the recording (see tools/eval_bag.py).")
    p.add_argument("bag", help="rosbag2 directory, or a .mcap/.db3 file")
    p.add_argument("--checkpoint", required=True, help="pretrained_model dir, lerobot-train output dir, hub id, or demo")
    p.add_argument("--out", required=True, help="report folder to create (metrics.json, plots/, index.html)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--task", help="the instruction (default: the bag's policy task topic)")
    g = p.add_argument_group("topics (default: the contract)")
    g.add_argument("--contract", help="contract YAML (default: config/so101_contract.yaml)")
    g.add_argument("--camera", action="append", default=[], metavar="KEY=TOPIC", help="map a camera key to a topic")
    g.add_argument("--joint-states", help="joint state topic")
    g.add_argument("--commands-topic", default=COMMANDS_TOPIC, help="recorded commands (sensor_msgs/JointState)")
    g.add_argument("--task-topic", default=TASK_TOPIC, help="recorded task (std_msgs/String)")
    g.add_argument("--reference", default="auto", choices=("auto", "commands", "joint_states"),
                   help="what the commands are compared with (auto: commands if recorded, else next joint states)")
    g.add_argument("--stamps", default="header", choices=("header", "receive"),
                   help="capture times from header stamps, or the bag's receive times")
    g = p.add_argument_group("policy and aggregator (defaults: the nodes')")
    g.add_argument("--device", default="auto")
    g.add_argument("--dtype", default="auto")
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: half the cores)")
    g.add_argument("--seed", type=int, default=0, help="torch seed for the flow-matching noise")
    g.add_argument("--robot-id", default="", help="LeRobot calibration id (units)")
    g.add_argument("--calibration-file", default="")
    g.add_argument("--strategy", default=STRATEGY, choices=STRATEGIES)
    g.add_argument("--threshold", type=float, default=CHUNK_SIZE_THRESHOLD, help="chunk_size_threshold")
    g.add_argument("--max-step", type=float, default=MAX_STEP, help="rad per tick, 0 disables")
    g.add_argument("--control-rate", type=float, default=CONTROL_RATE, help="Hz, 0 = the contract's fps")
    g.add_argument("--ensemble-m", type=float, default=ENSEMBLE_M)
    g.add_argument("--max-observation-age", type=float, default=MAX_OBSERVATION_AGE)
    g.add_argument("--latency", default="zero", help="zero | measured | seconds: when a chunk is merged after the request")
    g = p.add_argument_group("range and episodes")
    g.add_argument("--start", type=float, help="seconds from the bag's start")
    g.add_argument("--end", type=float, help="seconds from the bag's start")
    g.add_argument("--episode-gap", type=float, default=EPISODE_GAP_S,
                   help="split episodes where joint states pause longer than this (s); 0 = one episode")
    g.add_argument("--gripper-threshold", type=float, help="open above this (dataset units); default: mid recorded range")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def options_from_args(args: argparse.Namespace) -> EvalOptions:
    return EvalOptions(
        task=args.task, strategy=args.strategy, threshold=args.threshold, max_step=args.max_step,
        control_rate=args.control_rate, ensemble_m=args.ensemble_m, max_observation_age=args.max_observation_age,
        latency=args.latency, episode_gap=args.episode_gap, start=args.start, end=args.end, reference=args.reference,
        commands_topic=args.commands_topic, task_topic=args.task_topic, stamps=args.stamps,
        gripper_threshold=args.gripper_threshold)


def main(argv: list[str] | None = None, prog: str = "gemma3nvla-ros eval-bag") -> int:
    import os

    from gemma3nvla_ros.tools import eval_report

    if argv is None:  # the eval_bag console script (ros2 run gemma3nvla_ros eval_bag ...)
        argv, prog = sys.argv[1:], "eval_bag"
    args = build_parser(prog).parse_args(argv)
    out = Path(args.out).expanduser()
    try:
        eval_report.check_out(out, args.force)
        options = options_from_args(args)
        options.check()
        contract = load_contract(args.contract, args.camera, args.joint_states)
        units, units_note = load_units(contract, args.robot_id, args.calibration_file)
        with Bag(args.bag) as bag:
            plan = plan_topics(bag, contract, options)
            print(bag.describe(), file=sys.stderr)
            for note in plan.notes:
                print(f"note: {note}", file=sys.stderr)
            threads = args.threads or max(1, (os.cpu_count() or 2) // 2)
            t0 = time.perf_counter()
            runner, checkpoint = load_runner(args.checkpoint, contract, bag, plan, args.device, args.dtype, threads)
            load_s = time.perf_counter() - t0
            import torch

            torch.manual_seed(args.seed)
            result = evaluate(bag, contract, units, runner, options, plan,
                              progress=not args.no_progress and sys.stderr.isatty())
        result.notes.append(units_note)
        info = {"checkpoint": checkpoint, "device": str(getattr(runner, "device", args.device)), "threads": threads,
                "seed": args.seed, "load_s": load_s}
        path = eval_report.write_report(out, result, info, force=args.force)
    except Exception as exc:  # noqa: BLE001 - every failure ends as one clear line (and no report)
        from gemma3nvla_ros.hardware.calibration import CalibrationError

        runner_module = sys.modules.get("gemma3nvla_ros.policy.runner")  # imported (with torch) only if it got there
        known = (BagError, EvalError, ContractError, CalibrationError, eval_report.ReportError,
                 *((runner_module.PolicyLoadError,) if runner_module else ()))
        if not isinstance(exc, known):
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    print(eval_report.summary_text(result), file=sys.stderr)
    print(f"report: {path / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
