"""Helpers for the recording tests and the bag benchmark (imported absolutely; setup.cfg puts test/ on the
path): synthetic rosbag2 files written with rosbags alone (no ROS), with known poses and images."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
CAMERAS = {"observation.images.wrist": "/cameras/wrist/image_raw", "observation.images.top": "/cameras/top/image_raw"}
T0_NS = 1_700_000_000_000_000_000


@dataclass
class SyntheticBag:
    """Streams of a teleop recording on a common clock; ``pose(t)`` and ``command(t)`` are radians."""

    duration_s: float = 4.0
    state_hz: float = 100.0
    command_hz: float = 30.0
    camera_hz: float = 30.0
    size: tuple[int, int] = (128, 96)  # width, height
    cameras: dict[str, str] = field(default_factory=lambda: dict(CAMERAS))
    task: str | None = "pick up the cube"
    pauses: list[tuple[float, float]] = field(default_factory=list)  # (start, end) s without commands
    latency_ns: int = 2_000_000  # reception time - header stamp
    storage: str = "mcap"
    compressed: bool = False  # cameras as sensor_msgs/CompressedImage (PNG, lossless) on <topic>/compressed

    def pose(self, t: float) -> np.ndarray:
        """Piecewise-constant poses, 1 s each: what a frame's state must be, exactly."""
        k = int(t)
        return np.array([0.1 * k, -0.2 + 0.05 * k, 0.3, -0.1 * k, 0.0, 0.2 - 0.1 * k])

    def command(self, t: float) -> np.ndarray:
        return self.pose(t) + 0.01

    def image(self, camera: int, n: int) -> np.ndarray:
        """Frame ``n`` of camera ``camera``: one colour, distinct per channel (RGB order is checked)."""
        w, h = self.size
        rgb = (np.array([0, 40, 80]) + n * 7 + camera * 50) % 256
        return np.broadcast_to(rgb.astype(np.uint8), (h, w, 3)).copy()

    def _paused(self, t: float) -> bool:
        return any(a <= t < b for a, b in self.pauses)

    def write(self, path: Path) -> Path:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        ts = get_typestore(Stores.ROS2_JAZZY)
        JointState, Header, Time = ts.types["sensor_msgs/msg/JointState"], ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"]
        Image, String = ts.types["sensor_msgs/msg/Image"], ts.types["std_msgs/msg/String"]
        CompressedImage = ts.types["sensor_msgs/msg/CompressedImage"]
        image_type = "sensor_msgs/msg/CompressedImage" if self.compressed else "sensor_msgs/msg/Image"
        camera_topics = [t + "/compressed" if self.compressed else t for t in self.cameras.values()]

        def header(ns: int):
            return Header(stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9), frame_id="")

        events: list[tuple[int, str, object]] = []
        for i in range(int(self.duration_s * self.state_hz)):
            t = i / self.state_hz
            ns = T0_NS + int(t * 1e9)
            events.append((ns, "/joint_states", JointState(header=header(ns), name=list(JOINTS),
                           position=self.pose(t), velocity=np.zeros(0), effort=np.zeros(0))))
        for i in range(int(self.duration_s * self.command_hz)):
            t = i / self.command_hz
            if self._paused(t):
                continue
            ns = T0_NS + int(t * 1e9)
            events.append((ns, "/joint_commands", JointState(header=header(ns), name=list(JOINTS),
                           position=self.command(t), velocity=np.zeros(0), effort=np.zeros(0))))
        w, h = self.size
        for c, topic in enumerate(camera_topics):
            for i in range(int(self.duration_s * self.camera_hz)):
                ns = T0_NS + int(i / self.camera_hz * 1e9) + 1000 * c
                if self.compressed:
                    import cv2

                    png = cv2.imencode(".png", self.image(c, i)[..., ::-1])[1].reshape(-1)
                    msg = CompressedImage(header=header(ns), format="rgb8; png compressed bgr8", data=png)
                else:
                    msg = Image(header=header(ns), height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3,
                                data=self.image(c, i).reshape(-1))
                events.append((ns, topic, msg))
        if self.task is not None:
            events.append((T0_NS - 1, "/so101_leader/task", String(data=self.task)))
        events.sort(key=lambda e: e[0])
        types = {"/joint_states": "sensor_msgs/msg/JointState", "/joint_commands": "sensor_msgs/msg/JointState",
                 "/so101_leader/task": "std_msgs/msg/String"}
        types.update({topic: image_type for topic in camera_topics})
        writer = Writer(path, version=9, storage_plugin=StoragePlugin[self.storage.upper()])
        writer.open()
        conns = {}
        for ns, topic, msg in events:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, types[topic], typestore=ts)
            writer.write(conns[topic], ns + self.latency_ns, ts.serialize_cdr(msg, types[topic]))
        writer.close()
        return path
