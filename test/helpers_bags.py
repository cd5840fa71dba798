"""Writing rosbag2 bags for tests and benchmarks with rosbags (imported absolutely: ``from helpers_bags import ...``).

``BagBuilder`` collects messages (sensor_msgs Image / CompressedImage / JointState, std_msgs String,
trajectory_msgs JointTrajectory) and writes them in either storage (mcap, sqlite3) and metadata version 8 or
9, as ROS 2 Jazzy writes them; ``distro="humble"`` rewrites the metadata as Humble's rosbag2 does (version 5,
no ros_distro, QoS as a YAML string). ``synthetic_bag`` makes the usual test bag: cameras + joint states on a
30 Hz grid following a known trajectory, optional recorded commands one period ahead of it.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
T0_NS = 1_000_000_000 * 1_000_000_000  # 2001-09-09: far from wall-clock time, so a node on the wrong clock shows
CAMERAS = {"observation.images.wrist": "/cameras/wrist/image_raw", "observation.images.top": "/cameras/top/image_raw"}


def _store():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


def _qos(best_effort: bool):
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    return Qos(QosHistory.KEEP_LAST, 5 if best_effort else 10,
               QosReliability.BEST_EFFORT if best_effort else QosReliability.RELIABLE,
               QosDurability.VOLATILE, QosTime(0, 0), QosTime(0, 0), QosLiveliness.AUTOMATIC, QosTime(0, 0), False)


class BagBuilder:
    def __init__(self) -> None:
        self.store = _store()
        self.messages: list[tuple[int, str, str, object]] = []  # (log time, topic, type, message)
        self.best_effort: set[str] = set()

    def _header(self, stamp_ns: int, frame_id: str = ""):
        t = self.store.types
        return t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=stamp_ns // 1_000_000_000,
                                                                               nanosec=stamp_ns % 1_000_000_000),
                                        frame_id=frame_id)

    def image(self, topic: str, t_ns: int, frame: np.ndarray, stamp_ns: int | None = None,
              encoding: str = "rgb8") -> None:
        h, w = frame.shape[:2]
        msg = self.store.types["sensor_msgs/msg/Image"](
            header=self._header(t_ns if stamp_ns is None else stamp_ns, "cam"), height=h, width=w, encoding=encoding,
            is_bigendian=0, step=w * 3, data=np.ascontiguousarray(frame, dtype=np.uint8).reshape(-1))
        self.best_effort.add(topic)
        self.messages.append((t_ns, topic, "sensor_msgs/msg/Image", msg))

    def compressed(self, topic: str, t_ns: int, frame: np.ndarray, stamp_ns: int | None = None) -> None:
        import cv2

        ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(frame[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        msg = self.store.types["sensor_msgs/msg/CompressedImage"](
            header=self._header(t_ns if stamp_ns is None else stamp_ns, "cam"), format="rgb8; jpeg compressed bgr8",
            data=np.frombuffer(jpeg.tobytes(), dtype=np.uint8))
        self.best_effort.add(topic)
        self.messages.append((t_ns, topic, "sensor_msgs/msg/CompressedImage", msg))

    def joint_state(self, topic: str, t_ns: int, positions: Sequence[float], names: Sequence[str] = JOINTS,
                    stamp_ns: int | None = None) -> None:
        msg = self.store.types["sensor_msgs/msg/JointState"](
            header=self._header(t_ns if stamp_ns is None else stamp_ns), name=list(names),
            position=np.asarray(positions, dtype=np.float64), velocity=np.zeros(0), effort=np.zeros(0))
        self.messages.append((t_ns, topic, "sensor_msgs/msg/JointState", msg))

    def string(self, topic: str, t_ns: int, text: str) -> None:
        self.messages.append((t_ns, topic, "std_msgs/msg/String", self.store.types["std_msgs/msg/String"](data=text)))

    def trajectory(self, topic: str, t_ns: int, rows: Sequence[Sequence[float]], fps: float = 30.0,
                   names: Sequence[str] = JOINTS) -> None:
        t = self.store.types
        points = []
        for i, row in enumerate(rows):
            ns = int(round(i * 1e9 / fps))
            points.append(t["trajectory_msgs/msg/JointTrajectoryPoint"](
                positions=np.asarray(row, dtype=np.float64), velocities=np.zeros(0), accelerations=np.zeros(0),
                effort=np.zeros(0), time_from_start=t["builtin_interfaces/msg/Duration"](
                    sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)))
        msg = t["trajectory_msgs/msg/JointTrajectory"](header=self._header(t_ns), joint_names=list(names), points=points)
        self.messages.append((t_ns, topic, "trajectory_msgs/msg/JointTrajectory", msg))

    def write(self, path: Path, storage: str = "mcap", version: int = 9, distro: str = "jazzy") -> Path:
        from rosbags.rosbag2 import StoragePlugin, Writer

        path = Path(path)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        conns: dict[str, object] = {}
        with Writer(path, version=version, storage_plugin=plugin) as writer:
            for t_ns, topic, msgtype, msg in sorted(self.messages, key=lambda m: m[0]):
                if topic not in conns:
                    conns[topic] = writer.add_connection(
                        topic, msgtype, typestore=self.store, offered_qos_profiles=[_qos(topic in self.best_effort)])
                writer.write(conns[topic], t_ns, self.store.serialize_cdr(msg, msgtype))
        set_distro(path, distro)
        return path


def set_distro(path: Path, distro: str) -> None:
    """Rewrite metadata.yaml as ``distro``'s rosbag2 writes it: jazzy keeps version 8/9 and says ros_distro: jazzy;
    humble is version 5 (no ros_distro, no type hashes, QoS as a YAML string)."""
    import yaml

    meta_path = Path(path) / "metadata.yaml"
    meta = yaml.safe_load(meta_path.read_text())
    info = meta["rosbag2_bagfile_information"]
    if distro == "humble":
        info["version"] = 5
        info.pop("ros_distro", None)
        for topic in info["topics_with_message_count"]:
            tm = topic["topic_metadata"]
            tm.pop("type_description_hash", None)
            if isinstance(tm.get("offered_qos_profiles"), list):  # v9 style: Humble wrote a YAML string of ints
                tm["offered_qos_profiles"] = yaml.safe_dump([_qos_v8(q) for q in tm["offered_qos_profiles"]]).strip()
    else:
        info["ros_distro"] = distro
    meta_path.write_text(yaml.safe_dump(meta, sort_keys=False))


def _qos_v8(q: dict) -> dict:
    enums = {"history": {"keep_last": 1, "keep_all": 2}, "reliability": {"reliable": 1, "best_effort": 2},
             "durability": {"transient_local": 1, "volatile": 2}, "liveliness": {"automatic": 1}}
    return {k: (enums[k].get(v, 0) if k in enums and isinstance(v, str) else v) for k, v in q.items()}


def ramp(t_s: float) -> list[float]:
    """A slow, smooth known trajectory (radians): every joint moves, the gripper opens and closes (period 4 s)."""
    return [0.2 * math.sin(0.5 * t_s), -0.3 + 0.1 * t_s / 5, 0.4 * math.cos(0.3 * t_s), 0.1 * t_s / 5, -0.2,
            0.3 * math.sin(2 * math.pi * t_s / 4)]


def frame(i: int, shape: tuple[int, int]) -> np.ndarray:
    img = np.zeros((*shape, 3), np.uint8)
    img[..., 0] = i % 256
    img[..., 1] = np.arange(shape[1], dtype=np.uint8)[None, :]
    return img


def synthetic_bag(
    path: Path,
    *,
    storage: str = "mcap",
    version: int = 9,
    distro: str = "jazzy",
    duration: float = 2.0,
    fps: float = 30.0,
    shape: tuple[int, int] = (24, 32),
    cameras: dict[str, str] | None = None,
    compressed: bool = False,
    commands: bool = True,
    task: str | None = None,
    trajectory: Callable[[float], Sequence[float]] = ramp,
    gaps: Sequence[tuple[float, float]] = (),
    extra: Callable[[BagBuilder], None] | None = None,
    t0_ns: int = T0_NS,
) -> Path:
    """Cameras + /joint_states on one grid (i * int(1e9 / fps) ns from ``t0_ns``; header stamp = log time) following
    ``trajectory(t)``; ``/joint_commands`` = ``trajectory(t + period)`` (the arm one period behind its command).
    Nothing is recorded during ``gaps`` ((start, end) seconds)."""
    b = BagBuilder()
    cameras = CAMERAS if cameras is None else cameras
    period_ns = int(1e9 / fps)  # the aggregator's and the policy's integer period: ticks land on messages
    for i in range(int(round(duration * fps)) + 1):
        t_s = i * period_ns / 1e9
        if any(a <= t_s < z for a, z in gaps):
            continue
        t = t0_ns + i * period_ns
        for topic in cameras.values():
            if compressed:
                b.compressed(topic + "/compressed", t, frame(i, shape))
            else:
                b.image(topic, t, frame(i, shape))
        b.joint_state("/joint_states", t, trajectory(t_s))
        if commands:
            b.joint_state("/joint_commands", t, trajectory(t_s + period_ns / 1e9))
    if task is not None:
        b.string("/gemma3nvla_policy/task", t0_ns, task)
    if extra is not None:
        extra(b)
    return b.write(path, storage=storage, version=version, distro=distro)
