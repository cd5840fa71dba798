"""``gemma3nvla-ros topic list|echo|hz|pub`` (as ``ros2 topic ...``)."""
from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections import deque
from typing import Any, Optional

import rclpy
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    QoSPresetProfiles,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from rclpy.task import Future
from rclpy.topic_or_service_is_hidden import topic_or_service_is_hidden

from gemma3nvla_ros.tools import msg_yaml
from gemma3nvla_ros.tools.cli_session import (
    DISCOVERY_TIMEOUT_S,
    LIST_SPIN_S,
    CliError,
    cli_node,
    clock_now,
    listen_to_graph,
    load_type,
    wait_for,
)

QOS_PRESETS = [k for k in QoSPresetProfiles.short_keys() if k != "unknown"]
QOS_RELIABILITY = ["reliable", "best_effort", "system_default"]
QOS_DURABILITY = ["transient_local", "volatile", "system_default"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    topic = sub.add_parser("topic", help="inspect and publish topics (like `ros2 topic`)")
    verbs = topic.add_subparsers(dest="verb", required=True)

    p = verbs.add_parser("list", help="output a list of available topics")
    p.add_argument("-t", "--show-types", action="store_true", help="additionally show the topic type")
    p.add_argument("-c", "--count-topics", action="store_true", help="only display the number of topics")
    p.add_argument("--include-hidden-topics", action="store_true", help="consider hidden topics as well")
    p.add_argument("--spin-time", type=float, default=LIST_SPIN_S, help="how long to listen for discovery (s)")
    p.set_defaults(handler=cmd_list)

    p = verbs.add_parser("echo", help="output messages from a topic")
    p.add_argument("topic_name")
    p.add_argument("message_type", nargs="?", help="e.g. sensor_msgs/msg/JointState (default: from the graph)")
    _add_qos_arguments(p, "sensor_data", "(reliability and durability then follow the publishers, as ros2)")
    p.add_argument("--once", action="store_true", help="print the first message received and exit")
    p.add_argument("--no-arr", action="store_true", help="don't print array fields of messages")
    p.add_argument("--no-str", action="store_true", help="don't print string fields of messages")
    p.add_argument("--field", help="echo a selected field of a message, e.g. header.stamp")
    p.add_argument("-l", "--truncate-length", type=int, default=msg_yaml.DEFAULT_TRUNCATE_LENGTH,
                   help="cut sequences/strings longer than this (byte blobs print as '<N bytes>')")
    p.add_argument("-f", "--full-length", action="store_true", help="print everything, blobs included")
    p.add_argument("--timeout", type=float, help="exit 1 if no message arrives within this many seconds")
    p.add_argument("--spin-time", type=float, default=DISCOVERY_TIMEOUT_S,
                   help="longest wait to discover the type and the publishers (s)")
    p.set_defaults(handler=cmd_echo)

    p = verbs.add_parser("hz", help="print the average publishing rate")
    p.add_argument("topic_name")
    p.add_argument("-w", "--window", type=int, default=10000, help="window size in messages")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--spin-time", type=float, default=DISCOVERY_TIMEOUT_S,
                   help="longest wait to discover the type (s)")
    p.set_defaults(handler=cmd_hz)

    p = verbs.add_parser("pub", help="publish a message to a topic")
    p.add_argument("topic_name")
    p.add_argument("message_type", help="e.g. sensor_msgs/msg/JointState")
    p.add_argument("values", nargs="?", default="{}", help="field values in YAML, e.g. '{data: 1}'")
    p.add_argument("-r", "--rate", type=float, default=1.0, help="publishing rate in Hz (default 1)")
    p.add_argument("-p", "--print", type=int, default=1, help="print every Nth message, 0 for none")
    once = p.add_mutually_exclusive_group()
    once.add_argument("-1", "--once", action="store_true", help="publish one message and exit")
    once.add_argument("-t", "--times", type=int, default=0, help="publish this many messages and exit")
    p.add_argument("-w", "--wait-matching-subscriptions", type=int,
                   help="wait for this many subscriptions first (default 1 with --once/--times, else 0)")
    p.add_argument("--max-wait-time-secs", type=float,
                   help="give up waiting for subscriptions after this long (default: wait forever)")
    p.add_argument("--keep-alive", type=float, default=0.1, help="stay this long after the last message (s)")
    _add_qos_arguments(p, "default")
    p.set_defaults(handler=cmd_pub)


