"""``gemma3nvla-ros bag record <topics> -o <dir>``: a rosbag2 from the live graph, without ROS' ``ros2 bag``.

Like ``ros2 bag record``: each topic is subscribed *serialized* (``create_subscription(..., raw=True)``: the
CDR bytes as received, never deserialized) with QoS adapted to its publishers (RELIABLE only if every
publisher is, so a best-effort camera is received; TRANSIENT_LOCAL only if every publisher is, so a latched
``~/task`` recorded after it was published is still caught), and written with rosbags' ``Writer``: mcap
storage (or sqlite3), rosbag2 metadata version 9 (Jazzy), each topic with its type, the publishers' type
hash (RIHS01) and offered QoS, and its message definition, so both ``ros2 bag`` and rosbags read it back.
Message timestamps are the reception times (``received_timestamp`` of the message info), as rosbag2's.

Topics not yet published when recording starts are picked up when they appear (the graph is polled).
Writing happens on its own thread, so disk I/O never stalls the DDS callbacks. The first Ctrl-C /
SIGTERM / SIGHUP stops the subscriptions, writes what was received and closes the bag (index, summary and
``metadata.yaml``); later signals during that are ignored (``nodes.run.StopRequests``).

Message definitions come from rosbags' Jazzy type store; a type it lacks is read from the ``.msg`` files of
the ROS installation (``AMENT_PREFIX_PATH``); a type found in neither is not recorded (said at start).
"""
from __future__ import annotations

import argparse
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DISCOVERY_PERIOD_S = 0.25
DEFAULT_DEPTH = 100


@dataclass
class _Topic:
    name: str
    msgtype: str
    key: int
    count: int = 0


@dataclass
class RecordStats:
    topics: dict[str, _Topic] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


# --- message definitions ----------------------------------------------------------------------------------

def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


def _find_msg_file(msgtype: str) -> Path | None:
    pkg, _, name = msgtype.partition("/msg/")
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        path = Path(prefix) / "share" / pkg / "msg" / f"{name}.msg"
        if path.is_file():
            return path
    return None


def register_type(typestore, msgtype: str) -> None:
    """Make ``msgtype`` (and the types it uses) known to ``typestore``: from the store itself, or from the
    ``.msg`` files of the ROS installation. KeyError if a definition cannot be found."""
    from rosbags.typesys import get_types_from_msg

    pending = [msgtype]
    while pending:
        name = pending.pop()
        if name in typestore.fielddefs:
            continue
        path = _find_msg_file(name)
        if path is None:
            raise KeyError(name)
        types = get_types_from_msg(path.read_text(), name)
        typestore.register(types)
        for _consts, fields in types.values():
            for _fname, (kind, detail) in fields:
                pending.extend(_referenced(kind, detail))


def _referenced(kind, detail) -> list[str]:
    from rosbags.typesys.base import Nodetype

    if kind == Nodetype.NAME:
        return [detail]
    if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
        inner_kind, inner = detail[0]
        return _referenced(inner_kind, inner)
    return []


def message_definition(typestore, msgtype: str) -> tuple[str, str]:
    """(definition text in rosbag2's ros2msg form, RIHS01 hash) of ``msgtype``."""
    register_type(typestore, msgtype)
    msgdef, _ = typestore.generate_msgdef(msgtype, ros_version=2)
    return msgdef, typestore.hash_rihs01(msgtype)


# --- QoS --------------------------------------------------------------------------------------------------

def adapted_qos(publishers: list[Any], depth: int = DEFAULT_DEPTH):
    """ros2 bag record's choice for a subscription that hears every publisher."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    reliable = bool(publishers) and all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in publishers)
    latched = bool(publishers) and all(
        p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in publishers)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


def _duration(d: Any):
    from rosbags.interfaces import QosTime

    ns = int(getattr(d, "nanoseconds", 0))
    return QosTime(ns // 1_000_000_000, ns % 1_000_000_000)


def offered_qos(publishers: list[Any]) -> list[Any]:
    """The publishers' QoS as rosbags ``Qos`` (what rosbag2 stores as offered_qos_profiles)."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability

    def enum(cls, value):
        try:
            return cls[value.name]
        except KeyError:
            return cls.UNKNOWN

    out = []
    for p in publishers:
        q = p.qos_profile
        out.append(Qos(
            history=enum(QosHistory, q.history), depth=int(q.depth),
            reliability=enum(QosReliability, q.reliability), durability=enum(QosDurability, q.durability),
            deadline=_duration(q.deadline), lifespan=_duration(q.lifespan),
            liveliness=enum(QosLiveliness, q.liveliness),
            liveliness_lease_duration=_duration(q.liveliness_lease_duration),
            avoid_ros_namespace_conventions=bool(q.avoid_ros_namespace_conventions),
        ))
    return out


