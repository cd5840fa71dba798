"""Live replay: play a bag's sensor topics with /clock into the running graph, for machines without ``ros2``.

    gemma3nvla-ros bag play <bag> [--rate R] [--topics T ...] [--clock HZ] [--delay S] [--start-offset S]
    gemma3nvla-ros bag info <bag>
    ros2 run gemma3nvla_ros bag_play <bag> ...        (the same console script)

On a ROS 2 machine the equivalent is ``ros2 bag play <bag> --clock 100 --topics <sensor topics>``. Start the
nodes with ``use_sim_time:=true`` (e.g. ``gemma3nvla-ros run action_aggregator --ros-args -p use_sim_time:=true``):
their clocks then follow the bag, so the policy's freshness checks, the chunk stamps and the aggregator's
ticks all run on bag time.

What is played
    By default the contract's sensor topics found in the bag: each camera's topic (and its ``/compressed``
    variant), their ``camera_info`` siblings and the joint-state topic. ``--topics`` chooses others. Command
    topics — anything that makes the arm move: ``/joint_commands``, the contract's action-chunk topic,
    ``/action_chunk_request``, any trajectory_msgs type, any topic with "command" in its name — are refused
    unless ``--allow-command-topics`` is given as well as naming them in ``--topics``.
Messages
    The recorded CDR bytes are published as they are (rclpy ``publish(bytes)``: no decoding, no re-encoding),
    each at its log time scaled by ``--rate``, with the recorded QoS (reliability, durability, depth) when the
    bag has it — cameras recorded from camera_node are best effort, as live — and sensor-data QoS for images
    (reliable depth 10 for others) when it does not.
/clock
    rosgraph_msgs/Clock at a steady ``--clock`` Hz of wall time (default 100; 0 = none), best effort depth 1 as
    ``ros2 bag play --clock`` does, never ahead of the next message still to be published. During ``--delay``
    (default 1 s, time for DDS discovery) it holds the start time.
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gemma3nvla_ros.tools.bag_io import IMAGE_TYPES, Bag, BagError, TopicSummary, absolute_topic

COMMAND_TOPICS = ("/joint_commands", "/action_chunk", "/action_chunk_request")
GRAPH_TOPICS = ("/clock", "/rosout", "/parameter_events")
CLOCK_HZ = 100.0
LATE_S = 0.05  # a message published later than this behind its due time counts as late


class ReplayError(RuntimeError):
    pass


def is_command_topic(name: str, msgtype: str, action_chunk_topic: str = "/action_chunk") -> bool:
    """Would replaying this topic move the arm? (see the module docstring)"""
    return (name in COMMAND_TOPICS or name == action_chunk_topic or msgtype.startswith("trajectory_msgs/")
            or absolute_topic(action_chunk_topic) == name or "command" in name.lower())


def sensor_topics(bag: Bag, contract: Any) -> list[str]:
    """The contract's sensor topics present in the bag: cameras (raw and/or compressed), camera_info, joint states."""
    wanted: list[str] = []
    for topic in map(absolute_topic, contract.cameras.values()):
        base = topic.rsplit("/", 1)[0]
        wanted += [topic, f"{topic}/compressed", f"{base}/camera_info"]
    wanted.append(absolute_topic(contract.joint_states_topic))
    return [t for t in dict.fromkeys(wanted) if t in bag.topics and bag.topics[t].count > 0]


def select_topics(bag: Bag, contract: Any, topics: Sequence[str] | None = None, allow_commands: bool = False) -> list[str]:
    """The topics to play; BagError (listing the bag) for unknown ones, ReplayError for command topics."""
    if not topics:
        chosen = sensor_topics(bag, contract)
        if not chosen:
            raise bag.error(f"none of the contract's sensor topics ({', '.join(contract.cameras.values())}, "
                            f"{contract.joint_states_topic}) is in the bag: choose some with --topics")
        return chosen
    unknown = [t for t in topics if t not in bag.topics]
    if unknown:
        raise bag.error(f"--topics: {unknown} not in the bag")
    graph = [t for t in topics if t in GRAPH_TOPICS]
    if graph:
        raise ReplayError(f"--topics: {graph} belong to the ROS graph itself and are never replayed (/clock is "
                          "published from bag time)")
    commands = [t for t in topics if is_command_topic(t, bag.topics[t].msgtype, contract.action_chunk_topic)]
    if commands and not allow_commands:
        raise ReplayError(f"--topics: {commands} command the arm; replaying them into a live graph moves it. Add "
                          "--allow-command-topics if that is what you want")
    return list(dict.fromkeys(topics))


@dataclass(frozen=True)
class QosChoice:
    reliability: str  # reliable | best_effort
    durability: str  # volatile | transient_local
    depth: int
    source: str  # recorded | default