# --- QoS -------------------------------------------------------------------------------------------------

def _add_qos_arguments(p: argparse.ArgumentParser, default: str, note: str = "") -> None:
    p.add_argument("--qos-profile", choices=QOS_PRESETS, default=default,
                   help=f"QoS preset to start from (default: {default}) {note}".rstrip())
    p.add_argument("--qos-reliability", choices=QOS_RELIABILITY, help="override the preset's reliability")
    p.add_argument("--qos-durability", choices=QOS_DURABILITY, help="override the preset's durability")


def qos_from_args(args: argparse.Namespace) -> QoSProfile:
    # the presets are shared module-level objects: never modify them in place
    profile = copy.copy(QoSPresetProfiles.get_from_short_key(args.qos_profile))
    if args.qos_reliability:
        profile.reliability = ReliabilityPolicy.get_from_short_key(args.qos_reliability)
    if args.qos_durability:
        profile.durability = DurabilityPolicy.get_from_short_key(args.qos_durability)
    return profile


def choose_qos(node: Node, topic: str, args: argparse.Namespace) -> QoSProfile:
    """ros2 topic echo's choice: RELIABLE only when every publisher is reliable (so a best-effort
    camera is received), TRANSIENT_LOCAL only when every publisher keeps its last sample; policies
    given on the command line win."""
    profile = qos_from_args(args)
    if args.qos_reliability or args.qos_durability:
        return profile
    publishers = node.get_publishers_info_by_topic(topic)
    if not publishers:
        return profile
    reliable = [p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in publishers]
    latched = [p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in publishers]
    profile.reliability = ReliabilityPolicy.RELIABLE if all(reliable) else ReliabilityPolicy.BEST_EFFORT
    profile.durability = DurabilityPolicy.TRANSIENT_LOCAL if all(latched) else DurabilityPolicy.VOLATILE
    if any(reliable) and not all(reliable):
        print("Some, but not all, publishers are offering RELIABLE: falling back to BEST_EFFORT to "
              "connect to all of them", file=sys.stderr)
    if any(latched) and not all(latched):
        print("Some, but not all, publishers are offering TRANSIENT_LOCAL: falling back to VOLATILE to "
              "connect to all of them", file=sys.stderr)
    return profile


# --- list ----------------------------------------------------------------------------------------------

def cmd_list(args: argparse.Namespace) -> int:
    with cli_node() as node:
        listen_to_graph(args.spin_time)
        topics = [(name, types) for name, types in node.get_topic_names_and_types()
                  if args.include_hidden_topics or not topic_or_service_is_hidden(name)]
    if args.count_topics:
        print(len(topics))
        return 0
    for name, types in topics:
        print(f"{name} [{', '.join(types)}]" if args.show_types else name)
    return 0


# --- helpers shared by echo and hz ---------------------------------------------------------------------

def _message_class(node: Node, topic: str, given: Optional[str], spin_time: float) -> type:
    if given:
        return load_type(given)

    def types() -> list[str]:
        return dict(node.get_topic_names_and_types()).get(topic, [])

    wait_for(types, spin_time)
    found = types()
    if not found:
        raise CliError(f"Could not determine the type for the passed topic {topic} (not published?); "
                       "give the type as the next argument")
    if len(found) > 1:
        raise CliError(f"Cannot echo topic '{topic}', as it contains more than one type: [{', '.join(found)}]")
    return load_type(found[0])


# --- echo ----------------------------------------------------------------------------------------------

def cmd_echo(args: argparse.Namespace) -> int:
    options = dict(truncate_length=None if args.full_length else args.truncate_length,
                   no_arr=args.no_arr, no_str=args.no_str)
    with cli_node() as node:
        topic = node.resolve_topic_name(args.topic_name)
        cls = _message_class(node, topic, args.message_type, args.spin_time)
        if args.field:  # a typo in --field should fail now, not at the first message
            msg_yaml.get_field(cls(), args.field)
        # the publishers' QoS picks ours; the type may be known before they are
        wait_for(lambda: node.get_publishers_info_by_topic(topic), args.spin_time)
        received = Future()

        def on_msg(msg: Any) -> None:
            if args.once and received.done():
                return
            value, field_type = msg_yaml.get_field(msg, args.field or "")
            sys.stdout.write(msg_yaml.field_to_yaml(value, field_type, **options) + "---\n")
            sys.stdout.flush()
            if not received.done():
                received.set_result(True)

        node.create_subscription(cls, topic, on_msg, choose_qos(node, topic, args))
        if args.once:
            rclpy.spin_until_future_complete(node, received, timeout_sec=args.timeout)
        elif args.timeout is not None:
            rclpy.spin_until_future_complete(node, Future(), timeout_sec=args.timeout)
        else:
            rclpy.spin(node)
        if args.timeout is not None and not received.done():
            raise CliError(f"no message on {topic} within {args.timeout:g} s")
    return 0