# --- the recorder -----------------------------------------------------------------------------------------

class BagRecorder:
    """Subscribes ``topics`` (or everything with ``all_topics``) on ``node`` and writes a rosbag2 at ``path``."""

    def __init__(self, node, path: Path, topics: list[str], *, all_topics: bool = False,
                 storage: str = "mcap", log=print) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.node = node
        self.path = Path(path)
        self.wanted = [node.resolve_topic_name(t) for t in topics]
        self.all_topics = all_topics
        self.log = log
        self.stats = RecordStats()
        self.typestore = _typestore()
        self.writer = Writer(self.path, version=9, storage_plugin=StoragePlugin[storage.upper()])
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._error: BaseException | None = None
        # Every storage call happens on the writer thread (sqlite3 objects must stay on their thread).
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._write_loop, name="bag-writer", daemon=True)
        self._thread.start()
        self._opened.wait()
        if self._error is not None:
            raise RuntimeError(f"cannot create {self.path}: {self._error}") from self._error
        self._subscriptions: list[Any] = []
        self._closed = False

    # executor thread ------------------------------------------------------------------------------------
    def discover(self) -> None:
        """Subscribe every wanted topic that now has a publisher with a known type."""
        types = dict(self.node.get_topic_names_and_types())
        names = self._candidates(types)
        for topic in names:
            if topic in self.stats.topics or topic in self.stats.skipped:
                continue
            found = types.get(topic)
            if not found:
                continue
            if len(found) > 1:
                self._skip(topic, f"more than one type on it ({', '.join(found)})")
                continue
            publishers = self.node.get_publishers_info_by_topic(topic)
            if not publishers:
                continue
            self._subscribe(topic, found[0], publishers)

    def _candidates(self, types: dict[str, list[str]]) -> list[str]:
        if not self.all_topics:
            return self.wanted
        from rclpy.topic_or_service_is_hidden import topic_or_service_is_hidden

        return [t for t in types if not topic_or_service_is_hidden(t)]

    def _subscribe(self, topic: str, msgtype: str, publishers: list[Any]) -> None:
        from gemma3nvla_ros.tools.cli_session import CliError, load_type

        try:
            cls = load_type(msgtype)
        except CliError:
            self._skip(topic, f"its message package for {msgtype} is not installed here")
            return
        try:
            msgdef, rihs01 = message_definition(self.typestore, msgtype)
        except (KeyError, ValueError) as exc:
            self._skip(topic, f"no message definition found for {exc} (not in rosbags' Jazzy types nor under AMENT_PREFIX_PATH)")
            return
        hashes = {str(getattr(p, "topic_type_hash", "")) for p in publishers} - {""}
        if len(hashes) == 1 and next(iter(hashes)).startswith("RIHS01_"):
            rihs01 = next(iter(hashes))  # what the publishers say they send
        key = len(self.stats.topics) + 1
        self._queue.put(("add", key, topic, msgtype, msgdef, rihs01, offered_qos(publishers)))
        qos = adapted_qos(publishers)
        self.stats.topics[topic] = entry = _Topic(topic, msgtype, key)

        def on_message(data: bytes, info: dict, k: int = key, e: _Topic = entry) -> None:
            stamp = info.get("received_timestamp") or time.time_ns()
            e.count += 1
            self._queue.put((k, stamp, data))

        self._subscriptions.append(self.node.create_subscription(cls, topic, on_message, qos, raw=True))
        self.log(f"[bag record] subscribed to {topic} ({msgtype}, {qos.reliability.name.lower()}, "
                 f"{qos.durability.name.lower()})")

    def _skip(self, topic: str, reason: str) -> None:
        self.stats.skipped[topic] = reason
        self.log(f"[bag record] not recording {topic}: {reason}")

    def stop_subscriptions(self) -> None:
        for sub in self._subscriptions:
            self.node.destroy_subscription(sub)
        self._subscriptions.clear()

    # writer thread ----------------------------------------------------------------------------------------
    def _write_loop(self) -> None:
        try:
            self.writer.open()
        except BaseException as exc:  # noqa: BLE001 - reported by __init__
            self._error = exc
            return
        finally:
            self._opened.set()
        connections: dict[int, Any] = {}
        while True:
            item = self._queue.get()
            if item is None:
                try:
                    self.writer.close()
                except BaseException as exc:  # noqa: BLE001 - reported by close()
                    self._error = self._error or exc
                return
            if self._error is not None:
                continue  # keep draining; the error is reported on close
            try:
                if item[0] == "add":
                    _, key, topic, msgtype, msgdef, rihs01, qos = item
                    connections[key] = self.writer.add_connection(
                        topic, msgtype, msgdef=msgdef, rihs01=rihs01, offered_qos_profiles=qos)
                else:
                    key, stamp, data = item
                    self.writer.write(connections[key], stamp, data)
            except BaseException as exc:  # noqa: BLE001 - reported by close()
                self._error = exc

    def close(self) -> None:
        """Write everything queued and close the bag (index, summary, metadata.yaml). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.stop_subscriptions()
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise RuntimeError(f"writing {self.path} failed: {self._error}") from self._error


# --- command line -----------------------------------------------------------------------------------------

def build_parser(prog: str = "gemma3nvla-ros bag record") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description="Record topics of the live graph into a rosbag2 (mcap, Jazzy metadata); "
        "Ctrl-C stops and closes the bag.")
    p.add_argument("topics", nargs="*", help="topics to record (e.g. /joint_states /joint_commands /cameras/top/image_raw)")
    p.add_argument("-a", "--all", action="store_true", help="record every (non-hidden) topic, also those appearing later")
    p.add_argument("-o", "--output", help="bag directory to create (default: rosbag2_YYYY_MM_DD-HH_MM_SS)")
    p.add_argument("-s", "--storage", choices=("mcap", "sqlite3"), default="mcap", help="storage plugin (default mcap)")
    p.add_argument("-d", "--max-duration", type=float, default=0.0, help="stop after this many seconds (0: until Ctrl-C)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.topics and not args.all:
        print("gemma3nvla-ros bag record: give topics to record, or -a/--all", file=sys.stderr)
        return 2
    out = Path(args.output or time.strftime("rosbag2_%Y_%m_%d-%H_%M_%S"))
    if out.exists():
        print(f"gemma3nvla-ros bag record: {out} exists already; choose another -o", file=sys.stderr)
        return 2

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from gemma3nvla_ros.nodes.run import StopRequests

    stop = StopRequests()
    stop.install()  # before rclpy.init: a Ctrl-C while starting still closes the bag
    rclpy.init(args=[], signal_handler_options=SignalHandlerOptions.NO)
    node = recorder = None
    code = 0
    try:
        node = rclpy.create_node(f"gemma3nvla_bag_recorder_{os.getpid()}", start_parameter_services=False)
        try:
            recorder = BagRecorder(node, out, args.topics, all_topics=args.all, storage=args.storage,
                                   log=lambda line: print(line, file=sys.stderr, flush=True))
        except RuntimeError as exc:
            print(f"gemma3nvla-ros bag record: {exc}", file=sys.stderr)
            return 1
        print(f"[bag record] recording to {out} ({args.storage}); Ctrl-C stops", file=sys.stderr, flush=True)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        recorder.discover()
        next_discovery = time.monotonic() + DISCOVERY_PERIOD_S
        deadline = time.monotonic() + args.max_duration if args.max_duration > 0 else None
        while stop.reason is None and rclpy.ok():
            executor.spin_once(timeout_sec=0.05)
            now = time.monotonic()
            if now >= next_discovery:
                recorder.discover()
                next_discovery = now + DISCOVERY_PERIOD_S
            if deadline is not None and now >= deadline:
                stop.request(f"--max-duration {args.max_duration:g} s")
        executor.remove_node(node)
    finally:
        if recorder is not None:
            try:
                recorder.close()
            except RuntimeError as exc:
                print(f"gemma3nvla-ros bag record: {exc}", file=sys.stderr)
                code = 1
            _summary(recorder, stop.reason)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


def _summary(recorder: BagRecorder, reason: str | None) -> None:
    total = sum(t.count for t in recorder.stats.topics.values())
    lines = [f"[bag record] stopped ({reason or 'shutdown'}); closed {recorder.path}: {total} messages"]
    for t in recorder.stats.topics.values():
        lines.append(f"    {t.name:<40} {t.msgtype:<32} {t.count}")
    for topic in recorder.wanted:
        if topic not in recorder.stats.topics and topic not in recorder.stats.skipped:
            lines.append(f"    {topic:<40} never published: not in the bag")
    print("\n".join(lines), file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