def qos_choice(summary: TopicSummary) -> QosChoice:
    """The QoS to publish a recorded topic with (see the module docstring)."""
    profiles = list(summary.qos)
    if profiles:
        rel = {p.reliability.name for p in profiles}
        dur = {p.durability.name for p in profiles}
        known_rel = rel <= {"RELIABLE", "BEST_EFFORT"}
        if known_rel:
            reliability = "reliable" if rel == {"RELIABLE"} else "best_effort"
            durability = "transient_local" if dur == {"TRANSIENT_LOCAL"} else "volatile"
            depth = max([p.depth for p in profiles if p.depth > 0] or [10])
            return QosChoice(reliability, durability, depth, "recorded")
    if summary.msgtype in IMAGE_TYPES or summary.msgtype == "sensor_msgs/msg/CameraInfo":
        return QosChoice("best_effort", "volatile", 5, "default (sensor data)")
    return QosChoice("reliable", "volatile", 10, "default")


def _qos_profile(choice: QosChoice):
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=choice.depth,
        reliability=ReliabilityPolicy.RELIABLE if choice.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
        durability=(DurabilityPolicy.TRANSIENT_LOCAL if choice.durability == "transient_local"
                    else DurabilityPolicy.VOLATILE))


def message_class(msgtype: str):
    """``sensor_msgs/msg/Image`` -> the rclpy message class (ReplayError when its package is not installed)."""
    package, _, name = msgtype.partition("/msg/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError):
        raise ReplayError(f"cannot publish {msgtype}: its Python message package ({package}) is not installed "
                          "here") from None


class Player:
    """Publishes ``topics`` of an open bag in real time × ``rate`` with /clock (see the module docstring)."""

    def __init__(self, node, bag: Bag, topics: Sequence[str], rate: float = 1.0, clock_hz: float = CLOCK_HZ,
                 start_offset: float = 0.0, delay: float = 1.0) -> None:
        if not rate > 0:
            raise ReplayError(f"--rate must be > 0, not {rate}")
        if not clock_hz >= 0:
            raise ReplayError(f"--clock must be >= 0 Hz (0 = no /clock), not {clock_hz}")
        if not (0 <= start_offset) or (bag.message_count and bag.start_ns + int(start_offset * 1e9) > bag.end_ns):
            raise bag.error(f"--start-offset {start_offset} s is outside the bag (0 to "
                            f"{(bag.end_ns - bag.start_ns) / 1e9:.3f} s)")
        self.node, self.bag, self.topics = node, bag, list(topics)
        self.rate, self.clock_hz, self.delay = float(rate), float(clock_hz), max(0.0, float(delay))
        self.start_ns = bag.start_ns + int(round(start_offset * 1e9))
        self.publishers: dict[str, Any] = {}
        self.qos: dict[str, QosChoice] = {}
        for topic in self.topics:
            summary = bag.topics[topic]
            self.qos[topic] = qos_choice(summary)
            self.publishers[topic] = node.create_publisher(message_class(summary.msgtype), topic,
                                                           _qos_profile(self.qos[topic]))
        self.clock_pub = None
        if self.clock_hz:
            import rosgraph_msgs.msg
            from rclpy.qos import QoSProfile, ReliabilityPolicy

            self._clock_cls = rosgraph_msgs.msg.Clock
            self.clock_pub = node.create_publisher(rosgraph_msgs.msg.Clock, "/clock",
                                                   QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
        self.published: Counter = Counter()
        self.late = 0
        self.max_lag_s = 0.0
        self.clock_ns: int | None = None  # the last /clock published
        self.last_ns: int | None = None  # log time of the last message published
        self.stop = False

    def _publish_clock(self, ns: int) -> None:
        if self.clock_pub is None:
            return
        msg = self._clock_cls()
        msg.clock.sec, msg.clock.nanosec = divmod(int(ns), 1_000_000_000)
        self.clock_pub.publish(msg)
        self.clock_ns = int(ns)

    def run(self) -> float:
        """Play to the end (or until ``stop``); returns the wall seconds of playback."""
        period = 1.0 / self.clock_hz if self.clock_hz else None
        now = time.monotonic()
        wall0 = now + self.delay
        next_clock = now
        while now < wall0 and not self.stop:  # hold the start time while subscribers find us
            if period is not None and now >= next_clock:
                self._publish_clock(self.start_ns)
                next_clock += period
            time.sleep(max(0.0, min(wall0, next_clock if period else wall0, time.monotonic() + 0.1) - time.monotonic()))
            now = time.monotonic()
        last_ns = self.start_ns
        for m in self.bag.messages(self.topics, start_ns=self.start_ns):
            due = wall0 + (m.time_ns - self.start_ns) / 1e9 / self.rate
            while not self.stop:
                now = time.monotonic()
                if period is not None and now >= next_clock:
                    bag_now = self.start_ns + int((now - wall0) * self.rate * 1e9)
                    self._publish_clock(min(max(bag_now, last_ns), m.time_ns))
                    next_clock = next_clock + period if next_clock + period > now else now + period
                    continue
                if now >= due:
                    break
                time.sleep(min(due - now, (next_clock - now) if period is not None else 0.1, 0.1))
            if self.stop:
                break
            lag = time.monotonic() - due
            self.max_lag_s = max(self.max_lag_s, lag)
            if lag > LATE_S:
                self.late += 1
            self.publishers[m.topic].publish(m.raw)
            self.published[m.topic] += 1
            last_ns = self.last_ns = m.time_ns
        if not self.stop:
            self._publish_clock(last_ns)
        return time.monotonic() - wall0


# ---------------------------------------------------------------------------------------------- command line
def build_parser(prog: str = "gemma3nvla-ros bag") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Replay a bag into the live graph, or describe it.")
    sub = p.add_subparsers(dest="verb", required=True)
    play = sub.add_parser("play", help="publish a bag's sensor topics with /clock (like `ros2 bag play --clock`)")
    play.add_argument("bag", help="rosbag2 directory, or a .mcap/.db3 file")
    play.add_argument("--rate", "-r", type=float, default=1.0, help="playback speed (default 1.0)")
    play.add_argument("--topics", nargs="+", help="topics to play (default: the contract's sensor topics)")
    play.add_argument("--allow-command-topics", action="store_true",
                      help="allow command topics named in --topics (/joint_commands, /action_chunk, ...)")
    play.add_argument("--clock", type=float, default=CLOCK_HZ, help="/clock rate in Hz of wall time (0: none)")
    play.add_argument("--delay", type=float, default=1.0, help="seconds to wait (holding /clock) before playing")
    play.add_argument("--start-offset", type=float, default=0.0, help="start this many seconds into the bag")
    play.add_argument("--contract", help="contract YAML naming the sensor topics (default: config/so101_contract.yaml)")
    play.add_argument("--quiet", "-q", action="store_true")
    info = sub.add_parser("info", help="what a bag holds (like `ros2 bag info`)")
    info.add_argument("bag")
    return p


def main(argv: list[str] | None = None, prog: str = "gemma3nvla-ros bag") -> int:
    if argv is None:  # the bag_play console script (ros2 run gemma3nvla_ros bag_play ...)
        argv, prog = sys.argv[1:], "bag_play"
    ros_args: list[str] = []
    if "--ros-args" in argv:  # `ros2 run gemma3nvla_ros bag_play ... --ros-args -r __ns:=/x`
        i = argv.index("--ros-args")
        argv, ros_args = argv[:i], argv[i:]
    if argv[:1] not in (["play"], ["info"]) and argv[:1] != ["-h"] and argv[:1] != ["--help"]:
        argv = ["play", *argv]  # bag_play <bag> ...
    args = build_parser(prog).parse_args(argv)
    try:
        if args.verb == "info":
            with Bag(args.bag) as bag:
                print(bag.describe())
            return 0
        return _play(args, ros_args)
    except (BagError, ReplayError) as exc:
        print(f"{prog} {args.verb}: error: {exc}", file=sys.stderr)
        return 1


def _play(args: argparse.Namespace, ros_args: list[str]) -> int:
    from gemma3nvla_ros.contract import Contract, ContractError, default_contract_path

    try:
        contract = Contract.load(args.contract or default_contract_path())
    except ContractError as exc:
        raise ReplayError(str(exc)) from None
    with Bag(args.bag) as bag:
        topics = select_topics(bag, contract, args.topics, args.allow_command_topics)
        import rclpy
        from rclpy.signals import SignalHandlerOptions

        rclpy.init(args=["--ros-args", *ros_args[1:]] if ros_args else [],
                   signal_handler_options=SignalHandlerOptions.NO)
        node = rclpy.create_node("gemma3nvla_bag_player")
        player = None
        try:
            player = Player(node, bag, topics, args.rate, args.clock, args.start_offset, args.delay)

            def on_signal(_signum, _frame):
                player.stop = True

            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, on_signal)
            if not args.quiet:
                print(f"playing {', '.join(f'{t} ({player.qos[t].reliability})' for t in topics)} from "
                      f"{args.bag} at {args.rate:g}x" + (f" with /clock at {args.clock:g} Hz" if args.clock else "")
                      + " (Ctrl-C stops)", file=sys.stderr, flush=True)
            wall = player.run()
        finally:
            node.destroy_node()
            rclpy.try_shutdown()
        if not args.quiet:
            total = sum(player.published.values())
            bag_s = ((player.last_ns or player.start_ns) - player.start_ns) / 1e9
            print(f"{'stopped' if player.stop else 'done'}: {total} messages in {wall:.2f} s ({bag_s:.2f} s of bag "
                  f"time), {player.late} late by > {LATE_S * 1e3:.0f} ms, max lag {player.max_lag_s * 1e3:.1f} ms",
                  file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
