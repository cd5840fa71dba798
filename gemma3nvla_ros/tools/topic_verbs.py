"""``gemma3nvla-ros topic list|echo|hz|pub`` (as ``ros2 topic ...``) on the built-in runtime."""
from __future__ import annotations

import argparse
import math
import sys
import time
from collections import deque
from typing import Optional

from gemma3nvla_ros.runtime.qos import (
    DurabilityPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_parameters,
    qos_profile_sensor_data,
    qos_profile_services_default,
    qos_profile_system_default,
)
from gemma3nvla_ros.tools import msg_yaml
from gemma3nvla_ros.tools.cli_session import CliError, CliSession, cli_session, load_type

QOS_PRESETS = {
    "default": QoSProfile(depth=10),
    "sensor_data": qos_profile_sensor_data,
    "services_default": qos_profile_services_default,
    "parameters": qos_profile_parameters,
    "system_default": qos_profile_system_default,
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    topic = sub.add_parser("topic", help="inspect and publish topics (like `ros2 topic`)")
    verbs = topic.add_subparsers(dest="verb", required=True)

    p = verbs.add_parser("list", help="output a list of available topics")
    p.add_argument("-t", "--show-types", action="store_true", help="additionally show the topic type")
    p.add_argument("-c", "--count-topics", action="store_true", help="only display the number of topics")
    p.add_argument("--spin-time", type=float, default=2.0, help="longest wait for discovery (s)")
    p.set_defaults(handler=cmd_list)

    p = verbs.add_parser("echo", help="output messages from a topic")
    p.add_argument("topic_name")
    p.add_argument("message_type", nargs="?", help="e.g. sensor_msgs/msg/JointState (default: from the graph)")
    p.add_argument("--once", action="store_true", help="print the first message received and exit")
    p.add_argument("--qos-profile", choices=sorted(QOS_PRESETS),
                   help="QoS preset (default: chosen to match the publishers, as ros2)")
    p.add_argument("--no-arr", action="store_true", help="don't print array fields of messages")
    p.add_argument("--no-str", action="store_true", help="don't print string fields of messages")
    p.add_argument("--field", help="echo a selected field of a message, e.g. header.stamp")
    p.add_argument("-l", "--truncate-length", type=int, default=msg_yaml.DEFAULT_TRUNCATE_LENGTH,
                   help="cut sequences/strings longer than this (byte blobs print as '<N bytes>')")
    p.add_argument("-f", "--full-length", action="store_true", help="print everything, blobs included")
    p.add_argument("--timeout", type=float, help="exit 1 if no message arrives within this many seconds")
    p.add_argument("--spin-time", type=float, default=2.0, help="longest wait to discover the type (s)")
    p.set_defaults(handler=cmd_echo)

    p = verbs.add_parser("hz", help="print the average publishing rate")
    p.add_argument("topic_name")
    p.add_argument("-w", "--window", type=int, default=10000, help="window size in messages")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--spin-time", type=float, default=2.0, help="longest wait to discover the type (s)")
    p.set_defaults(handler=cmd_hz)

    p = verbs.add_parser("pub", help="publish a message to a topic")
    p.add_argument("topic_name")
    p.add_argument("message_type", help="e.g. sensor_msgs/msg/JointState")
    p.add_argument("values", nargs="?", default="{}", help="field values in YAML, e.g. '{data: 1}'")
    p.add_argument("-r", "--rate", type=float, default=1.0, help="publishing rate in Hz (default 1)")
    p.add_argument("-1", "--once", action="store_true", help="publish one message and exit")
    p.add_argument("-t", "--times", type=int, default=0, help="publish this many messages and exit")
    p.add_argument("-w", "--wait-matching-subscriptions", type=int,
                   help="wait for this many subscriptions first (default 1 with --once/--times, else 0)")
    p.add_argument("--keep-alive", type=float, default=0.1, help="stay this long after the last message (s)")
    p.add_argument("--qos-profile", choices=sorted(QOS_PRESETS), default="default")
    p.add_argument("-p", "--print", type=int, default=1, help="print every Nth message, 0 for none")
    p.set_defaults(handler=cmd_pub)


# --- list ----------------------------------------------------------------------------------------------

def cmd_list(args: argparse.Namespace) -> int:
    with cli_session() as s:
        s.wait_settled(args.spin_time)
        topics = s.node.get_topic_names_and_types()
    if args.count_topics:
        print(len(topics))
        return 0
    for name, types in topics:
        print(f"{name} [{', '.join(types)}]" if args.show_types else name)
    return 0


# --- helpers shared by echo and hz ---------------------------------------------------------------------

def _resolve(s: CliSession, topic: str) -> str:
    return s.node.resolve_topic_name(topic)


def _discover_type(s: CliSession, topic: str, given: Optional[str], spin_time: float) -> type:
    if given:
        return load_type(given)
    s.wait_for(lambda: bool(s.topic_types(topic)), spin_time)
    types = s.topic_types(topic)
    if not types:
        raise CliError(f"Could not determine the type for the passed topic {topic} (not published?); "
                       "give the type as the next argument")
    if len(types) > 1:
        raise CliError(f"Cannot echo topic '{topic}', as it contains more than one type: [{', '.join(types)}]")
    return load_type(types[0])


def choose_qos(s: CliSession, topic: str, preset: Optional[str]) -> QoSProfile:
    """ros2cli's choose_qos: RELIABLE only when every publisher is reliable (so a best-effort camera
    is received), TRANSIENT_LOCAL only when every publisher keeps its last sample."""
    if preset:
        return QOS_PRESETS[preset]
    pubs = s.publishers(topic)
    qos = QoSProfile(depth=10)
    if not pubs:
        return qos
    if not all(p.reliable is not False for p in pubs):
        qos.reliability = ReliabilityPolicy.BEST_EFFORT
    if all(p.transient_local for p in pubs):
        qos.durability = DurabilityPolicy.TRANSIENT_LOCAL
    return qos


def _spin_until(s: CliSession, done, deadline: Optional[float]) -> bool:
    """Spin the CLI node until ``done()``; False when the deadline passed first."""
    while s.ok() and not done():
        if deadline is not None and time.monotonic() >= deadline:
            return False
        s.spin_once(0.05)
    return done()


# --- echo ----------------------------------------------------------------------------------------------

def cmd_echo(args: argparse.Namespace) -> int:
    truncate = None if args.full_length else args.truncate_length
    options = dict(truncate_length=truncate, no_arr=args.no_arr, no_str=args.no_str)
    with cli_session() as s:
        topic = _resolve(s, args.topic_name)
        cls = _discover_type(s, topic, args.message_type, args.spin_time)
        if args.field:  # a typo in --field should fail now, not at the first message
            msg_yaml.get_field(cls(), args.field)
        if not args.message_type or not args.qos_profile:
            s.wait_for(lambda: bool(s.publishers(topic)), args.spin_time)  # their QoS picks ours
        received = [0]

        def on_msg(msg) -> None:
            if args.once and received[0]:
                return
            received[0] += 1
            if args.field:
                value, spec = msg_yaml.get_field(msg, args.field)
                text = msg_yaml.field_to_yaml(value, spec, **options)
            else:
                text = msg_yaml.message_to_yaml(msg, **options)
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
            sys.stdout.write("---\n")
            sys.stdout.flush()

        s.node.create_subscription(cls, topic, on_msg, choose_qos(s, topic, args.qos_profile))
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        if args.once:
            if not _spin_until(s, lambda: received[0] > 0, deadline):
                raise CliError(f"no message on {topic} within {args.timeout} s")
            return 0
        _spin_until(s, lambda: False, deadline)
        if not received[0] and args.timeout is not None:
            raise CliError(f"no message on {topic} within {args.timeout} s")
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
    with cli_session() as s:
        topic = _resolve(s, args.topic_name)
        cls = _discover_type(s, topic, None, args.spin_time)
        s.wait_for(lambda: bool(s.publishers(topic)), args.spin_time)
        stats = RateStats(args.window)
        # raw: counting needs no deserialization (a 720p frame would cost more than the interval)
        s.node.create_subscription(cls, topic, lambda _data: stats.add(time.monotonic()),
                                   choose_qos(s, topic, None), raw=True)
        end = None if args.duration is None else time.monotonic() + args.duration
        next_print, printed_count = time.monotonic() + 1.0, 0
        while s.ok() and (end is None or time.monotonic() < end):
            s.spin_once(0.05)
            if time.monotonic() >= next_print:
                next_print += 1.0
                result = stats.stats()
                if stats.count == printed_count or result is None:
                    print("no new messages", flush=True)
                else:
                    print(RateStats.format(result), flush=True)
                printed_count = stats.count
    return 0


# --- pub -----------------------------------------------------------------------------------------------

def cmd_pub(args: argparse.Namespace) -> int:
    times = 1 if args.once else max(0, args.times)
    if args.rate <= 0:
        raise CliError("--rate must be > 0")
    cls = load_type(args.message_type)
    values = msg_yaml.parse_yaml_values(args.values)
    with cli_session() as s:
        msg_yaml.fill_message(cls, values, s.now)  # refuse bad YAML before anyone sees a publisher
        topic = _resolve(s, args.topic_name)
        pub = s.node.create_publisher(cls, topic, QOS_PRESETS[args.qos_profile])
        wait = args.wait_matching_subscriptions
        wait = (1 if times else 0) if wait is None else wait
        if wait > 0 and pub.get_subscription_count() < wait:
            print(f"Waiting for at least {wait} matching subscription(s)...", flush=True)
            s.wait_for(lambda: pub.get_subscription_count() >= wait, float("inf"))
        print("publisher: beginning loop", flush=True)
        period, count = 1.0 / args.rate, 0
        next_t = time.monotonic()
        while s.ok():
            msg = msg_yaml.fill_message(cls, values, s.now)  # again: "now"/"auto" stamps are per message
            pub.publish(msg)
            count += 1
            if args.print and count % args.print == 0:
                print(f"publishing #{count}: {msg!r}\n", flush=True)
            if times and count >= times:
                break
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))
        s.wait_for(lambda: False, args.keep_alive)  # let reliable delivery finish before the writer goes
    return 0
