"""Reading rosbag2 bags without ROS: one small reader shared by ``eval-bag``, ``bag play`` and bag -> dataset.

Built on ``rosbags`` (pure Python): bags from ROS 2 Humble and Jazzy, ``mcap`` and ``sqlite3`` storage,
metadata versions 1-9 (Humble writes 5, Jazzy 8 or 9), zstd file/message compression, split bags. A bag is a
rosbag2 directory (with ``metadata.yaml``) or a single ``.mcap`` / ``.db3`` file; a directory whose
``metadata.yaml`` is missing (a recording that was killed) but that holds exactly one storage file is read
through that file.

Usage::

    with Bag(path) as bag:
        print(bag.describe())                        # what ros2 bag info shows
        info = bag.require("/joint_states", ("sensor_msgs/msg/JointState",), "joint states")
        for m in bag.messages(["/joint_states"], start_ns=bag.start_ns):
            m.time_ns, m.topic, m.msgtype, m.raw     # receive (log) time in ns, raw CDR bytes
            msg = m.msg                              # deserialized on first access (rosbags dataclass)

Every failure — no such path, unreadable metadata, a truncated or corrupted storage file (also when it
only shows mid-way through the messages), a missing topic or an unexpected type — is a :class:`BagError`
whose message says what went wrong and, once the bag could be opened, lists what it does contain. Message
objects are rosbags' dataclasses: field for field what rclpy's messages have (``header.stamp.sec``,
``position`` as a numpy array, ``data`` as a uint8 array), so duck-typed helpers such as
``hardware.image_msgs.image_to_rgb`` and ``control.observation.joint_state_positions`` take them as they are.
``raw`` is the CDR exactly as recorded (encapsulation header included), which rclpy publishes as is
(``Publisher.publish(bytes)``).

Times: ``time_ns`` is the bag's log time (when the recorder received the message; what ``ros2 bag play
--clock`` publishes on /clock). :func:`stamp_ns` reads a message's ``header.stamp``.
"""
from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
JOINT_STATE_TYPES = ("sensor_msgs/msg/JointState",)
STORAGE_SUFFIXES = {".mcap": "mcap", ".db3": "sqlite3"}


class BagError(RuntimeError):
    """The bag cannot be used as asked; ``str()`` says why and, where the bag could be opened, what it holds."""


@dataclass(frozen=True)
class TopicSummary:
    name: str
    msgtype: str
    count: int
    qos: tuple[Any, ...] = ()  # rosbags.interfaces.Qos of the recorded publishers (offered_qos_profiles)


@dataclass
class BagMessage:
    topic: str
    msgtype: str
    time_ns: int  # log (receive) time
    raw: bytes
    _bag: "Bag" = field(repr=False, compare=False, default=None)  # type: ignore[assignment]
    _msg: Any = field(repr=False, compare=False, default=None)

    @property
    def msg(self) -> Any:
        """The deserialized message (rosbags dataclass), decoded once on first access; BagError if it does not
        decode (a corrupted message)."""
        if self._msg is None:
            self._msg = self._bag.deserialize(self.raw, self.msgtype, self.topic, self.time_ns)
        return self._msg


def stamp_ns(msg: Any) -> int:
    """``header.stamp`` of a message in nanoseconds."""
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def absolute_topic(name: str) -> str:
    """A topic name as a bag records it: relative names (``joint_states``) resolve in the root namespace."""
    return name if name.startswith("/") else f"/{name}"