# --- hz ------------------------------------------------------------------------------------------------

class RateStats:
    """Receipt times in a window -> ros2 topic hz's numbers (mean rate; min/max/std dev of periods)."""

    def __init__(self, window: int):
        self.times: deque[float] = deque(maxlen=max(2, window + 1))
        self.count = 0

    def add(self, t: float) -> None:
        self.times.append(t)
        self.count += 1

    def stats(self) -> Optional[tuple[float, float, float, float, int]]:
        t = list(self.times)
        if len(t) < 2:
            return None
        periods = [b - a for a, b in zip(t, t[1:])]
        mean = sum(periods) / len(periods)
        std = math.sqrt(sum((p - mean) ** 2 for p in periods) / len(periods))
        return (1.0 / mean if mean > 0 else 0.0), min(periods), max(periods), std, len(periods)

    @staticmethod
    def format(stats: tuple[float, float, float, float, int]) -> str:
        rate, lo, hi, std, n = stats
        return f"average rate: {rate:.3f}\n\tmin: {lo:.3f}s max: {hi:.3f}s std dev: {std:.5f}s window: {n}"


def cmd_hz(args: argparse.Namespace) -> int:
    with cli_node() as node:
        topic = node.resolve_topic_name(args.topic_name)
        cls = _message_class(node, topic, None, args.spin_time)
        stats = RateStats(args.window)
        printed = [0]

        def report() -> None:
            result = stats.stats()
            print("no new messages" if stats.count == printed[0] or result is None else RateStats.format(result),
                  flush=True)
            printed[0] = stats.count

        # raw: counting needs no deserialization (a 720p frame would cost more than the interval);
        # sensor-data QoS (best effort) connects to any publisher, as ros2 topic hz
        node.create_subscription(cls, topic, lambda _data: stats.add(time.monotonic()), qos_profile_sensor_data,
                                 raw=True)
        node.create_timer(1.0, report)
        rclpy.spin_until_future_complete(node, Future(), timeout_sec=args.duration)
    return 0


# --- pub -----------------------------------------------------------------------------------------------

def cmd_pub(args: argparse.Namespace) -> int:
    times = 1 if args.once else args.times
    if args.rate <= 0 or times < 0:
        raise CliError("--rate must be > 0 and --times >= 0")
    cls = load_type(args.message_type)
    values = msg_yaml.parse_yaml_values(args.values)
    wait = args.wait_matching_subscriptions
    wait = int(times != 0) if wait is None else wait
    with cli_node() as node:
        now = clock_now(node)
        msg_yaml.fill_message(cls, values, now)  # refuse bad YAML before anyone sees a publisher
        pub = node.create_publisher(cls, node.resolve_topic_name(args.topic_name), qos_from_args(args))
        if pub.get_subscription_count() < wait:
            print(f"Waiting for at least {wait} matching subscription(s)...", flush=True)
            limit = float("inf") if args.max_wait_time_secs is None else args.max_wait_time_secs
            if not wait_for(lambda: pub.get_subscription_count() >= wait, limit):
                raise CliError(f"Timed out waiting for subscribers: Expected {wait} subscribers but only got "
                               f"{pub.get_subscription_count()} subscribers")
        print("publisher: beginning loop", flush=True)
        count = [0]
        finished = Future()

        def publish() -> None:
            if finished.done():
                return
            msg = msg_yaml.fill_message(cls, values, now)  # again: "now"/"auto" stamps are per message
            pub.publish(msg)
            count[0] += 1
            if args.print and count[0] % args.print == 0:
                print(f"publishing #{count[0]}: {msg!r}\n", flush=True)
            if times and count[0] >= times:
                finished.set_result(True)

        publish()  # the first one now, the rest on the timer, as ros2
        node.create_timer(1.0 / args.rate, publish)
        rclpy.spin_until_future_complete(node, finished)
        time.sleep(args.keep_alive)  # let reliable delivery finish before the writer goes, as ros2
    return 0