def format_time(ns: int) -> str:
    """``2024-05-01 12:00:00.123 UTC (1714564800.123456789)``."""
    when = _dt.datetime.fromtimestamp(ns / 1e9, tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return f"{when} UTC ({ns // 1_000_000_000}.{ns % 1_000_000_000:09d})"


class Bag:
    """A rosbag2 bag opened for reading (see the module docstring). Use as a context manager or ``close()``."""

    def __init__(self, path: str | Path) -> None:
        from rosbags.rosbag2 import Reader

        self.path = Path(path).expanduser()
        self.note = ""  # how the bag was read when not plainly (e.g. without metadata.yaml)
        self.version: int | None = None
        self.storage = ""
        self._claimed: list[tuple[str, str, int]] = []  # (topic, type, count) as metadata.yaml lists them
        target = self._locate()
        try:
            self._reader = Reader(target)
            self._reader.open()
        except Exception as exc:  # noqa: BLE001 - rosbags, sqlite, zstd, OS errors: one clear message
            raise BagError(f"{self.path} cannot be read as a rosbag2 bag: {_why(exc)}{_recover_hint(exc)}"
                           f"{self._claimed_contents()}") from None
        self.ros_distro = self._reader.ros_distro or None
        self._typestore = _typestore(self.ros_distro)
        self._registered: set[str] = set()
        self.topics: dict[str, TopicSummary] = {}
        self._connections: dict[str, list[Any]] = {}
        for conn in self._reader.connections:
            qos = tuple(getattr(conn.ext, "offered_qos_profiles", ()) or ())
            prev = self.topics.get(conn.topic)
            if prev is not None and prev.msgtype != conn.msgtype:
                msgtype = f"{prev.msgtype} | {conn.msgtype}"  # several types on one topic: never usable as one
            else:
                msgtype = conn.msgtype
            self.topics[conn.topic] = TopicSummary(
                conn.topic, msgtype, (prev.count if prev else 0) + int(conn.msgcount), (prev.qos if prev else ()) + qos)
            self._connections.setdefault(conn.topic, []).append(conn)
        self.message_count = int(self._reader.message_count)
        if self.message_count:
            self.start_ns = int(self._reader.start_time)
            self.end_ns = int(self._reader.end_time) - 1  # rosbags' end is one past the last message
        else:
            self.start_ns = self.end_ns = 0

    # ------------------------------------------------------------------ opening
    def _locate(self) -> Path:
        path = self.path
        if not path.exists():
            raise BagError(f"no bag at {path}: expected a rosbag2 directory (with metadata.yaml) or a .mcap/.db3 file")
        if path.is_file():
            self.storage = STORAGE_SUFFIXES.get(path.suffix, "")
            if not self.storage:
                raise BagError(f"{path} is not a rosbag2 bag: a bag is a directory with metadata.yaml, or a .mcap or "
                               ".db3 file")
            return path
        meta = path / "metadata.yaml"
        storage_files = sorted(p for p in path.iterdir() if p.suffix in STORAGE_SUFFIXES)
        if not meta.is_file():
            if len(storage_files) == 1:
                self.storage = STORAGE_SUFFIXES[storage_files[0].suffix]
                self.note = f"no metadata.yaml: read {storage_files[0].name} directly"
                return storage_files[0]
            found = ", ".join(p.name for p in sorted(path.iterdir())[:10]) or "nothing"
            raise BagError(f"{path} is not a rosbag2 bag: it has no metadata.yaml (it holds {found})")
        try:
            import yaml

            info = (yaml.safe_load(meta.read_text()) or {}).get("rosbag2_bagfile_information") or {}
            self.version = int(info.get("version")) if info.get("version") is not None else None
            self.storage = str(info.get("storage_identifier", ""))
            for t in info.get("topics_with_message_count") or []:
                meta_topic = t.get("topic_metadata") or {}
                self._claimed.append((str(meta_topic.get("name")), str(meta_topic.get("type")),
                                      int(t.get("message_count") or 0)))
        except Exception:  # noqa: BLE001 - rosbags reports a broken metadata.yaml itself, below
            pass
        return path

    def _claimed_contents(self) -> str:
        if not self._claimed:
            return ""
        lines = [f"  {name}  {msgtype}  {count} msgs" for name, msgtype, count in sorted(self._claimed)]
        return f"\nits metadata.yaml lists {len(self._claimed)} topics:\n" + "\n".join(lines)

    # ------------------------------------------------------------------ describing
    def describe(self) -> str:
        """What the bag holds, one topic per line (like ``ros2 bag info``)."""
        head = [f"bag {self.path}"]
        props = [p for p in (self.storage, f"metadata v{self.version}" if self.version else "",
                             f"ros_distro {self.ros_distro}" if self.ros_distro else "") if p]
        if props:
            head.append(f"({', '.join(props)})")
        lines = [" ".join(head) + f": {len(self.topics)} topics, {self.message_count} messages"]
        if self.message_count:
            lines.append(f"  from {format_time(self.start_ns)} for {(self.end_ns - self.start_ns) / 1e9:.3f} s")
        if self.note:
            lines.append(f"  ({self.note})")
        width = max((len(t) for t in self.topics), default=0)
        type_width = max((len(t.msgtype) for t in self.topics.values()), default=0)
        for name in sorted(self.topics):
            t = self.topics[name]
            lines.append(f"  {name:<{width}}  {t.msgtype:<{type_width}}  {t.count} msgs")
        return "\n".join(lines)

    def error(self, problem: str) -> BagError:
        """A BagError for ``problem`` that lists what the bag contains."""
        return BagError(f"{problem}\n{self.describe()}")

    def require(self, topic: str, types: Sequence[str], what: str) -> TopicSummary:
        """The topic's summary; BagError (listing the bag) when it is absent, empty or of another type."""
        info = self.topics.get(topic)
        if info is None:
            raise self.error(f"{what}: topic {topic} is not in the bag")
        if info.msgtype not in types:
            raise self.error(f"{what}: topic {topic} has type {info.msgtype}, expected {' or '.join(types)}")
        if info.count == 0:
            raise self.error(f"{what}: topic {topic} has no messages")
        return info

    # ------------------------------------------------------------------ reading
    def messages(self, topics: Iterable[str] | None = None, start_ns: int | None = None,
                 stop_ns: int | None = None) -> Iterator[BagMessage]:
        """Messages of ``topics`` (all when None) with ``start_ns <= time_ns < stop_ns``, in log-time order
        (within a storage file; split files follow one another). A storage error mid-way is a BagError."""
        if topics is None:
            conns = [c for cs in self._connections.values() for c in cs]
        else:
            topics = list(topics)
            unknown = [t for t in topics if t not in self._connections]
            if unknown:
                raise self.error(f"topics {unknown} are not in the bag")
            conns = [c for t in topics for c in self._connections[t]]
        if not conns:
            return
        count = 0
        last = None
        iterator = self._reader.messages(conns, start_ns, stop_ns)
        while True:
            try:
                conn, time_ns, raw = next(iterator)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - truncated/corrupted storage: say where, list the bag
                where = f" after {count} messages (last at {format_time(last)})" if last is not None else ""
                raise self.error(
                    f"{self.path} is truncated or corrupted: reading failed{where}: {_why(exc)}{_recover_hint(exc)}"
                ) from None
            count += 1
            last = time_ns
            yield BagMessage(conn.topic, conn.msgtype, int(time_ns), bytes(raw), self)

    def deserialize(self, raw: bytes, msgtype: str, topic: str = "?", time_ns: int | None = None) -> Any:
        self._ensure_type(msgtype, topic)
        try:
            return self._typestore.deserialize_cdr(raw, msgtype)
        except Exception as exc:  # noqa: BLE001 - a corrupted message: struct/index/unicode errors
            when = f" at {format_time(time_ns)}" if time_ns is not None else ""
            raise self.error(f"a {msgtype} message on {topic}{when} is corrupted: {_why(exc)}") from None

    def _ensure_type(self, msgtype: str, topic: str) -> None:
        if msgtype in self._registered or msgtype in self._typestore.fielddefs:
            return
        from rosbags.interfaces import MessageDefinitionFormat
        from rosbags.typesys import get_types_from_idl, get_types_from_msg

        conn = self._connections[topic][0] if topic in self._connections else None
        msgdef = getattr(conn, "msgdef", None)
        try:
            if msgdef is not None and msgdef.format == MessageDefinitionFormat.MSG and msgdef.data:
                self._typestore.register(get_types_from_msg(msgdef.data, msgtype))
            elif msgdef is not None and msgdef.format == MessageDefinitionFormat.IDL and msgdef.data:
                self._typestore.register(get_types_from_idl(msgdef.data))
        except Exception as exc:  # noqa: BLE001
            raise self.error(f"the bag's definition of {msgtype} ({topic}) does not parse: {_why(exc)}") from None
        if msgtype not in self._typestore.fielddefs:
            raise self.error(f"{topic}: message type {msgtype} is unknown here and the bag carries no definition")
        self._registered.add(msgtype)

    def close(self) -> None:
        reader, self._reader = getattr(self, "_reader", None), None
        if reader is not None and reader.is_open:
            reader.close()

    def __enter__(self) -> "Bag":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _typestore(ros_distro: str | None):
    from rosbags.typesys import Stores, get_typestore

    stores = {"humble": Stores.ROS2_HUMBLE, "iron": Stores.ROS2_IRON, "jazzy": Stores.ROS2_JAZZY}
    return get_typestore(stores.get(str(ros_distro or "").lower(), Stores.ROS2_JAZZY))


def _why(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if type(exc).__name__ in ("ReaderError", "BagError") else f"{type(exc).__name__}: {text}"


def _recover_hint(exc: BaseException) -> str:
    text = str(exc).lower()
    if "end magic" in text or "footer" in text or "malformed" in text or "not a database" in text:
        return " (an interrupted recording? `ros2 bag reindex` can sometimes recover it)"
    return ""
